"""A ClientApp that is asked to stop replies with an error instead of training on.

Flower's SuperNode waits for a reply to every message it handed a ClientApp process; a
process killed before replying leaves the message unanswered, and the SuperNode hands it
to a new process. So the fleet's run watcher (``server.flower.run_watcher``) sends
:data:`STOP_SIGNAL` instead, and only to a process that catches it. A ``flwr-clientapp``
process catches it from the moment it imports the ClientApp (:func:`install`): during
training the handler raises :class:`TrainingStopped`, before it the next training raises
at its start; Flower turns the exception into an error reply and the SuperNode moves on.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: The signal that asks a ClientApp process to stop its current message.
STOP_SIGNAL = signal.SIGUSR1
_CLIENTAPP_PROCESS = "flwr-clientapp"


class TrainingStopped(RuntimeError):
    """The ClientApp was asked to stop (its run was stopped)."""


class _State:
    requested = False
    training = False


def _stopped() -> TrainingStopped:
    return TrainingStopped(
        f"Training stopped by signal {STOP_SIGNAL.name}: the device's run was stopped "
        "(flwr stop), so this reply is dropped."
    )


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    _State.requested = True
    if _State.training:
        raise _stopped()


def install(force: bool = False) -> bool:
    """Catch :data:`STOP_SIGNAL` from now on; returns whether the handler was installed.

    Only in a ``flwr-clientapp`` process's main thread (or with ``force``, in the main
    thread): the simulation engine's actors and other importers are left alone.
    """
    is_clientapp = Path(sys.argv[0]).name == _CLIENTAPP_PROCESS if sys.argv else False
    if not (force or is_clientapp) or threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(STOP_SIGNAL, _on_signal)
    return True


@contextmanager
def stop_on_signal() -> Iterator[None]:
    """Training that :data:`STOP_SIGNAL` interrupts (raises :class:`TrainingStopped`).

    Raises at once when the signal came before the block; without :func:`install` the
    block runs unchanged.
    """
    if _State.requested:
        raise _stopped()
    _State.training = True
    try:
        yield
    finally:
        _State.training = False
