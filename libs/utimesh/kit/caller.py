"""Who is calling, as the edge vouches for it: the JWT subject and roles the edge verified and
forwards (x-utimesh-sub, x-utimesh-roles = base64 of a JSON array). The edge strips any such
headers a client sends, and only the edge may call consult (mesh/policy.toml), so services trust
them. Calls without them (tests, tools on a plaintext local stack) get the peer's identity."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

SUB_HEADER = "x-utimesh-sub"
ROLES_HEADER = "x-utimesh-roles"


@dataclass(frozen=True)
class Caller:
    sub: str
    roles: frozenset[str]

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def _roles(raw: str) -> frozenset[str]:
    for decode in (lambda v: base64.b64decode(v, validate=True).decode(), lambda v: v):
        try:
            value = json.loads(decode(raw))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if isinstance(value, list):
            return frozenset(str(r) for r in value)
        if isinstance(value, str):
            return frozenset(value.split())
    return frozenset(raw.replace(",", " ").split())


def caller_of(context: Any, default_sub: str = "anonymous") -> Caller:
    """The caller of a grpc.aio call (`context` is its ServicerContext)."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    sub = metadata.get(SUB_HEADER, "").strip() or default_sub
    return Caller(sub=sub, roles=_roles(metadata.get(ROLES_HEADER, "")))
