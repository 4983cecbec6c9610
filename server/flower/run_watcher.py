"""Ends a local fleet's ClientApps once no run is active any more (after ``flwr stop``).

Flower 1.42's SuperNode hands a message to a fresh ``flwr-clientapp`` process and waits for
its reply; it never looks at the run again until the reply is ready, so a run stopped with
``flwr stop`` keeps its ClientApps training to the end of their local round (a reply the
SuperLink then drops). The watcher is one more process of the fleet (``fleet up`` starts it,
``fleet down`` stops it): every few seconds it asks the SuperLink's Control API for the runs
(``ListRuns``, the call behind ``flwr list``) and, when none is pending, starting or
running, sends every ``flwr-clientapp`` process of the fleet's SuperNodes that catches it
``client.interrupt.STOP_SIGNAL``: the ClientApp's training raises, Flower sends the
SuperNode an error reply (which the SuperLink drops) and the SuperNode goes back to
waiting for messages. A process still alive 20 s after it was first seen gets SIGTERM.
(A ClientApp merely killed leaves its message unanswered, and the SuperNode starts another
process for it.) While some run is active nothing is ended: a ClientApp process does not
say which run it serves.

Known limit (seen in the slow test): a SuperNode whose ClientApp was stopped may still wait
for that message's reply and not take the next run; restart the fleet before it.

Run it as ``python -m server.flower.run_watcher --state-dir DIR`` with ``FLWR_HOME`` set to
the fleet's CLI home (``<state>/cli``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from client.interrupt import STOP_SIGNAL
from server.flower.fleet_state import FleetState
from server.flower.processes import process_group_members

log = logging.getLogger(__name__)

#: Seconds between two looks at the SuperLink's runs.
POLL_S = 2.0
#: Seconds a ClientApp has to stop on :data:`STOP_SIGNAL` before it gets SIGTERM.
ESCALATE_S = 20.0
_CLIENTAPP = "flwr-clientapp"


def clientapp_pids(pgids: Iterable[int]) -> list[int]:
    """``flwr-clientapp`` processes in the process groups ``pgids`` (the SuperNodes')."""
    out = []
    for pid in sorted(process_group_members(set(pgids))):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(Path(arg.decode(errors="replace")).name == _CLIENTAPP for arg in cmdline[:2]):
            out.append(pid)
    return out


def active_runs() -> list[int]:
    """Ids of the runs the SuperLink of ``$FLWR_HOME``'s default connection has not finished."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest  # type: ignore[attr-defined]

    with contextlib.redirect_stdout(io.StringIO()):  # "Using SuperLink ..." on every poll
        client = init_http_client_from_connection(read_superlink_connection(None))
    try:
        res = client.ListRuns(ListRunsRequest())
    finally:
        client.close()
    runs = [run_from_proto(proto) for proto in res.run_dict.values()]
    return [r.run_id for r in runs if r.status.status != "finished"]


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@dataclass
class Ledger:
    """What the watcher did to which ClientApp process: first seen idle, signals sent."""

    seen: dict[int, float] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    terminated: set[int] = field(default_factory=set)


def end_idle_clientapps(
    pgids: Iterable[int],
    runs: Callable[[], list[int]],
    ledger: Ledger | None = None,
    escalate_s: float = ESCALATE_S,
) -> list[int]:
    """Stop the fleet's ClientApps when ``runs()`` lists no active run; returns the PIDs signalled.

    A ClientApp that catches :data:`client.interrupt.STOP_SIGNAL` gets it (it then replies
    with an error, which frees its SuperNode); one not yet catching it is left for a later
    poll (it is still starting: killed now, its message would be handed to a new process).
    A process still alive ``escalate_s`` after it was first seen gets SIGTERM. No process
    gets the same signal twice.
    """
    book = ledger if ledger is not None else Ledger()
    pids = clientapp_pids(pgids)
    if not pids or runs():
        return []
    now = time.monotonic()
    sent = []
    for pid in pids:
        first = book.seen.setdefault(pid, now)
        if pid not in book.stopped and catches(pid, STOP_SIGNAL):
            sig, done = STOP_SIGNAL, book.stopped
        elif pid not in book.terminated and now - first >= escalate_s:
            sig, done = signal.SIGTERM, book.terminated
        else:
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        done.add(pid)
        sent.append(pid)
    if sent:
        log.info("No active run: asked ClientApp processes %s to stop.", sent)
    return sent


def watch(state_dir: Path, poll_s: float = POLL_S) -> None:
    """Watch the fleet of ``state_dir`` until its state file is gone (``fleet down``)."""
    ledger = Ledger()
    while (state := FleetState.load(state_dir)) is not None:
        nodes = [p.pid for p in state.procs if p.role.startswith("supernode")]
        try:
            end_idle_clientapps(nodes, active_runs, ledger)
        except Exception as exc:  # noqa: BLE001 - a SuperLink still starting; next poll
            log.debug("Run watcher: %s: %s", type(exc).__name__, exc)
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    """``python -m server.flower.run_watcher --state-dir DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--poll", type=float, default=POLL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one request per poll
    watch(args.state_dir.resolve(), args.poll)


if __name__ == "__main__":
    main()
