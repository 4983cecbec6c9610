"""The fleet's run watcher: which processes are ClientApps, and when they are ended."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from server.flower.processes import alive, stop_group
from server.flower.run_watcher import clientapp_pids, end_idle_clientapps


@pytest.fixture()
def fake_node() -> Iterator[tuple[int, int]]:
    """A process group like a SuperNode's: a leader and a child named ``flwr-clientapp``."""
    leader = subprocess.Popen(
        ["bash", "-c", "(exec -a flwr-clientapp sleep 120) & exec sleep 120"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not clientapp_pids([leader.pid]):
        time.sleep(0.1)
    (child,) = clientapp_pids([leader.pid])
    yield leader.pid, child
    stop_group(leader.pid, 5.0)
    leader.wait(timeout=10)


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
    signalled: set[int] = set()

    # Execute
    while_active = end_idle_clientapps([leader], lambda: [42], signalled)
    when_idle = end_idle_clientapps([leader], lambda: [], signalled)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and clientapp_pids([leader]):
        time.sleep(0.1)

    # Assert: left alone while run 42 was active, ended (once) when none was
    assert while_active == [] and when_idle == [child]
    assert signalled == {child} and clientapp_pids([leader]) == []  # gone (or a zombie)
    assert alive(leader)
