"""Test harness for the edge: free ports, a real Envoy in front of a consult port, dev tokens,
proto-JSON intakes and throwaway certificates (made at run time, never committed)."""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.json_format import MessageToDict

from gateway import EdgeSettings, dev_settings, prepare
from gateway.envoy import EnvoyProcess, running
from gateway.jwt_dev import DevIssuer, ensure_dev_issuer
from tests.factories import patient
from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake

ALLOWED_ORIGIN = "https://app.utimesh.test"


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free right now (all held open until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def intake_json(**overrides: Any) -> dict[str, Any]:
    """A treatable intake in the REST API's JSON (proto field names)."""
    proto = intake_to_proto(parse_intake(patient(**overrides)))
    return MessageToDict(proto, preserving_proto_field_name=True)


@dataclass
class Edge:
    """A running edge Envoy and what a test needs to talk to it."""

    settings: EdgeSettings
    envoy: EnvoyProcess
    issuer: DevIssuer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.listen_port}"

    @property
    def access_log(self) -> Path:
        return Path(self.settings.access_log_path)

    def bearer(self, *roles: str, sub: str = "test-user", **kwargs: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.issuer.mint(sub, roles, **kwargs)}"}


@contextlib.asynccontextmanager
async def running_edge(state_dir: Path, consult_port: int, **overrides: Any) -> AsyncIterator[Edge]:
    """Envoy with the generated config in front of `consult_port`; always stopped on exit."""
    listen_port, admin_port = free_ports(2)
    settings = dev_settings(
        state_dir,
        listen_port=listen_port,
        admin_port=admin_port,
        consult_port=consult_port,
        access_log_path=str(state_dir / "access.log"),
        cors_allowed_origins=[ALLOWED_ORIGIN],
        **overrides,
    )
    prepared = prepare(settings)
    async with running(
        prepared.config,
        admin_host=settings.admin_host,
        admin_port=admin_port,
        base_id=admin_port,
        log_path=state_dir / "envoy.log",
    ) as envoy:
        yield Edge(settings, envoy, ensure_dev_issuer(state_dir))


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- throwaway PKI -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class ThrowawayCa:
    """A throwaway CA that issues leaf certificates with SPIFFE URI SANs (PEM files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC)
        self._key = _key()
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "utimesh test CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, spiffe_id: str, dns: Sequence[str] = ()) -> Pki:
        key = _key()
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(d) for d in dns]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pki = Pki(self.ca, self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pki.key.write_bytes(_pem_key(key))
        pki.key.chmod(0o600)
        return pki


def make_pki(directory: Path, spiffe_id: str, dns: Sequence[str] = ()) -> Pki:
    """A CA and one leaf certificate with a SPIFFE URI SAN, as PEM files in `directory`."""
    return ThrowawayCa(directory).issue("edge", spiffe_id, dns)
