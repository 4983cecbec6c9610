"""The fleet's run watcher: which processes are ClientApps, and when they are asked to stop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from server.flower.processes import alive, stop_group
from server.flower.run_watcher import clientapp_pids, end_idle_clientapps


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
    """A ClientApp stand-in that the stop signal ends (its default action)."""
    yield from _node("exec -a flwr-clientapp sleep 120")


@pytest.fixture()
def deaf_node() -> Iterator[tuple[int, int]]:
    """A ClientApp stand-in that ignores the stop signal."""
    yield from _node("trap '' USR1; exec -a flwr-clientapp sleep 120")


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
def test_end_idle_clientapps_waits_for_no_active_run(fake_node: tuple[int, int]) -> None:
    # Prepare
    leader, child = fake_node
    signalled: dict[int, float] = {}

    # Execute
    while_active = end_idle_clientapps([leader], lambda: [42], signalled)
    when_idle = end_idle_clientapps([leader], lambda: [], signalled)

    # Assert: left alone while run 42 was active, asked to stop when none was
    assert while_active == [] and when_idle == [child]
    assert list(signalled) == [child] and _gone(leader)
    assert alive(leader)


@pytest.mark.timeout(60)
def test_end_idle_clientapps_escalates_to_sigterm(deaf_node: tuple[int, int]) -> None:
    # Prepare
    leader, child = deaf_node
    signalled: dict[int, float] = {}

    # Execute: the stop signal is ignored; later polls escalate once, then leave it
    first = end_idle_clientapps([leader], lambda: [], signalled, escalate_s=60.0)
    too_early = end_idle_clientapps([leader], lambda: [], signalled, escalate_s=60.0)
    time.sleep(0.5)
    still_there = clientapp_pids([leader])
    escalated = end_idle_clientapps([leader], lambda: [], signalled, escalate_s=0.0)

    # Assert
    assert first == [child] and too_early == [] and still_there == [child]
    assert escalated == [child] and _gone(leader)
