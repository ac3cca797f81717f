"""AES-GCM key ring and blind index for patient identifiers."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from utimesh.db.crypto import CryptoError, Keyring, keyring_from_env


def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_round_trip_and_no_clear_text() -> None:
    ring = Keyring.parse(f"k1:{b64key()}")
    sealed = ring.seal("MRN-123456")
    assert sealed.key_id == "k1" and b"MRN-123456" not in sealed.blob
    assert ring.open(sealed.blob) == "MRN-123456"
    assert ring.seal("MRN-123456").blob != sealed.blob  # fresh nonce
    assert "MRN" not in repr(ring)


def test_rotation_keeps_old_values_readable_and_index_stable() -> None:
    old = b64key()
    before = Keyring.parse(f"k1:{old}")
    after = Keyring.parse(f"k2:{b64key()},k1:{old}")
    sealed = before.seal("MRN-1")
    assert after.open(sealed.blob) == "MRN-1"
    assert after.seal("x").key_id == "k2"
    resealed = after.reseal(sealed.blob)
    assert resealed.key_id == "k2" and after.open(resealed.blob) == "MRN-1"
    assert before.blind_index("MRN-1") == after.blind_index("MRN-1")
    with pytest.raises(CryptoError):
        before.open(resealed.blob)  # k2 unknown to the old ring


def test_wrong_key_or_altered_value_does_not_open() -> None:
    sealed = Keyring.parse(f"k1:{b64key()}").seal("MRN-1")
    with pytest.raises(CryptoError):
        Keyring.parse(f"k1:{b64key()}").open(sealed.blob)
    ring = Keyring.parse(f"k1:{b64key()}")
    blob = bytearray(ring.seal("MRN-1").blob)
    blob[-1] ^= 1
    with pytest.raises(CryptoError):
        ring.open(bytes(blob))
    with pytest.raises(CryptoError):
        ring.open(ring.seal("MRN-1", purpose="other").blob)


def test_blind_index_stable_and_keyed() -> None:
    spec = f"k1:{b64key()}"
    a, b = Keyring.parse(spec), Keyring.parse(spec)
    assert a.blind_index("MRN-1") == b.blind_index("MRN-1") != a.blind_index("MRN-2")
    assert Keyring.parse(f"k1:{b64key()}").blind_index("MRN-1") != a.blind_index("MRN-1")


def test_bad_configuration_refused() -> None:
    for spec in ("", "nokey", "k1:notbase64!", f"k1:{base64.b64encode(b'short').decode()}"):
        with pytest.raises(CryptoError):
            Keyring.parse(spec)


def test_dev_key_file_generated_once_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "phi.key"
    ring = keyring_from_env({"UTIMESH_PHI_KEY_FILE": str(path)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = keyring_from_env({"UTIMESH_PHI_KEY_FILE": str(path)})
    assert again.open(ring.seal("MRN-1").blob) == "MRN-1"
    assert again.blind_index("MRN-1") == ring.blind_index("MRN-1")


def test_timeline_cli_through_a_fake_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from click.testing import CliRunner

    from utimesh.cli import timeline as mod

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if "missing" in request.url.path:
            return httpx.Response(404, json={"error": "not found"})
        return httpx.Response(
            200,
            json={
                "name": "patients/p1",
                "episodes": [
                    {
                        "onset_date": "2026-03-01",
                        "regimen": {"drug": "nitrofurantoin"},
                        "decision": "DECISION_RECOMMEND_TREATMENT",
                        "outcome": "EPISODE_OUTCOME_ONGOING",
                        "consultation": "consultations/c1",
                    }
                ],
                "allergies": [
                    {
                        "field": "history.allergies",
                        "value": "sulfa",
                        "recorded_on": "2026-03-01",
                        "source_consultation": "consultations/c1",
                    }
                ],
            },
        )

    def client(url: str | None, state_dir: object, role: str) -> httpx.Client:
        return httpx.Client(base_url="http://edge", transport=httpx.MockTransport(handler))

    monkeypatch.setattr(mod, "edge_client", client)
    out = CliRunner().invoke(mod.timeline, ["p1"])
    assert out.exit_code == 0, out.output
    assert seen == ["/v1/patients/p1/timeline"]
    assert "nitrofurantoin" in out.output and "sulfa" in out.output
    assert CliRunner().invoke(mod.timeline, ["patients/missing"]).exit_code == 1
