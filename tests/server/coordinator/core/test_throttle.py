"""The authentication failure throttle: a sliding window per address."""

from __future__ import annotations

import pytest

from server.coordinator.core.throttle import AuthFailureThrottle


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_blocks_after_limit_until_window_passes() -> None:
    # Prepare
    clock = _Clock()
    throttle = AuthFailureThrottle(3, 60.0, clock=clock)

    # Execute / Assert
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.record_failure("a")
        clock.now += 10
    assert throttle.retry_after("a") == 30  # the first failure leaves the window at +60
    assert throttle.retry_after("b") is None
    clock.now += 30
    assert throttle.retry_after("a") is None
    throttle.record_failure("a")
    assert throttle.retry_after("a") == 10


def test_throttle_invalid_settings_rejected() -> None:
    with pytest.raises(ValueError, match="limit=0"):
        AuthFailureThrottle(0, 60.0)
