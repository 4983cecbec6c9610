"""The state file of a one-machine fleet: what ``up`` started (``<state_dir>/fleet.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from server.flower.certs import FleetCerts


@dataclass
class Proc:
    """One process the fleet started (its own session: pid == process group id)."""

    role: str
    pid: int
    port: int
    flwr_home: str
    log_file: str
    node_config: str = ""
    #: node id the SuperLink gave the SuperNode's registered key (0: not registered)
    node_id: int = 0


@dataclass
class FleetState:
    """What ``up`` started; saved as JSON in ``<state_dir>/fleet.json``."""

    state_dir: str
    superlink_port: int
    procs: list[Proc] = field(default_factory=list)
    #: plain text and no SuperNode authentication (local development only)
    insecure: bool = False
    #: the certificates directory (``server.flower.certs`` layout); empty when insecure
    certs_dir: str = ""

    @property
    def certs(self) -> FleetCerts | None:
        """The fleet's certificates and node keys, or None for an insecure fleet."""
        return FleetCerts(Path(self.certs_dir)) if self.certs_dir else None

    @property
    def address(self) -> str:
        """host:port of the SuperLink."""
        return f"127.0.0.1:{self.superlink_port}"

    @property
    def cli_home(self) -> Path:
        """FLWR_HOME of the ``flwr`` CLI (holds the connection config)."""
        return Path(self.state_dir) / "cli"

    def save(self) -> None:
        """Write the state file."""
        (Path(self.state_dir) / "fleet.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> FleetState | None:
        """Read the state file, if any."""
        path = state_dir / "fleet.json"
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return cls(
            d["state_dir"],
            d["superlink_port"],
            [Proc(**p) for p in d["procs"]],
            bool(d.get("insecure", False)),
            str(d.get("certs_dir", "")),
        )
