"""A development token issuer: an RS256 key pair in the state dir, its JWKS, and `mint`.

For local stacks and tests only. Production tokens come from the identity provider, whose JWKS
URL the edge is configured with (JwtSettings.jwks_url). The private key is created with mode
0600 in the state dir, outside the repository, and is never committed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEV_ISSUER = "https://dev-issuer.utimesh.local"
DEV_AUDIENCE = "utimesh-edge"
PRIVATE_KEY_FILE = "dev-issuer-key.pem"
JWKS_FILE = "dev-jwks.json"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The RFC 7517 JWK of an RSA public key, with its RFC 7638 thumbprint as `kid`."""
    numbers = public_key.public_numbers()
    members = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "alg": "RS256", "use": "sig", "kid": kid}


@dataclass(frozen=True)
class DevIssuer:
    """A loaded dev key pair. Build it with `ensure_dev_issuer(state_dir)`."""

    private_key: rsa.RSAPrivateKey
    jwks_path: Path
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE

    @property
    def kid(self) -> str:
        return public_jwk(self.private_key.public_key())["kid"]

    def mint(
        self,
        sub: str,
        roles: Sequence[str],
        ttl_s: int = 3600,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        roles_claim: str = "roles",
        issued_at: float | None = None,
    ) -> str:
        """A signed RS256 JWT for `sub` with `roles`, valid `ttl_s` seconds from `issued_at`."""
        now = int(time.time() if issued_at is None else issued_at)
        claims: dict[str, object] = {
            "iss": issuer or self.issuer,
            "aud": audience or self.audience,
            "sub": sub,
            roles_claim: list(roles),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


def _write_private_key_once(path: Path) -> None:
    """Create the key file atomically with mode 0600; a concurrent creator's key wins."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        with contextlib.suppress(FileExistsError):  # another process got there first: keep theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_dev_issuer(
    state_dir: Path, *, issuer: str = DEV_ISSUER, audience: str = DEV_AUDIENCE
) -> DevIssuer:
    """Load the dev key pair from `state_dir`, creating it (and the JWKS file) if absent."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = state_dir / PRIVATE_KEY_FILE
    if not key_path.exists():
        _write_private_key_once(key_path)
    if key_path.stat().st_mode & 0o077:
        raise PermissionError(f"{key_path} must not be readable by others (chmod 600)")
    private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError(f"{key_path} is not an RSA private key")
    jwks_path = state_dir / JWKS_FILE
    jwks = json.dumps({"keys": [public_jwk(private_key.public_key())]}, indent=2) + "\n"
    if not jwks_path.exists() or jwks_path.read_text() != jwks:
        tmp = jwks_path.with_name(f".{jwks_path.name}.{os.getpid()}")
        tmp.write_text(jwks)
        tmp.replace(jwks_path)
    return DevIssuer(private_key, jwks_path, issuer, audience)


def mint(
    sub: str,
    roles: Sequence[str],
    ttl_s: int = 3600,
    audience: str = DEV_AUDIENCE,
    issuer: str = DEV_ISSUER,
    *,
    state_dir: Path | None = None,
) -> str:
    """Mint a dev token with the key pair in `state_dir` (default: the edge's state dir)."""
    from gateway.settings import default_state_dir

    dev = ensure_dev_issuer(state_dir or default_state_dir(), issuer=issuer, audience=audience)
    return dev.mint(sub, roles, ttl_s)
