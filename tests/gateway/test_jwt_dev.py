"""The dev token issuer and `utimesh token`: private key kept private, tokens verify against the
JWKS the edge is given, the CLI prints exactly one usable token."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from gateway.jwt_dev import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_issuer, mint
from gateway.policy import ROLES
from utimesh.cli import token as token_module


def _verify(token: str, jwks_path: Path, audience: str = DEV_AUDIENCE) -> dict[str, object]:
    keys = jwt.PyJWKSet.from_dict(json.loads(jwks_path.read_text()))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, object] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=DEV_ISSUER
    )
    return claims


def test_key_pair_is_created_private_and_reused(tmp_path: Path) -> None:
    first = ensure_dev_issuer(tmp_path / "state")
    key_file = tmp_path / "state" / "dev-issuer-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = ensure_dev_issuer(tmp_path / "state")
    assert first.kid == second.kid
    jwks = json.loads(first.jwks_path.read_text())
    assert [k["kid"] for k in jwks["keys"]] == [first.kid]
    assert "d" not in jwks["keys"][0], "the JWKS holds the public key only"


def test_a_readable_private_key_is_refused(tmp_path: Path) -> None:
    ensure_dev_issuer(tmp_path)
    (tmp_path / "dev-issuer-key.pem").chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        ensure_dev_issuer(tmp_path)


def test_minted_token_verifies_with_the_jwks(tmp_path: Path) -> None:
    token = mint("alice", ["clinician", "pharmacist"], 600, state_dir=tmp_path)
    claims = _verify(token, tmp_path / "dev-jwks.json")
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["clinician", "pharmacist"]
    exp, iat = claims["exp"], claims["iat"]
    assert isinstance(exp, int) and isinstance(iat, int) and exp - iat == 600


def test_expired_token_is_expired(tmp_path: Path) -> None:
    issuer = ensure_dev_issuer(tmp_path)
    token = issuer.mint("bob", ["auditor"], 60, issued_at=time.time() - 3600)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(token, issuer.jwks_path)


def test_token_command_prints_one_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        token_module.token,
        [
            "--role",
            "prescriber",
            "--role",
            "auditor",
            "--sub",
            "carol",
            "--state-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.count(".") == 2 and "\n" not in token
    claims = _verify(token, tmp_path / "dev-jwks.json")
    assert claims["sub"] == "carol" and claims["roles"] == ["prescriber", "auditor"]


def test_token_command_refuses_unknown_roles(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        token_module.token, ["--role", "admin", "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "admin" in result.output


def test_token_command_knows_the_edge_roles() -> None:
    assert token_module.ROLES == ROLES
