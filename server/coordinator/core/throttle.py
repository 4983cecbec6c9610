"""Authentication failure throttle: too many failures from one address answer 429.

The counts live in memory, per process: each ``aptfleet serve`` worker keeps its own and a
restart forgets them. Behind a reverse proxy every client shares the proxy's address
unless uvicorn runs with ``--proxy-headers`` and ``--forwarded-allow-ips``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

#: Addresses tracked at most; beyond it the stalest are forgotten (memory stays bounded
#: however many addresses an attacker uses).
MAX_TRACKED_ADDRESSES = 10_000


class AuthFailureThrottle:
    """Sliding-window count of authentication failures per client address.

    Parameters
    ----------
    limit : int
        Failures allowed per address within ``window_s``; the next attempt waits.
    window_s : float
        Length of the window in seconds.
    clock : Callable[[], float] (default: ``time.monotonic``)
        Time source, replaceable in tests.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or not window_s > 0:
            raise ValueError(
                f"Throttle needs limit >= 1 and window_s > 0; got limit={limit}, "
                f"window_s={window_s}."
            )
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds ``address`` must wait before its next attempt; None if it may try."""
        with self._lock:
            failures = self._recent(address)
            if failures is None or len(failures) < self.limit:
                return None
            wait = failures[-self.limit] + self.window_s - self._clock()
            return max(1, math.ceil(wait))

    def record_failure(self, address: str) -> None:
        """Count one failed attempt of ``address``."""
        with self._lock:
            failures = self._recent(address)
            if failures is None:
                if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                    self._forget_stalest()
                failures = self._failures[address] = deque(maxlen=self.limit)
            failures.append(self._clock())

    def _recent(self, address: str) -> deque[float] | None:
        """The failures of ``address`` still inside the window (caller holds the lock)."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def _forget_stalest(self) -> None:
        stalest = sorted(self._failures, key=lambda a: self._failures[a][-1])
        for address in stalest[: max(1, len(stalest) // 10)]:
            del self._failures[address]
