"""A ClientApp that is asked to stop mid-training replies with an error instead of finishing.

Flower's SuperNode waits for a reply to every message it handed a ClientApp process; a
process killed mid-training leaves no reply, and the SuperNode hands the message to a new
process. So the fleet's run watcher (``server.flower.run_watcher``) sends
:data:`STOP_SIGNAL` instead: the handler installed here raises :class:`TrainingStopped` in
the training loop, Flower turns it into an error reply, and the SuperNode moves on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signal that asks a ClientApp process to stop its current message.
STOP_SIGNAL = signal.SIGUSR1


class TrainingStopped(RuntimeError):
    """The ClientApp was asked to stop (its run was stopped)."""


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise TrainingStopped(
        f"Training stopped by signal {signal.Signals(signum).name}: the device's run was "
        "stopped (flwr stop), so this reply is dropped."
    )


@contextmanager
def stop_on_signal() -> Iterator[None]:
    """Within the block, :data:`STOP_SIGNAL` raises :class:`TrainingStopped`.

    Only in a process's main thread (a ``flwr-clientapp`` process); elsewhere (the
    simulation engine's actors) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(STOP_SIGNAL, _raise)
    try:
        yield
    finally:
        signal.signal(STOP_SIGNAL, previous)
