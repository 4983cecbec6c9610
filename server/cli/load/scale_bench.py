"""The simulation at fleet scale: round time and peak memory against devices per round.

Each configuration (a fleet of ``clients`` simulated devices, ``devices`` of them sampled
per round) runs ``aptfleet``'s simulation engine (:func:`run_federated`) in a fresh child
process, so Ray starts clean and the memory is the configuration's own. The parent samples
the resident memory of the child's whole process tree (the driver, Ray's GCS, raylet and
ClientApp actors) from /proc; the child stamps the end of every round.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Seconds between two memory samples of the process tree.
_SAMPLE_S = 0.25


@dataclass(frozen=True)
class ScaleConfig:
    """One measured configuration.

    Parameters
    ----------
    clients : int
        Simulated devices of the fleet (SuperNodes).
    devices : int
        Devices sampled per round (``fraction = devices / clients``).
    rounds : int
        Rounds of the run.
    task, arch : str
        Benchmark task and model.
    ray_dir : str | None (default: None)
        Join the running Ray cluster whose ``--temp-dir`` this is (``ray start --head
        --temp-dir DIR``) instead of starting one per run; its processes (GCS, raylet and
        the actors under it) are then measured with the run's.
    """

    clients: int
    devices: int
    rounds: int
    task: str = "digits"
    arch: str = "cnn"
    ray_dir: str | None = None

    @property
    def fraction(self) -> float:
        """FedAvg's sampling fraction."""
        return self.devices / self.clients


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc/<pid>/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ray_address(ray_dir: str) -> str:
    """The GCS address of the cluster started with ``--temp-dir ray_dir``."""
    return (Path(ray_dir) / "ray_current_cluster").read_text().strip()


def ray_pids(ray_dir: str) -> list[int]:
    """Processes whose command line names ``ray_dir`` (the cluster's GCS, raylet, agents)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if ray_dir in (proc / "cmdline").read_bytes().decode(errors="replace"):
                out.append(int(proc.name))
        except OSError:
            continue
    return out


def tree_pids(*roots: int) -> list[int]:
    """``roots`` and all their descendants."""
    out: list[int] = []
    todo = list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo += _children(p)
    return out


class TreeSampler:
    """Peak resident memory of a process tree, and the CPU seconds of each of its processes."""

    def __init__(self, pid: int, extra_roots: list[int] | None = None) -> None:
        self.pid = pid
        self.extra_roots = extra_roots or []
        self.peak_bytes = 0
        self.driver_peak_bytes = 0
        self.cpu_s: dict[int, float] = {}

    def sample(self) -> None:
        """One sample of every process of the tree (shared pages counted per process)."""
        pids = tree_pids(self.pid, *self.extra_roots)
        self.peak_bytes = max(self.peak_bytes, sum(_rss(p) for p in pids))
        self.driver_peak_bytes = max(self.driver_peak_bytes, _rss(self.pid))
        for p in pids:
            self.cpu_s[p] = max(self.cpu_s.get(p, 0.0), _cpu_s(p))


def _child(config: dict[str, Any], out: str) -> None:
    """The measured run (in the child process): stamps each round's end into ``out``."""
    from apt_core import federated as fed
    from apt_core.config import resolve_policy
    from server.flower.records import RoundReport
    from server.flower.settings import ServerSettings
    from server.flower.simulation import run_federated

    c = ScaleConfig(**config)
    stamps: list[dict[str, Any]] = []
    start = time.perf_counter()

    def record(r: RoundReport) -> None:
        stamps.append(
            {
                "round": r.round,
                "end_s": time.perf_counter() - start,
                "participants": r.participants,
                "failures": r.failures,
                "rejections": r.rejections,
                "accuracy": r.accuracy,
            }
        )

    settings = ServerSettings(
        run=fed.RunSettings(task=c.task, arch=c.arch),
        rounds=c.rounds,
        fraction_train=c.fraction,
        min_nodes=c.clients,
    )
    policy = resolve_policy("default")
    run_federated(
        settings,
        clients=c.clients,
        provider=lambda: (1, policy, {}),
        recorder=record,
        ray_address=_ray_address(c.ray_dir) if c.ray_dir else None,
    )
    Path(out).write_text(json.dumps({"rounds": stamps, "total_s": time.perf_counter() - start}))


def measure(config: ScaleConfig, work_dir: Path) -> dict[str, Any]:
    """Run ``config`` in a child process; its round times and the tree's peak memory.

    Raises
    ------
    RuntimeError
        If the run fails (the child's exit code is not 0).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / f"scale-{config.clients}-{config.devices}.json"
    out.unlink(missing_ok=True)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child, args=(asdict(config), str(out)))
    proc.start()
    assert proc.pid is not None
    sampler = TreeSampler(proc.pid, ray_pids(config.ray_dir) if config.ray_dir else None)
    while proc.is_alive():
        sampler.sample()
        time.sleep(_SAMPLE_S)
    proc.join()
    if proc.exitcode != 0 or not out.exists():
        raise RuntimeError(f"The run {config} ended with exit code {proc.exitcode}.")
    return summarize(config, json.loads(out.read_text()), sampler)


def summarize(config: ScaleConfig, run: dict[str, Any], sampler: TreeSampler) -> dict[str, Any]:
    """One configuration's row: per-round seconds, steady mean (rounds 2..), memory."""
    ends = [r["end_s"] for r in run["rounds"]]
    round_s = [b - a for a, b in zip([0.0, *ends[:-1]], ends, strict=True)]
    steady = round_s[1:] or round_s
    return {
        **asdict(config),
        "fraction": config.fraction,
        "round_s": round_s,
        "first_round_s": round_s[0] if round_s else None,
        "steady_round_s": sum(steady) / len(steady) if steady else None,
        "per_device_s": sum(steady) / len(steady) / config.devices if steady else None,
        "participants": [r["participants"] for r in run["rounds"]],
        "failures": sum(r["failures"] + r["rejections"] for r in run["rounds"]),
        "accuracy": [r["accuracy"] for r in run["rounds"]],
        "peak_tree_rss_bytes": sampler.peak_bytes,
        "peak_driver_rss_bytes": sampler.driver_peak_bytes,
        "cpu_driver_s": sampler.cpu_s.get(sampler.pid, 0.0),
        "cpu_tree_s": sum(sampler.cpu_s.values()),
        "total_s": run["total_s"],
    }


def machine() -> dict[str, Any]:
    """What the figures depend on: the CPUs and the load average (1, 5, 15 min) now."""
    return {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}
