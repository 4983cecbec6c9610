"""The fleet's run watcher: which processes are ClientApps, and when they are asked to stop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from client.interrupt import STOP_SIGNAL
from server.flower.processes import alive, stop_group
from server.flower.run_watcher import Ledger, catches, clientapp_pids, end_idle_clientapps


def _node(child: str) -> Iterator[tuple[int, int]]:
    """A process group like a SuperNode's: a leader and ``child`` named ``flwr-clientapp``."""
    leader = subprocess.Popen(["bash", "-c", f"({child}) & exec sleep 120"], start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not clientapp_pids([leader.pid]):
        time.sleep(0.1)
    (pid,) = clientapp_pids([leader.pid])
    yield leader.pid, pid
    stop_group(leader.pid, 5.0)
    leader.wait(timeout=10)


@pytest.fixture()
def fake_node() -> Iterator[tuple[int, int]]:
    """A ClientApp stand-in that does not catch the stop signal (one still starting)."""
    yield from _node("exec -a flwr-clientapp sleep 120")


@pytest.fixture()
def catching_node() -> Iterator[tuple[int, int]]:
    """A ClientApp stand-in that catches the stop signal and exits on it."""
    yield from _node(
        "exec -a flwr-clientapp bash -c \"trap 'exit 0' USR1; while sleep 0.1; do :; done\""
    )


def _gone(leader: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and clientapp_pids([leader]):
        time.sleep(0.1)
    return not clientapp_pids([leader])  # gone, or a zombie of the leader


@pytest.mark.timeout(60)
def test_clientapp_pids_finds_only_clientapps_of_the_group(fake_node: tuple[int, int]) -> None:
    # Prepare
    leader, child = fake_node

    # Execute / Assert: the leader (sleep) is not a ClientApp; another group holds none
    assert clientapp_pids([leader]) == [child]
    assert clientapp_pids([leader + 10**7]) == []


@pytest.mark.timeout(60)
def test_catches_reads_the_signal_mask(
    fake_node: tuple[int, int], catching_node: tuple[int, int]
) -> None:
    # Execute / Assert
    assert catches(catching_node[1], STOP_SIGNAL)
    assert not catches(fake_node[1], STOP_SIGNAL)


@pytest.mark.timeout(60)
def test_end_idle_clientapps_waits_for_no_active_run(catching_node: tuple[int, int]) -> None:
    # Prepare
    leader, child = catching_node
    ledger = Ledger()

    # Execute
    while_active = end_idle_clientapps([leader], lambda: [42], ledger)
    when_idle = end_idle_clientapps([leader], lambda: [], ledger)

    # Assert: left alone while run 42 was active, asked to stop when none was
    assert while_active == [] and when_idle == [child]
    assert ledger.stopped == {child} and _gone(leader)
    assert alive(leader)


@pytest.mark.timeout(60)
def test_end_idle_clientapps_waits_for_the_handler_then_terminates(
    fake_node: tuple[int, int],
) -> None:
    # Prepare: a process that never catches the stop signal
    leader, child = fake_node
    ledger = Ledger()

    # Execute
    early = end_idle_clientapps([leader], lambda: [], ledger, escalate_s=60.0)
    late = end_idle_clientapps([leader], lambda: [], ledger, escalate_s=0.0)

    # Assert: not signalled while it may still be starting, SIGTERM once the grace is over
    assert early == [] and late == [child]
    assert ledger.stopped == set() and ledger.terminated == {child} and _gone(leader)
