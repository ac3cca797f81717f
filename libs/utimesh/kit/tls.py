"""Development PKI for mutual TLS between utimesh services: a local CA and one short-lived
certificate per service identity, made at run time, plus the gRPC credentials built from them.

Decision: locally, gRPC's own TLS plays the part Istio plays on Kubernetes
(`grpc.ssl_server_credentials(..., require_client_auth=True)` on servers,
`grpc.ssl_channel_credentials` with a client certificate on channels) rather than an Envoy
sidecar per service: fewer processes and no extra hop on a 2-core machine. The identities are
the ones Istio issues (SPIFFE URI SANs `spiffe://<trust domain>/ns/<namespace>/sa/<service>`),
so the allow-lists of `mesh/policy.toml` carry over to AuthorizationPolicies unchanged.

Layout of the PKI directory (never committed; normally `<state>/pki`):

    ca.crt  ca.key             the development CA (key mode 0600)
    <service>.crt <service>.key one leaf per identity (key mode 0600)

`ensure_pki` is idempotent and safe to run from several processes at once (an exclusive file
lock): it reuses files that are still valid and regenerates what is missing, expiring soon,
unreadable, or signed by another CA. It does blocking file I/O: call it before serving or in a
thread (`asyncio.to_thread`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "utimesh.local"
NAMESPACE = "utimesh"
LEAF_VALIDITY = dt.timedelta(days=7)
CA_VALIDITY = dt.timedelta(days=30)
# Renew a leaf with less than this left; the CA is renewed while it can still outlive a new leaf.
RENEW_BEFORE = dt.timedelta(days=1)
_CLOCK_SKEW = dt.timedelta(minutes=5)

CA_NAME = "ca"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")  # a Kubernetes ServiceAccount-style name
_SPIFFE = re.compile(r"^spiffe://(?P<domain>[^/]+)/ns/(?P<ns>[^/]+)/sa/(?P<sa>[^/]+)$")


def identity(service: str) -> str:
    """The SPIFFE ID of `service`, as Istio would issue it: spiffe://utimesh.local/ns/utimesh/sa/X."""
    _check_name(service)
    return f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service}"


def service_of(spiffe_id: str) -> str | None:
    """The service name inside a SPIFFE ID of this mesh, or None for any other ID."""
    match = _SPIFFE.match(spiffe_id)
    if match is None or match["domain"] != TRUST_DOMAIN or match["ns"] != NAMESPACE:
        return None
    name = match["sa"]
    return name if _NAME.match(name) else None


def dns_name(service: str) -> str:
    """The in-mesh DNS SAN of `service` (its Kubernetes Service name); clients that know whom
    they call verify it (`ssl_target_name_override`), so a peer cannot stand in for another."""
    _check_name(service)
    return f"{service}.{NAMESPACE}.svc"


@dataclass(frozen=True)
class Identity:
    """One service's key and certificate, PEM-encoded."""

    service: str
    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True)
class Pki:
    """The CA certificate and the identities `ensure_pki` was asked for, loaded in memory so that
    building credentials does no I/O."""

    directory: Path
    ca_pem: bytes
    identities: Mapping[str, Identity]

    def get(self, service: str) -> Identity:
        """The identity of `service`; it must have been among the services given to ensure_pki."""
        try:
            return self.identities[service]
        except KeyError:
            raise KeyError(
                f"no certificate for {service!r} loaded from {self.directory}: "
                f"pass it to ensure_pki"
            ) from None

    def cert_path(self, service: str) -> Path:
        """Where the certificate of `service` lives (for processes that read files, e.g. Envoy)."""
        return self.directory / f"{service}.crt"

    def key_path(self, service: str) -> Path:
        return self.directory / f"{service}.key"

    @property
    def ca_path(self) -> Path:
        return self.directory / f"{CA_NAME}.crt"


def ensure_pki(
    directory: Path,
    services: Iterable[str],
    *,
    now: dt.datetime | None = None,
    leaf_validity: dt.timedelta = LEAF_VALIDITY,
) -> Pki:
    """Make sure `directory` holds a valid CA and a valid certificate for each of `services`;
    return them loaded. Blocking (file I/O, key generation): not on the event loop."""
    names = list(dict.fromkeys(services))
    for name in names:
        _check_name(name)
    moment = now or dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    with _locked(directory / ".lock"):
        ca_key, ca_cert = _ensure_ca(directory, moment)
        identities = {
            name: _ensure_leaf(directory, name, ca_key, ca_cert, moment, leaf_validity)
            for name in names
        }
    return Pki(
        directory=directory,
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        identities=identities,
    )


def server_credentials(pki: Pki, service: str) -> grpc.ServerCredentials:
    """Server side of mutual TLS: present `service`'s certificate, require and verify a client
    certificate issued by the mesh CA (who the client is, is the authz interceptor's job)."""
    own = pki.get(service)
    return grpc.ssl_server_credentials(
        [(own.key_pem, own.cert_pem)], root_certificates=pki.ca_pem, require_client_auth=True
    )


def channel_credentials(pki: Pki, service: str) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: trust only the mesh CA and present `service`'s certificate."""
    own = pki.get(service)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem, private_key=own.key_pem, certificate_chain=own.cert_pem
    )


# --- internals ------------------------------------------------------------------------------


def _check_name(service: str) -> None:
    if not _NAME.match(service) or service == CA_NAME:
        raise ValueError(f"not a valid service identity name: {service!r}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Services started together share one directory: one of them makes the CA, the others wait.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ensure_ca(
    directory: Path, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    loaded = _load_pair(directory, CA_NAME)
    if loaded is not None:
        key, cert = loaded
        if _is_ca(cert) and cert.not_valid_after_utc - now > LEAF_VALIDITY + RENEW_BEFORE:
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "utimesh dev mesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"utimesh dev CA {TRUST_DOMAIN}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(directory, CA_NAME, key, cert)
    return key, cert


def _ensure_leaf(
    directory: Path,
    service: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    validity: dt.timedelta,
) -> Identity:
    loaded = _load_pair(directory, service)
    if loaded is not None:
        key, cert = loaded
        if _leaf_is_usable(cert, service, ca_cert, now):
            return _identity(service, key, cert)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "utimesh dev mesh"),
                    x509.NameAttribute(NameOID.COMMON_NAME, service),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(identity(service)),
                    x509.DNSName(dns_name(service)),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(directory, service, key, cert)
    return _identity(service, key, cert)


def _leaf_is_usable(
    cert: x509.Certificate, service: str, ca_cert: x509.Certificate, now: dt.datetime
) -> bool:
    if cert.not_valid_after_utc - now < RENEW_BEFORE or cert.not_valid_before_utc > now:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return sans.get_values_for_type(x509.UniformResourceIdentifier) == [identity(service)]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _load_pair(
    directory: Path, name: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """The key and certificate stored under `name`, or None when missing, unreadable or not a
    matching EC pair (then they are regenerated)."""
    try:
        key = serialization.load_pem_private_key((directory / f"{name}.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((directory / f"{name}.crt").read_bytes())
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return key, cert


def _write_pair(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    # Key first, then certificate, each replaced atomically. Under the lock no other process
    # reads a half-written pair; after a crash between the two the pair does not match and is
    # regenerated by the next ensure_pki.
    _write_atomic(
        directory / f"{name}.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write_atomic(directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # Created with its final mode: a key is never readable by others, not even for a moment.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(tmp, mode)  # the umask must not loosen or tighten it
    os.replace(tmp, path)


def _identity(service: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Identity:
    return Identity(
        service=service,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
    )
