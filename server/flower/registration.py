"""SuperNode key registration with a SuperLink (``flwr supernode register``)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from server.flower.fleet_state import FleetState
from server.flower.processes import FleetError
from server.flower.submission import CONNECTION, flwr, json_out, write_cli_config


def register_node(state: FleetState, public_key: Path) -> int:
    """Register a SuperNode's public key (OpenSSH format) with the fleet's SuperLink.

    Returns the node id it was given.

    Raises
    ------
    FleetError
        If ``flwr supernode register`` fails (e.g. the key is already registered).
    """
    node_id = register_key(state.cli_home, public_key)
    assert node_id is not None
    return node_id


def register_keys(
    address: str, public_keys: Sequence[Path], *, ca_file: Path | None = None
) -> dict[Path, int | None]:
    """Register SuperNode public keys with the SuperLink at ``address``; known keys are skipped.

    The connection uses TLS, verified with ``ca_file`` or the system's trust store.

    Returns each key with its new node id, or None when it was registered before.
    """
    with tempfile.TemporaryDirectory(prefix="aptfleet-cli-") as home:
        write_cli_config(Path(home), address, ca_file=ca_file)
        return {key: register_key(Path(home), key, exist_ok=True) for key in public_keys}


def register_key(cli_home: Path, public_key: Path, *, exist_ok: bool = False) -> int | None:
    """Run ``flwr supernode register`` with the CLI config of ``cli_home``.

    Returns the new node id, or None when the key is already registered and ``exist_ok``.

    Raises
    ------
    FleetError
        If the registration fails (or the key is already registered and not ``exist_ok``).
    """
    res = flwr(
        cli_home, ["supernode", "register", str(public_key), CONNECTION, "--format", "json"], 60
    )
    try:
        out = json_out(res.stdout)
    except (FleetError, ValueError):
        out = {}
    if out.get("success") and out.get("node-id"):
        return int(out["node-id"])
    text = (res.stdout + res.stderr).strip()
    if exist_ok and "already in use" in text:
        return None
    raise FleetError(
        f"flwr supernode register {public_key} failed (exit {res.returncode}): {text[-800:]}"
    )
