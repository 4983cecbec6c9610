"""The simulation engine joins an existing Ray cluster (``--ray-address``) instead of its own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.flower.processes import process_group_members, stop_group
from server.ports import free_port

RAY = Path(sys.executable).parent / "ray"
APTFLEET = Path(sys.executable).parent / "aptfleet"


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"Ray head on 127.0.0.1:{port} did not listen within {timeout} s")


def _worker_logs(temp_dir: Path) -> set[str]:
    return {p.name for p in temp_dir.glob("session_*/logs/worker-*.out")}


@pytest.fixture()
def ray_head() -> Iterator[tuple[str, Path]]:
    """A local head, ``ray start --head --node-ip-address 127.0.0.1 --port P``, ended by PID."""
    # a short temp dir: Ray's unix socket paths must stay under ~107 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="aptray", dir="/tmp"))
    port = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            f"--object-store-memory={128 * 1024**2}",
            "--include-dashboard=false",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the head and every process it starts share its group
    )
    try:
        _wait_port(port, 180)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        stop_group(head.pid, 20.0)
        head.wait(timeout=30)
        assert not process_group_members({head.pid}), "processes of the Ray head survived"
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(1300)  # one round of two devices; minutes on a busy 2-core machine
def test_simulate_ray_address_runs_on_the_existing_cluster(
    ray_head: tuple[str, Path], tmp_path: Path
) -> None:
    # Prepare
    address, temp_dir = ray_head
    before = _worker_logs(temp_dir)
    out = tmp_path / "out"
    cmd = [
        str(APTFLEET),
        "simulate",
        "--task=digits",
        "--model=mlp",
        "--clients=2",
        "--fraction=1",
        "--rounds=1",
        "--local-epochs=1",
        "--batch-size=64",
        f"--ray-address={address}",
        f"--out={out}",
    ]

    # Execute
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1000, check=False)

    # Assert: the run finished, and its ClientApp actors ran as workers of the head
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    (round_1,) = results["rounds_log"]
    assert round_1["participants"] == 2 and round_1["failures"] == 0
    assert _worker_logs(temp_dir) - before, "no worker of the existing cluster ran the ClientApps"


def test_backend_config_joins_the_given_cluster_only() -> None:
    # Prepare
    from server.flower.simulation import backend_config

    # Execute
    own = backend_config(2)
    joined = backend_config(2, "10.0.0.5:6379")

    # Assert: joining passes only the address (Ray refuses num_cpus or object store sizes
    # for an existing cluster); one CPU per ClientApp either way
    assert joined["init_args"] == {"address": "10.0.0.5:6379"}
    assert own["init_args"]["num_cpus"] == 2 and "address" not in own["init_args"]
    assert joined["client_resources"] == own["client_resources"] == {"num_cpus": 1, "num_gpus": 0.0}
