"""A ClientApp asked to stop mid-training raises (Flower then replies with an error)."""

from __future__ import annotations

import os
import threading

import pytest

from client.interrupt import STOP_SIGNAL, TrainingStopped, stop_on_signal


@pytest.mark.timeout(30)
def test_stop_on_signal_raises_in_the_block_and_restores_the_handler() -> None:
    # Prepare
    import signal

    before = signal.getsignal(STOP_SIGNAL)

    # Execute / Assert
    with pytest.raises(TrainingStopped, match="run was stopped"), stop_on_signal():
        os.kill(os.getpid(), STOP_SIGNAL)
        for _ in range(10**8):  # the "training loop" the signal interrupts
            pass
    assert signal.getsignal(STOP_SIGNAL) is before


@pytest.mark.timeout(30)
def test_stop_on_signal_outside_the_main_thread_changes_nothing() -> None:
    # Prepare
    import signal

    before = signal.getsignal(STOP_SIGNAL)
    seen: list[object] = []

    def body() -> None:
        with stop_on_signal():
            seen.append(signal.getsignal(STOP_SIGNAL))

    # Execute
    t = threading.Thread(target=body)
    t.start()
    t.join()

    # Assert
    assert seen == [before]
