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

from server.flower import fleet, processes, submission
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


def registered_nodes(state: fleet.FleetState) -> list[dict]:
    """SuperNodes the SuperLink knows (``flwr supernode list --format json``)."""
    res = submission.flwr(state.cli_home, ["supernode", "list", fleet.CONNECTION, "--format",
                                       "json"], 60)
    try:
        return list(submission.json_out(res.stdout).get("nodes") or [])
    except (fleet.FleetError, ValueError):
        return []


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
        wait_for(lambda: not processes.process_group_members({proc.pid}), 30,
                 f"SuperNode {device_class} (pgid {proc.pid}) to die")
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
def topology(tmp_path: Path, device_classes: Sequence[str], *,
             database_url: str | None = None,
             env: dict[str, str] | None = None) -> Iterator[Topology]:
    """Start a SuperLink, one SuperNode per device class, and a coordinator that submits
    its runs to that SuperLink; stop all of it on exit.

    Waits until the SuperLink lists every SuperNode, so round 1 samples all of them.
    ``env`` is added to the coordinator's environment (its run jobs inherit it).
    """
    fleet_dir = tmp_path / "fleet"
    data_dir = tmp_path / "coordinator"
    data_dir.mkdir(parents=True, exist_ok=True)
    classes = list(device_classes)
    state = fleet.up(len(classes), fleet_dir, device_classes=classes)
    coordinator = Coordinator(data_dir, database_url)
    topo = Topology(fleet_dir, state, coordinator, classes)
    try:
        topo.note_pids()
        wait_for(lambda: len(registered_nodes(state)) >= len(classes), 90,
                 f"{len(classes)} SuperNodes to register with the SuperLink", every=1.0)
        coordinator.env["APTFLEET_SUPERLINK"] = f"127.0.0.1:{state.superlink_port}"
        coordinator.env.update(env or {})
        coordinator.start()
        topo.note_pids()
        yield topo
    finally:
        topo.note_pids()
        coordinator.stop()
        kill_run_jobs(data_dir)
        fleet.down(fleet_dir)
