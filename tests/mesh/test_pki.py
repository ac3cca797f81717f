"""The development PKI: per-service certificates with SPIFFE identities, reused while valid,
renewed when expiring or no longer signed by the CA, keys readable by their owner only."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509

from utimesh.kit import tls
from utimesh.kit.tls import ensure_pki, identity, service_of

SERVICES = ("triage", "consult")


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_leaf_carries_the_spiffe_identity_and_loopback_names(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, ["triage"])
    leaf = cert(pki.cert_path("triage"))
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://utimesh.local/ns/utimesh/sa/triage"
    ]
    assert set(sans.get_values_for_type(x509.DNSName)) == {"triage.utimesh.svc", "localhost"}
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    leaf.verify_directly_issued_by(cert(pki.ca_path))
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= tls.LEAF_VALIDITY + dt.timedelta(minutes=10)
    assert pki.get("triage").cert_pem == pki.cert_path("triage").read_bytes()


def test_keys_are_owner_only_and_the_directory_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    pki = ensure_pki(directory, SERVICES)
    assert mode(directory) == 0o700
    for key in (directory / "ca.key", *(pki.key_path(s) for s in SERVICES)):
        assert mode(key) == 0o600, key.name
    assert mode(pki.cert_path("triage")) == 0o644


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, SERVICES)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = ensure_pki(tmp_path, SERVICES)
    assert second == first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_a_new_service_gets_a_certificate_from_the_same_ca(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, ["triage"])
    second = ensure_pki(tmp_path, ["doctor"])
    assert second.ca_pem == first.ca_pem
    assert second.get("doctor").cert_pem != first.get("triage").cert_pem
    with pytest.raises(KeyError, match="triage"):
        second.get("triage")  # only what was asked for is loaded


def test_an_expiring_leaf_is_renewed_under_the_same_ca(tmp_path: Path) -> None:
    week_ago = dt.datetime.now(dt.UTC) - tls.LEAF_VALIDITY
    old = ensure_pki(tmp_path, ["triage"], now=week_ago)
    new = ensure_pki(tmp_path, ["triage"])
    assert new.ca_pem == old.ca_pem
    assert new.get("triage").cert_pem != old.get("triage").cert_pem
    assert cert(new.cert_path("triage")).not_valid_after_utc > dt.datetime.now(dt.UTC)


def test_an_expiring_ca_is_renewed_and_its_leaves_reissued(tmp_path: Path) -> None:
    long_ago = dt.datetime.now(dt.UTC) - tls.CA_VALIDITY + dt.timedelta(days=2)
    old = ensure_pki(tmp_path, ["triage"], now=long_ago)
    new = ensure_pki(tmp_path, ["triage"])
    assert new.ca_pem != old.ca_pem
    cert(new.cert_path("triage")).verify_directly_issued_by(cert(new.ca_path))


def test_a_leaf_signed_by_another_ca_is_reissued(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ensure_pki(ours, ["triage"])
    ensure_pki(theirs, ["triage"])
    for suffix in ("crt", "key"):
        shutil.copy(theirs / f"triage.{suffix}", ours / f"triage.{suffix}")
    pki = ensure_pki(ours, ["triage"])
    cert(pki.cert_path("triage")).verify_directly_issued_by(cert(pki.ca_path))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: (d / "triage.key").unlink(), id="missing-key"),
        pytest.param(lambda d: (d / "triage.crt").write_bytes(b"garbage"), id="corrupt-cert"),
        pytest.param(
            lambda d: shutil.copy(d / "consult.key", d / "triage.key"), id="key-of-another-cert"
        ),
    ],
)
def test_damaged_files_are_regenerated(tmp_path: Path, damage: Callable[[Path], object]) -> None:
    ensure_pki(tmp_path, SERVICES)
    damage(tmp_path)
    pki = ensure_pki(tmp_path, ["triage"])
    leaf = cert(pki.cert_path("triage"))
    leaf.verify_directly_issued_by(cert(pki.ca_path))
    assert mode(pki.key_path("triage")) == 0o600


def test_processes_starting_together_share_one_ca(tmp_path: Path) -> None:
    names = ["triage", "doctor", "pharmacist", "consult", "evidence", "report"]
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: ensure_pki(tmp_path, [name]), names))
    assert len({r.ca_pem for r in results}) == 1
    for name in names:
        cert(tmp_path / f"{name}.crt").verify_directly_issued_by(cert(tmp_path / "ca.crt"))


@pytest.mark.parametrize("name", ["", "Triage", "ca", "a/b", "-x", "x" * 64])
def test_names_that_cannot_be_identities_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="identity"):
        ensure_pki(tmp_path, [name])


@pytest.mark.parametrize(
    ("spiffe_id", "expected"),
    [
        ("spiffe://utimesh.local/ns/utimesh/sa/consult", "consult"),
        ("spiffe://other.local/ns/utimesh/sa/consult", None),
        ("spiffe://utimesh.local/ns/default/sa/consult", None),
        ("spiffe://utimesh.local/ns/utimesh/sa/consult/extra", None),
        ("https://utimesh.local/ns/utimesh/sa/consult", None),
    ],
)
def test_service_of_reads_only_this_mesh(spiffe_id: str, expected: str | None) -> None:
    assert service_of(spiffe_id) == expected


def test_identity_round_trips() -> None:
    assert service_of(identity("pharmacist")) == "pharmacist"
