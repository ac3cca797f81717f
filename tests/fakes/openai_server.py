"""A small real OpenAI-compatible HTTP server for tests: chat completions and model listing on
127.0.0.1, on the test's event loop, answering from a script of replies or a responder, and
recording every request it receives.

    async with FakeOpenAI() as fake:
        fake.script({"verdict": "approve"}, error(429, retry_after="1"), text("not json"))
        fake.responder = lambda request: {"answer": request["model"]}
        llm_profile = ModelProfile(provider="openai-compatible", base_url=fake.base_url, ...)
        ...
        assert fake.requests[0]["response_format"]["type"] == "json_schema"

A plain dict in a script is the assistant's JSON answer, a plain str its raw text.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "DelayedReply",
    "ErrorReply",
    "FakeOpenAI",
    "JsonReply",
    "RejectJsonSchema",
    "Reply",
    "ReplyLike",
    "TextReply",
    "delayed",
    "error",
    "hang",
    "reject_json_schema",
    "reply",
    "text",
]


@dataclass(frozen=True)
class JsonReply:
    """A chat.completion whose assistant content is `content` serialised as JSON."""

    content: Any
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "stop"


@dataclass(frozen=True)
class TextReply:
    """A chat.completion whose assistant content is this raw text (e.g. invalid JSON)."""

    content: str
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error with an OpenAI-style body {"error": {...}}."""

    status: int
    message: str = "fake error"
    type: str = "server_error"
    code: str | None = None
    param: str | None = None
    retry_after: str | None = None  # Retry-After header value, e.g. "2"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DelayedReply:
    """Wait `seconds` (or until the server closes), then answer with `then`."""

    seconds: float
    then: Reply


@dataclass(frozen=True)
class RejectJsonSchema:
    """One 400 naming response_format/json_schema, as servers without structured outputs do."""


Reply = JsonReply | TextReply | ErrorReply | DelayedReply | RejectJsonSchema
ReplyLike = Reply | dict[str, Any] | list[Any] | str
Responder = Callable[[dict[str, Any]], ReplyLike | Awaitable[ReplyLike]]


def reply(content: Any, *, prompt_tokens: int = 10, completion_tokens: int = 5) -> JsonReply:
    return JsonReply(content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def text(content: str, *, finish_reason: str = "stop") -> TextReply:
    return TextReply(content, finish_reason=finish_reason)


def error(
    status: int,
    message: str = "fake error",
    *,
    retry_after: str | None = None,
    type: str | None = None,
    code: str | None = None,
) -> ErrorReply:
    default_type = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    return ErrorReply(
        status, message, type=type or default_type, code=code, retry_after=retry_after
    )


def delayed(seconds: float, then: ReplyLike) -> DelayedReply:
    return DelayedReply(seconds, _as_reply(then))


def hang() -> DelayedReply:
    """Never answer (until the server closes): for timeouts."""
    return DelayedReply(float("inf"), error(504, "hung reply released at shutdown"))


def reject_json_schema() -> RejectJsonSchema:
    return RejectJsonSchema()


def _as_reply(value: ReplyLike) -> Reply:
    if isinstance(value, JsonReply | TextReply | ErrorReply | DelayedReply | RejectJsonSchema):
        return value
    if isinstance(value, str):
        return TextReply(value)
    return JsonReply(value)


_JSON_SCHEMA_REJECTION = ErrorReply(
    400,
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
    type="invalid_request_error",
    param="response_format",
    code="unsupported_parameter",
)


class FakeOpenAI:
    """The fake server. Replies come from the script (first in, first out), then from
    `responder`; with neither, requests get a 500 that names the gap (a test bug)."""

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
        supports_json_schema: bool = True,
    ) -> None:
        self.models = models
        self.api_key = api_key  # when set, requests must carry "Authorization: Bearer <key>"
        # False: every json_schema request is refused, like a server without structured outputs.
        self.supports_json_schema = supports_json_schema
        self.responder: Responder | None = None
        self.requests: list[dict[str, Any]] = []  # every chat request body received, in order
        self.headers: list[dict[str, str]] = []  # the matching request headers
        self._script: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._received = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # access_log=None: a test's output should not fill with one line per request.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()  # release delayed replies so shutdown does not wait on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FakeOpenAI is not running: use `async with FakeOpenAI()`")
        return f"http://127.0.0.1:{self._port}/v1"

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *replies: ReplyLike) -> None:
        """Queue replies for the next requests, in order."""
        self._script.extend(_as_reply(r) for r in replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    async def wait_for_requests(self, count: int, within_s: float = 5.0) -> None:
        """Wait until at least `count` chat requests arrived (bounded by `within_s`)."""
        async with asyncio.timeout(within_s), self._received:
            await self._received.wait_for(lambda: len(self.requests) >= count)

    # -- handlers -----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in self.models
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(ErrorReply(400, "body is not JSON", type="invalid_request_error"))
        if not isinstance(body, dict):
            return self._error(
                ErrorReply(400, "body must be an object", type="invalid_request_error")
            )
        async with self._received:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            self._received.notify_all()
        if (denied := self._check_auth(request)) is not None:
            return denied
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return self._error(
                ErrorReply(400, "'model' and 'messages' are required", type="invalid_request_error")
            )
        if body.get("stream"):
            return self._error(
                ErrorReply(
                    400, "streaming is not supported by the fake", type="invalid_request_error"
                )
            )
        response_format = body.get("response_format") or {}
        if not self.supports_json_schema and response_format.get("type") == "json_schema":
            return self._error(_JSON_SCHEMA_REJECTION)
        return await self._answer(body, await self._next_reply(body))

    async def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self._script:
            return self._script.popleft()
        if self.responder is not None:
            produced = self.responder(body)
            if inspect.isawaitable(produced):
                produced = await produced
            return _as_reply(produced)
        return ErrorReply(500, "FakeOpenAI: script exhausted and no responder set")

    async def _answer(self, body: dict[str, Any], answer: Reply) -> web.StreamResponse:
        if isinstance(answer, DelayedReply):
            timeout = None if answer.seconds == float("inf") else answer.seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=timeout)
            return await self._answer(body, answer.then)
        if isinstance(answer, RejectJsonSchema):
            return self._error(_JSON_SCHEMA_REJECTION)
        if isinstance(answer, ErrorReply):
            return self._error(answer)
        content = answer.content if isinstance(answer, TextReply) else json.dumps(answer.content)
        return web.json_response(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": answer.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                    "total_tokens": answer.prompt_tokens + answer.completion_tokens,
                },
            }
        )

    def _check_auth(self, request: web.Request) -> web.StreamResponse | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return self._error(
            ErrorReply(
                401,
                "Incorrect API key provided.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        )

    @staticmethod
    def _error(answer: ErrorReply) -> web.StreamResponse:
        headers = dict(answer.headers)
        if answer.retry_after is not None:
            headers["Retry-After"] = answer.retry_after
        return web.json_response(
            {
                "error": {
                    "message": answer.message,
                    "type": answer.type,
                    "param": answer.param,
                    "code": answer.code,
                }
            },
            status=answer.status,
            headers=headers,
        )
