"""The deployment topology as plain processes on loopback, for end-to-end tests.

A real ``flower-superlink`` and N ``flower-supernode`` processes (``server.flower.fleet``), and a
real coordinator (``aptfleet serve``) whose run jobs submit the app to that SuperLink
(``APTFLEET_SUPERLINK``) and store every round in the coordinator's database.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from server.flower import fleet, processes
from tests.utils.service import Coordinator, kill_run_jobs, run_job_pids, wait_for


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z"


def local_superlink_pids(marker: str) -> list[int]:
    """``flower-superlink`` processes whose FLWR_HOME contains ``marker`` (ours)."""
    return processes.superlink_pids(marker, exact=False)


def online_nodes(state: fleet.FleetState) -> list[dict]:
    """SuperNodes connected to the SuperLink (``flwr supernode list``, status ``online``).

    A registered key whose SuperNode has not connected yet does not count.
    """
    return [n for n in fleet.supernodes(state) if n.get("status") == "online"]


@dataclass
class Topology:
    """A running SuperLink + SuperNodes + coordinator."""

    fleet_dir: Path
    state: fleet.FleetState
    coordinator: Coordinator
    device_classes: list[str]
    #: every PID seen while the topology ran (fleet groups, coordinator, run jobs)
    seen_pids: set[int] = field(default_factory=set)

    def supernode(self, device_class: str) -> fleet.Proc:
        """The SuperNode process of the (first) device of ``device_class``."""
        return self.state.procs[1 + self.device_classes.index(device_class)]

    def kill_supernode(self, device_class: str) -> int:
        """SIGKILL the whole process group of that SuperNode (node, superexec, ClientApp)."""
        proc = self.supernode(device_class)
        self.note_pids()
        os.killpg(proc.pid, signal.SIGKILL)
        wait_for(
            lambda: not processes.process_group_members({proc.pid}),
            30,
            f"SuperNode {device_class} (pgid {proc.pid}) to die",
        )
        return proc.pid

    def note_pids(self) -> set[int]:
        """Remember every process of the topology that is alive now."""
        pids = {p.pid for p in self.state.procs}
        pids |= processes.process_group_members(pids)
        if self.coordinator.proc is not None:
            pids.add(self.coordinator.proc.pid)
            pids |= processes.process_group_members({self.coordinator.proc.pid})
        jobs = set(run_job_pids(self.coordinator.data_dir))
        pids |= jobs | processes.process_group_members(jobs)
        self.seen_pids |= pids
        return pids


@contextmanager
def topology(
    tmp_path: Path,
    device_classes: Sequence[str],
    *,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    insecure: bool = False,
) -> Iterator[Topology]:
    """Start a SuperLink, one SuperNode per device class and a coordinator; stop all of it on exit.

    The coordinator submits its runs to that SuperLink.

    The fleet uses TLS and SuperNode authentication (the coordinator verifies the SuperLink
    with the fleet's CA, ``APTFLEET_SUPERLINK_CA_FILE``) unless ``insecure``. Waits until
    every SuperNode is online, so round 1 samples all of them. ``env`` is added to the
    coordinator's environment (its run jobs inherit it).
    """
    fleet_dir = tmp_path / "fleet"
    data_dir = tmp_path / "coordinator"
    data_dir.mkdir(parents=True, exist_ok=True)
    classes = list(device_classes)
    state = fleet.up(len(classes), fleet_dir, device_classes=classes, insecure=insecure)
    coordinator = Coordinator(data_dir, database_url)
    topo = Topology(fleet_dir, state, coordinator, classes)
    try:
        topo.note_pids()
        wait_for(
            lambda: len(online_nodes(state)) >= len(classes),
            90,
            f"{len(classes)} SuperNodes to connect to the SuperLink",
            every=1.0,
        )
        coordinator.env["APTFLEET_SUPERLINK"] = state.address
        if state.certs is None:
            coordinator.env["APTFLEET_SUPERLINK_INSECURE"] = "true"
        else:
            coordinator.env["APTFLEET_SUPERLINK_CA_FILE"] = str(state.certs.ca_cert)
        coordinator.env.update(env or {})
        coordinator.start()
        topo.note_pids()
        yield topo
    finally:
        topo.note_pids()
        coordinator.stop()
        kill_run_jobs(data_dir)
        fleet.down(fleet_dir)
