"""Certificates and SuperNode keys of a fleet, made with ``cryptography``.

A CA, the SuperLink's TLS certificate and one EC key pair per SuperNode.

Layout of a certificates directory (what ``aptfleet fleet certs`` writes)::

    ca.crt  ca.key                 the fleet's own CA (self-signed)
    server.pem  server.key         the SuperLink's certificate (signed by the CA) and key
    nodes/node-<i>.key             SuperNode i's private key (OpenSSH format, EC P-384):
                                   ``flower-supernode --auth-supernode-private-key``
    nodes/node-<i>.pub             its public key (OpenSSH format):
                                   ``flwr supernode register``

Private keys are written 0600. Flower reads the SuperNode keys with
``load_ssh_private_key`` / ``load_ssh_public_key`` and accepts NIST curves only
(``flwr.supercore.primitives.asymmetric.uses_nist_ec_curve``). Existing files are kept,
so a second call only adds what is missing (more node keys); the server certificate is
remade when it lacks a requested host name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

#: Host names every SuperLink certificate names: loopback, and the compose service.
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "superlink")
CA_DAYS = 3650
SERVER_DAYS = 825
_TLS_CURVE = ec.SECP256R1()
_NODE_CURVE = ec.SECP384R1()


class CertificateError(ValueError):
    """A certificates directory cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's key pair files."""

    private: Path
    public: Path


@dataclass(frozen=True)
class FleetCerts:
    """Paths of a certificates directory (see the module docstring for its layout)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate.

        It is the SuperNodes' ``--root-certificates``, the CLI's ``root-certificates`` and the
        SuperLink's ``--ssl-ca-certfile``.
        """
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (needed only to sign more certificates)."""
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The SuperLink's ``--ssl-certfile``."""
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        """The SuperLink's ``--ssl-keyfile``."""
        return self.root / "server.key"

    def node(self, i: int) -> NodeKey:
        """Key pair files of SuperNode ``i``."""
        return NodeKey(self.root / "nodes" / f"node-{i}.key", self.root / "nodes" / f"node-{i}.pub")

    def server_args(self) -> list[str]:
        """``flower-superlink`` TLS flags for these files."""
        return [
            "--ssl-ca-certfile",
            str(self.ca_cert),
            "--ssl-certfile",
            str(self.server_cert),
            "--ssl-keyfile",
            str(self.server_key),
        ]


def ensure_certs(out: Path, nodes: int, hosts: Iterable[str] = DEFAULT_HOSTS) -> FleetCerts:
    """Create whatever of a certificates directory is missing; return its paths.

    Parameters
    ----------
    out : Path
        The directory (created 0700 if absent).
    nodes : int
        Node key pairs 0..nodes-1 exist afterwards (existing ones are kept).
    hosts : Iterable[str] (default: 127.0.0.1, localhost, superlink)
        Names and IP addresses the SuperLink's certificate must be valid for; loopback is
        always added.

    Raises
    ------
    CertificateError
        If ``nodes`` is negative, or the CA certificate exists without its key.
    """
    if nodes < 0:
        raise CertificateError(f"nodes={nodes} must be >= 0.")
    certs = FleetCerts(out.resolve())
    (certs.root / "nodes").mkdir(parents=True, exist_ok=True)
    os.chmod(certs.root, 0o700)
    wanted = _hosts(hosts)
    if not certs.ca_cert.exists():
        _write_ca(certs)
    elif not certs.ca_key.exists():
        raise CertificateError(
            f"{certs.ca_cert} exists but {certs.ca_key} does not; move the "
            "directory away or restore the CA key."
        )
    if not certs.server_cert.exists() or not set(wanted) <= set(server_hosts(certs)):
        _write_server_cert(certs, wanted)
    for i in range(nodes):
        if not certs.node(i).private.exists():
            write_node_key(certs.node(i))
    return certs


def server_hosts(certs: FleetCerts) -> list[str]:
    """Host names and addresses in the SuperLink certificate's subjectAltName."""
    cert = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(a) for a in san.get_values_for_type(x509.IPAddress)] + list(
        san.get_values_for_type(x509.DNSName)
    )


def write_node_key(key: NodeKey) -> None:
    """Write a new EC P-384 key pair in OpenSSH format (private key 0600)."""
    private = ec.generate_private_key(_NODE_CURVE)
    _write_private(
        key.private,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    key.public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )


def _hosts(hosts: Iterable[str]) -> list[str]:
    out: list[str] = []
    for h in ["127.0.0.1", "localhost", *hosts]:
        h = h.strip()
        if h and h not in out:
            out.append(h)
    return out


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file created 0600 (never readable by others, not even briefly)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aptfleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _write_ca(certs: FleetCerts) -> None:
    key = ec.generate_private_key(_TLS_CURVE)
    name = _name("aptfleet fleet CA")
    public = key.public_key()
    cert = (
        _validity(x509.CertificateBuilder(), CA_DAYS)
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(certs.ca_key, _pem_key(key))
    certs.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("Created the fleet CA in %s", certs.ca_cert)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _write_server_cert(certs: FleetCerts, hosts: Sequence[str]) -> None:
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{certs.ca_key} is not an EC private key.")
    ca_cert = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(_TLS_CURVE)
    cert = (
        _validity(x509.CertificateBuilder(), SERVER_DAYS)
        .subject_name(_name("aptfleet superlink"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(certs.server_key, _pem_key(key))
    certs.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("Created the SuperLink certificate for %s in %s", ", ".join(hosts), certs.server_cert)
