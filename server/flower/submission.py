"""Runs on a SuperLink through the ``flwr`` CLI: submit the app and wait for its outcome.

``flwr run`` returns once the run is submitted and its exit code does not reflect the
run's outcome, so a submitted run is followed with ``flwr list --run-id ID --format json``
until it finishes. The CLI reads its connection from ``<cli_home>/config.toml``
(connection ``aptfleet``).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.flower.processes import REPO_ROOT, FleetError, executable, flwr_env

CONNECTION = "aptfleet"


class ServerSettingsLike(Protocol):
    """What :func:`submit_to_superlink` needs of ``server_app.ServerSettings``."""

    def to_run_config(self) -> dict[str, Any]:
        """run_config entries of the settings."""
        ...


@dataclass(frozen=True)
class RunOutcome:
    """A submitted run: its id, final status (``finished:completed`` on success), details."""

    run_id: int
    status: str
    details: str = ""

    @property
    def ok(self) -> bool:
        """True when the run finished and completed."""
        return self.status == "finished:completed"


def write_cli_config(
    cli_home: Path, address: str, *, insecure: bool = False, ca_file: Path | None = None
) -> None:
    """Write the ``flwr`` CLI config: connection ``aptfleet`` to ``address`` (host:port).

    With TLS (``insecure=False``) the SuperLink's certificate is verified against
    ``ca_file`` (``root-certificates``), or the system's trust store when it is None.

    Raises
    ------
    FleetError
        If both ``insecure`` and ``ca_file`` are given, or ``ca_file`` does not exist.
    """
    lines = [f"address = {json.dumps(address)}", f"insecure = {str(insecure).lower()}"]
    if ca_file is not None:
        if insecure:
            raise FleetError(
                f"A CA file ({ca_file}) was given for an insecure connection to "
                f"{address}; drop one of them."
            )
        if not ca_file.is_file():
            raise FleetError(f"The SuperLink CA file {ca_file} does not exist.")
        lines.append(f"root-certificates = {json.dumps(str(ca_file.resolve()))}")
    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        + "\n".join(lines)
        + "\n"
    )


def flwr(cli_home: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``flwr *args`` with the CLI config of ``cli_home``; output captured, no check."""
    return subprocess.run(
        [executable("flwr"), *args],
        env=flwr_env(cli_home),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def json_out(text: str) -> dict[str, Any]:
    """The JSON object ``flwr --format json`` printed (after any log lines)."""
    start = text.find("{")
    if start < 0:
        raise FleetError(f"flwr printed no JSON: {text.strip()[:500]!r}")
    return json.loads(text[start:])


def run_status(cli_home: Path, run_id: int) -> tuple[str, str]:
    """(status, details) of a run from ``flwr list --run-id ID --format json``."""
    res = flwr(cli_home, ["list", CONNECTION, "--run-id", str(run_id), "--format", "json"], 60)
    runs = json_out(res.stdout).get("runs") or []
    if not runs:
        raise FleetError(f"flwr list knows no run {run_id}: {res.stdout.strip()[:500]}")
    return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))


def submit_to_superlink(
    address: str,
    settings: ServerSettingsLike,
    *,
    db_url: str = "",
    coordinator_run_id: int = 0,
    app_dir: Path = REPO_ROOT,
    timeout: float = 24 * 3600.0,
    insecure: bool = False,
    ca_file: Path | None = None,
) -> RunOutcome:
    """Run the app on an existing SuperLink (``host:port``) and wait for it to finish.

    The connection uses TLS, verified against ``ca_file`` (or the system's trust store when
    it is None); ``insecure=True`` sends everything in plain text and is for local
    development only.

    The run_config carries ``settings.to_run_config()`` plus ``db-url`` and
    ``coordinator-run-id`` (only when set), so every key must be declared in the app's
    ``[tool.flwr.app.config]``.

    Raises
    ------
    FleetError
        If the run cannot be submitted, or it finishes in any status but completed.
    """
    overrides = dict(settings.to_run_config())
    if db_url:
        overrides["db-url"] = db_url
    if coordinator_run_id:
        overrides["coordinator-run-id"] = int(coordinator_run_id)
    with tempfile.TemporaryDirectory(prefix="aptfleet-cli-") as home:
        write_cli_config(Path(home), address, insecure=insecure, ca_file=ca_file)
        outcome = submit(Path(home), overrides, app_dir, timeout)
    if not outcome.ok:
        raise FleetError(
            f"Run {outcome.run_id} on {address} ended {outcome.status}: {outcome.details}"
        )
    return outcome


def submit(
    cli_home: Path, run_config: Mapping[str, Any], app_dir: Path, timeout: float
) -> RunOutcome:
    """Submit the app in ``app_dir`` with ``run_config`` overrides and wait for the run to end.

    The wait lasts up to ``timeout`` s; a run not finished by then is stopped.
    """
    args = ["run", str(app_dir), CONNECTION, "--format", "json"]
    for k, v in run_config.items():
        args += ["-c", f"{k}={json.dumps(v)}"]
    res = flwr(cli_home, args, 120)
    try:
        out = json_out(res.stdout)
    except (FleetError, json.JSONDecodeError):
        raise FleetError(
            f"flwr run failed (exit {res.returncode}): {(res.stdout + res.stderr).strip()[-1500:]}"
        ) from None
    if not out.get("success") or out.get("run-id") is None:
        raise FleetError(f"flwr run did not start a run: {out}")
    run_id = int(out["run-id"])
    deadline = time.monotonic() + timeout
    st, details = run_status(cli_home, run_id)
    while not st.startswith("finished") and time.monotonic() < deadline:
        time.sleep(3.0)
        st, details = run_status(cli_home, run_id)
    if not st.startswith("finished"):
        flwr(cli_home, ["stop", str(run_id), CONNECTION], 60)
        raise FleetError(
            f"Run {run_id} did not finish within {timeout:.0f} s (status {st}); it was stopped."
        )
    return RunOutcome(run_id, st, details)
