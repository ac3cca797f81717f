"""Server interceptor for cross-cutting work on every RPC: the deadline budget, turning the
error tree into rich statuses, unexpected exceptions into INTERNAL, and one log event per
failed call (method, code, duration; never the request)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from utimesh.kit.errors import DeadlineExceeded, Internal, UtimeshError
from utimesh.kit.status import to_status_proto, trailing_metadata

log = logging.getLogger("utimesh.rpc")


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies `max_budget_s` as the longest any call may run, below the caller's deadline."""

    def __init__(self, *, domain: str, max_budget_s: float) -> None:
        self.domain = domain
        self.max_budget_s = max_budget_s
        # Wrapped handlers are built once per method, not on every call.
        self._handlers: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        method: str = handler_call_details.method
        if (cached := self._handlers.get(method)) is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        wrapped = self._wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _budget(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self.max_budget_s if remaining is None else min(remaining, self.max_budget_s)

    def _wrap_unary(
        self, method: str, inner: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                async with asyncio.timeout(self._budget(context)):
                    return await inner(request, context)
            except Exception as exc:
                await self._fail(method, context, exc, start)
                raise  # unreachable: abort raises

        return handle

    def _wrap_stream(
        self, method: str, inner: Callable[[Any, Any], AsyncIterator[Any]]
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                async with asyncio.timeout(self._budget(context)):
                    async for item in inner(request, context):
                        yield item
            except Exception as exc:
                await self._fail(method, context, exc, start)
                raise

        return handle

    async def _fail(
        self, method: str, context: grpc.aio.ServicerContext, exc: Exception, start: float
    ) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the handler already chose the status
        err: UtimeshError
        if isinstance(exc, UtimeshError):
            err = exc
        elif isinstance(exc, TimeoutError):
            err = DeadlineExceeded(
                "the call ran out of its time budget", reason="DEADLINE_EXCEEDED"
            )
        else:
            err = Internal("internal error", reason="INTERNAL")
        fields = {
            "rpc": method,
            "code": err.code.name,
            "reason": err.reason,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        if err is exc:
            log.warning("rpc failed", extra={"fields": fields})
        else:
            log.error("rpc failed unexpectedly", exc_info=exc, extra={"fields": fields})
        status = to_status_proto(err, self.domain)
        await context.abort(err.code, err.message, trailing_metadata(status))
