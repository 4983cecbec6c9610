"""A ClientApp asked to stop raises in its training (Flower then replies with an error)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from client.interrupt import STOP_SIGNAL, TrainingStopped, _State, install, stop_on_signal


@pytest.fixture()
def handler() -> Iterator[None]:
    """The stop handler installed in this (main) thread; the previous one restored after."""
    before = signal.getsignal(STOP_SIGNAL)
    assert install(force=True)
    yield
    signal.signal(STOP_SIGNAL, before)
    _State.requested = _State.training = False


@pytest.mark.timeout(30)
def test_stop_on_signal_raises_during_training(handler: None) -> None:
    # Execute / Assert
    with pytest.raises(TrainingStopped, match="run was stopped"), stop_on_signal():
        os.kill(os.getpid(), STOP_SIGNAL)
        for _ in range(10**8):  # the training loop the signal interrupts
            pass
    assert not _State.training


@pytest.mark.timeout(30)
def test_stop_on_signal_before_training_raises_at_its_start(handler: None) -> None:
    # Prepare: the signal arrives while the ClientApp is still loading
    os.kill(os.getpid(), STOP_SIGNAL)

    # Execute / Assert
    with pytest.raises(TrainingStopped), stop_on_signal():
        pytest.fail("training started after a stop request")


@pytest.mark.timeout(30)
def test_install_only_in_a_clientapp_process_main_thread() -> None:
    # Prepare
    before = signal.getsignal(STOP_SIGNAL)
    results: list[bool] = []

    # Execute: pytest is no flwr-clientapp process; a worker thread never installs
    results.append(install())
    t = threading.Thread(target=lambda: results.append(install(force=True)))
    t.start()
    t.join()

    # Assert
    assert results == [False, False]
    assert signal.getsignal(STOP_SIGNAL) is before
