"""Encryption at rest of patient identifiers: AES-256-GCM with a key ring, and a blind index.

Keys come from configuration: `UTIMESH_PHI_KEYS="kid1:base64key,kid2:base64key"` (32-byte keys;
the FIRST is current and encrypts, every listed key decrypts). Rotate by prepending a new key
and keeping the old ones listed until every row was re-sealed (`Keyring.reseal`). A KMS would
supply the same string. With nothing configured (local development) a key ring is generated
once and kept in `UTIMESH_PHI_KEY_FILE` (default `.state/phi.key`, mode 0600).

A sealed value is self-describing: `b"\\x01" + len(kid) + kid + nonce(12) + ciphertext+tag`;
the key id and the purpose are bound as associated data, so a value sealed for one purpose or
relabelled with another key id does not open.

Lookups by identifier use a blind index: HMAC-SHA256 under a separate key, either
`UTIMESH_PHI_INDEX_KEY` (base64) or derived with HKDF from the LAST listed key (the oldest, which
rotation by prepending keeps), so the index stays stable across rotations. Identifiers are
never logged; errors here never include them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = 1
_NONCE = 12
KEY_BYTES = 32
DEFAULT_KEY_FILE = Path(".state") / "phi.key"


class CryptoError(RuntimeError):
    """A value cannot be opened (unknown key id, wrong key, altered) or a key is malformed."""


def _b64(raw: str, what: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        raise CryptoError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"{what} must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def _derive_index_key(key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"utimesh.blind-index.v1"
    ).derive(key)


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes


class Keyring:
    """Keys by id; `current` encrypts; all decrypt. `index_key` keys the blind index."""

    def __init__(self, keys: Mapping[str, bytes], current: str, index_key: bytes) -> None:
        if current not in keys:
            raise CryptoError("the current key id is not in the key ring")
        for kid, key in keys.items():
            if not kid or len(kid.encode()) > 255 or ":" in kid or "," in kid:
                raise CryptoError("a key id must be 1..255 bytes without ':' or ','")
            if len(key) != KEY_BYTES:
                raise CryptoError(f"key {kid!r} must be {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self.current = current
        self._index_key = index_key

    def __repr__(self) -> str:  # never show key material
        return f"Keyring(current={self.current!r}, key_ids={sorted(self._keys)!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @staticmethod
    def _aad(kid: str, purpose: str) -> bytes:
        return f"utimesh:{purpose}:v{_VERSION}:{kid}".encode()

    def seal(self, plaintext: str, purpose: str = "patient-id") -> Sealed:
        kid = self.current
        nonce = secrets.token_bytes(_NONCE)
        ct = AESGCM(self._keys[kid]).encrypt(nonce, plaintext.encode(), self._aad(kid, purpose))
        kid_b = kid.encode()
        return Sealed(kid, bytes([_VERSION, len(kid_b)]) + kid_b + nonce + ct)

    def open(self, blob: bytes, purpose: str = "patient-id") -> str:
        if len(blob) < 2 or blob[0] != _VERSION:
            raise CryptoError("unknown sealed-value format")
        n = blob[1]
        kid = blob[2 : 2 + n].decode(errors="replace")
        key = self._keys.get(kid)
        if key is None:
            raise CryptoError(f"no key with id {kid!r} in the key ring")
        nonce, ct = blob[2 + n : 2 + n + _NONCE], blob[2 + n + _NONCE :]
        try:
            return AESGCM(key).decrypt(nonce, ct, self._aad(kid, purpose)).decode()
        except InvalidTag:
            raise CryptoError(
                "the value does not open with its key (wrong key or altered)"
            ) from None

    def reseal(self, blob: bytes, purpose: str = "patient-id") -> Sealed:
        """Open with whichever key sealed it and seal again with the current key (rotation)."""
        return self.seal(self.open(blob, purpose), purpose)

    def blind_index(self, value: str, purpose: str = "patient-id") -> bytes:
        """A stable keyed digest to find a value without storing it in clear."""
        return hmac.new(self._index_key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    @classmethod
    def parse(cls, spec: str, index_key_b64: str = "") -> Keyring:
        """From "kid1:b64,kid2:b64" (first current); the index key as described above."""
        keys: dict[str, bytes] = {}
        for i, item in enumerate(part for part in spec.split(",") if part.strip()):
            kid, sep, raw = item.strip().partition(":")
            if not sep:
                raise CryptoError(f"key entry {i + 1} is not kid:base64key")
            if kid in keys:
                raise CryptoError(f"key id {kid!r} is listed twice")
            keys[kid] = _b64(raw, f"key {kid!r}")
        if not keys:
            raise CryptoError("no keys configured")
        index = (
            _b64(index_key_b64, "the index key")
            if index_key_b64
            else _derive_index_key(list(keys.values())[-1])
        )
        return cls(keys, next(iter(keys)), index)

    @classmethod
    def generate(cls, kid: str = "dev1") -> Keyring:
        key = AESGCM.generate_key(bit_length=256)
        return cls({kid: key}, kid, _derive_index_key(key))

    def _to_file_json(self) -> str:
        return json.dumps(
            {
                "current": self.current,
                "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()},
                "index_key": base64.b64encode(self._index_key).decode(),
            }
        )

    @classmethod
    def _from_file_json(cls, text: str) -> Keyring:
        try:
            data = json.loads(text)
            keys = {k: _b64(v, f"key {k!r}") for k, v in data["keys"].items()}
            return cls(keys, data["current"], _b64(data["index_key"], "the index key"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CryptoError(f"the key file is malformed ({type(exc).__name__})") from None


def dev_keyring(path: Path) -> Keyring:
    """The local development key ring at `path`, generated (mode 0600) on first use."""
    if path.exists():
        return Keyring._from_file_json(path.read_text())
    ring = Keyring.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ring._to_file_json())
    return ring


def keyring_from_env(environ: Mapping[str, str] | None = None) -> Keyring:
    """UTIMESH_PHI_KEYS (+ UTIMESH_PHI_INDEX_KEY) when set, else the dev key file."""
    env = os.environ if environ is None else environ
    spec = env.get("UTIMESH_PHI_KEYS", "")
    if spec.strip():
        return Keyring.parse(spec, env.get("UTIMESH_PHI_INDEX_KEY", ""))
    return dev_keyring(Path(env.get("UTIMESH_PHI_KEY_FILE", "") or DEFAULT_KEY_FILE))
