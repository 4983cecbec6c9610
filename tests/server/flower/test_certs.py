"""Fleet certificates and SuperNode keys: validity, names, formats Flower loads, modes."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve
from typer.testing import CliRunner

from server.flower.certs import CertificateError, ensure_certs, server_hosts
from server.flower.submission import write_cli_config

pytestmark = pytest.mark.timeout(60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _san(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        [str(a) for a in san.get_values_for_type(x509.IPAddress)],
        list(san.get_values_for_type(x509.DNSName)),
    )


def test_ensure_certs_server_cert_signed_by_ca_with_sans(tmp_path: Path) -> None:
    # Execute
    certs = ensure_certs(tmp_path / "certs", 0, ["superlink", "fl.example.org", "10.0.0.7"])

    # Assert
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ips, dns = _san(server)
    assert ips == ["127.0.0.1", "10.0.0.7"]
    assert dns == ["localhost", "superlink", "fl.example.org"]
    now = dt.datetime.now(dt.UTC)
    for cert in (ca, server):
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert server.not_valid_after_utc - now > dt.timedelta(days=365)


def test_ensure_certs_private_keys_0600_and_formats_flower_loads(tmp_path: Path) -> None:
    # Execute
    certs = ensure_certs(tmp_path / "certs", 2)

    # Assert: TLS keys are PEM, node keys OpenSSH EC on a NIST curve, private files 0600
    assert _mode(certs.root) == 0o700
    for key in (certs.ca_key, certs.server_key, certs.node(0).private, certs.node(1).private):
        assert _mode(key) == 0o600, key
    assert isinstance(
        load_pem_private_key(certs.server_key.read_bytes(), None), ec.EllipticCurvePrivateKey
    )
    for i in (0, 1):
        private = load_ssh_private_key(certs.node(i).private.read_bytes(), None)
        public = load_ssh_public_key(certs.node(i).public.read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert uses_nist_ec_curve(public)
        assert private.public_key() == public
    assert certs.node(0).public.read_bytes() != certs.node(1).public.read_bytes()


def test_ensure_certs_keeps_existing_and_adds_nodes_and_hosts(tmp_path: Path) -> None:
    # Prepare
    first = ensure_certs(tmp_path / "certs", 1)
    ca, server, node0 = (
        first.ca_cert.read_bytes(),
        first.server_cert.read_bytes(),
        first.node(0).private.read_bytes(),
    )

    # Execute
    same = ensure_certs(tmp_path / "certs", 2)
    unchanged_server = same.server_cert.read_bytes()
    wider = ensure_certs(tmp_path / "certs", 2, ["superlink", "fl.example.org"])

    # Assert
    assert same.ca_cert.read_bytes() == ca and unchanged_server == server
    assert same.node(0).private.read_bytes() == node0 and same.node(1).private.exists()
    assert not same.node(2).private.exists()
    assert wider.ca_cert.read_bytes() == ca and wider.server_cert.read_bytes() != server
    assert "fl.example.org" in server_hosts(wider)


def test_ensure_certs_ca_without_key_refused(tmp_path: Path) -> None:
    # Prepare
    certs = ensure_certs(tmp_path / "certs", 0)
    certs.ca_key.unlink()

    # Execute / Assert
    with pytest.raises(CertificateError, match="ca.key"):
        ensure_certs(tmp_path / "certs", 0)


def test_server_cert_verifies_over_tls_with_ca_only(tmp_path: Path) -> None:
    # Prepare: a TLS server on loopback with the SuperLink's cert; clients trust our CA
    # (accepted) or another CA (refused)
    certs = ensure_certs(tmp_path / "certs", 0)
    other = ensure_certs(tmp_path / "other", 0)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.server_cert, certs.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def handshake(ca: Path, name: str) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=name),
        ):
            pass

    # Execute / Assert
    try:
        handshake(certs.ca_cert, "127.0.0.1")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(other.ca_cert, "127.0.0.1")
    finally:
        thread.join(10)
        listener.close()


def test_write_cli_config_tls_with_root_certificates(tmp_path: Path) -> None:
    # Prepare
    import tomllib

    certs = ensure_certs(tmp_path / "certs", 0)

    # Execute
    write_cli_config(tmp_path / "cli", "127.0.0.1:9", ca_file=certs.ca_cert)
    config = tomllib.loads((tmp_path / "cli" / "config.toml").read_text())

    # Assert
    conn = config["superlink"]["aptfleet"]
    assert conn == {
        "address": "127.0.0.1:9",
        "insecure": False,
        "root-certificates": str(certs.ca_cert),
    }


def test_fleet_certs_cli_writes_directory(tmp_path: Path) -> None:
    # Prepare
    from server.cli.flower import fl_cli

    # Execute
    res = CliRunner().invoke(
        fl_cli,
        [
            "fleet",
            "certs",
            "--out",
            str(tmp_path / "c"),
            "--nodes",
            "3",
            "--host",
            "superlink",
            "--host",
            "fl.example.org",
        ],
    )

    # Assert
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "c" / "nodes").iterdir()) == [
        f"node-{i}.{ext}" for i in range(3) for ext in ("key", "pub")
    ]
    assert "fl.example.org" in server_hosts(ensure_certs(tmp_path / "c", 0, ["fl.example.org"]))
