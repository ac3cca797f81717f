"""Service-to-service authorization: who may call whom, read from `mesh/policy.toml`, enforced by
a grpc.aio server interceptor on the caller identity of the verified client certificate.

Mutual TLS alone only authenticates (any certificate of the mesh CA would do); this is the
authorization half, the local counterpart of Istio's per-callee AuthorizationPolicy. The caller
is the SPIFFE ID that gRPC exposes for the peer certificate (`peer_spiffe_id` in the auth
context: set when the certificate carries exactly one URI SAN and it is a SPIFFE ID). A caller
not on the callee's allow-list gets PERMISSION_DENIED with ErrorInfo reason CALLER_NOT_ALLOWED.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from utimesh.kit import tls
from utimesh.kit.errors import PermissionDenied
from utimesh.kit.status import to_status_proto, trailing_metadata

log = logging.getLogger("utimesh.authz")


def _default_policy_path() -> Path:
    """mesh/policy.toml of the `mesh` package: the repository's file in a checkout or an
    editable install, the packaged copy in an installed wheel (package data)."""
    spec = importlib.util.find_spec("mesh")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).resolve().parent / "policy.toml"
    return Path(__file__).resolve().parents[3] / "mesh" / "policy.toml"


DEFAULT_POLICY_PATH = _default_policy_path()
ANY_CALLER = "*"  # any caller with a valid certificate of this mesh (Istio: principals ["*"])
REASON = "CALLER_NOT_ALLOWED"

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerList(_Strict):
    """The identities allowed to call something: service-account names, or ["*"]."""

    callers: frozenset[str]


class MeshSection(_Strict):
    trust_domain: str
    namespace: str
    clients: frozenset[str] = Field(default=frozenset(), description="identities serving nothing")


class MeshPolicy(_Strict):
    """The parsed `mesh/policy.toml`: per callee service, the identities that may call it, plus
    who may call health checking and reflection on every service."""

    mesh: MeshSection
    health: CallerList
    reflection: CallerList
    services: Mapping[str, CallerList]

    @model_validator(mode="after")
    def _consistent(self) -> MeshPolicy:
        if (self.mesh.trust_domain, self.mesh.namespace) != (tls.TRUST_DOMAIN, tls.NAMESPACE):
            raise ValueError(
                f"mesh identities are spiffe://{tls.TRUST_DOMAIN}/ns/{tls.NAMESPACE}/sa/<name>;"
                f" the policy says trust_domain={self.mesh.trust_domain!r},"
                f" namespace={self.mesh.namespace!r}"
            )
        for name in (*self.services, *self.mesh.clients):
            tls.identity(name)  # raises on a name that cannot be a certificate identity
        if both := set(self.services) & self.mesh.clients:
            raise ValueError(f"listed both as services and as clients: {sorted(both)}")
        known = self.identities
        lists = {"health": self.health, "reflection": self.reflection}
        lists.update({f"services.{name}": entry for name, entry in self.services.items()})
        for where, entry in lists.items():
            if ANY_CALLER in entry.callers and len(entry.callers) > 1:
                raise ValueError(f"{where}: {ANY_CALLER!r} must be the only caller")
            if unknown := entry.callers - known - {ANY_CALLER}:
                raise ValueError(f"{where}: unknown callers {sorted(unknown)}")
        return self

    @property
    def identities(self) -> frozenset[str]:
        """Every identity the mesh knows: its services and its clients."""
        return frozenset(self.services) | self.mesh.clients

    def callers_of(self, callee: str, method: str) -> frozenset[str]:
        """Who may call `method` (a full gRPC path, /pkg.Service/Method) on service `callee`."""
        if method.startswith(_HEALTH_PREFIX):
            return self.health.callers
        if method.startswith(_REFLECTION_PREFIXES):
            return self.reflection.callers
        return self.services[callee].callers

    def allows(self, callee: str, method: str, caller: str | None) -> bool:
        """Whether identity `caller` (None: no identity of this mesh) may call it."""
        if caller is None:
            return False
        callers = self.callers_of(callee, method)
        return ANY_CALLER in callers or caller in callers


def load_policy(path: Path | None = None) -> MeshPolicy:
    """Read and check the policy (blocking file I/O: at start). Raises ValueError when bad."""
    source = path or DEFAULT_POLICY_PATH
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
        return MeshPolicy.model_validate(data)
    except FileNotFoundError:
        raise ValueError(f"mesh policy not found at {source} (set UTIMESH_MESH_POLICY)") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"bad mesh policy {source}: {exc}") from exc


def caller_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The mesh identity (service-account name) of the verified peer certificate, or None when
    the peer has no single SPIFFE ID of this trust domain and namespace."""
    auth = context.auth_context()
    spiffe: list[bytes] = auth.get("peer_spiffe_id", [])
    if not spiffe:
        # Older gRPC releases only list the SANs: accept exactly one SPIFFE URI among them.
        sans = auth.get("x509_subject_alternative_name", [])
        spiffe = [san for san in sans if san.startswith(b"spiffe://")]
    if len(spiffe) != 1:
        return None
    return tls.service_of(spiffe[0].decode("utf-8", "replace"))


class AuthzInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call whose caller is not on `service`'s allow-list in `policy`.

    Put it first in the server's interceptors so that a refused call runs nothing else. The
    identity is only known once the call runs (the auth context lives on the servicer context),
    so the check wraps each handler."""

    def __init__(self, *, service: str, policy: MeshPolicy, domain: str) -> None:
        if service not in policy.services:
            raise ValueError(f"the mesh policy has no [services.{service}] entry")
        self.service = service
        self.policy = policy
        self.domain = domain
        # (inner handler, wrapped handler) per method: wrapped once, checked on every call.
        self._handlers: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    async def _authorize(
        self, method: str, allowed: frozenset[str], context: grpc.aio.ServicerContext
    ) -> None:
        caller = caller_identity(context)
        if caller is not None and (ANY_CALLER in allowed or caller in allowed):
            return
        err = PermissionDenied(
            f"{caller or 'an unidentified caller'} may not call {self.service}",
            reason=REASON,
            metadata={"caller": caller or "", "callee": self.service},
        )
        log.warning(
            "rpc refused",
            extra={"fields": {"rpc": method, "caller": caller or "", "callee": self.service}},
        )
        status = to_status_proto(err, self.domain)
        await context.abort(err.code, err.message, trailing_metadata(status))

    def _wrap(self, method: str, handler: Any) -> Any:
        allowed = self.policy.callers_of(self.service, method)

        async def check(context: grpc.aio.ServicerContext) -> None:
            await self._authorize(method, allowed, context)

        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _single(check, handler.unary_unary), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _single(check, handler.stream_unary), **serializers
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(check, handler.unary_stream), **serializers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(check, handler.stream_stream), **serializers
            )
        return handler


_Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _single(check: _Check, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Wrap a handler with one response (its request is a message or an iterator of them)."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        result = inner(request, context)
        return await result if inspect.isawaitable(result) else result

    return handle


def _streaming(check: _Check, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Wrap a handler with a response stream, keeping its shape: an async generator stays one;
    a coroutine that writes with `context.write` (e.g. Health.Watch) stays a coroutine."""
    if inspect.isasyncgenfunction(inner):

        async def generate(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await check(context)
            async for item in inner(request, context):
                yield item

        return generate

    async def write(request: Any, context: grpc.aio.ServicerContext) -> None:
        await check(context)
        result = inner(request, context)
        if inspect.isawaitable(result):
            await result
            return
        async for item in result:
            await context.write(item)

    return write
