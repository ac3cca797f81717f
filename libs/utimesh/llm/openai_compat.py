"""The OpenAI-compatible provider: strict JSON-schema structured outputs from any server that
speaks chat completions (OpenAI, Azure, vLLM, llama.cpp, Ollama).

What one `generate` call does, and the bounds on it:

* Strict structured output. The request carries `response_format={"type": "json_schema", ...,
  "strict": True}` built by `strict_json_schema`. A server that rejects json_schema (HTTP
  400/422 naming response_format/json_schema) is asked again with `{"type": "json_object"}` and
  the schema in the system message; that is remembered per (base_url, model).
* Re-asks. An answer that does not validate is sent back with the validation errors (never
  echoing values), at most `profile.reasks` times, then LLMInvalidOutput.
* Retries happen at exactly one layer: here. The openai client is built with `max_retries=0`,
  and only 429, 5xx, connection errors and per-attempt timeouts are retried, at most
  `profile.retries` times per model request, with exponential backoff and jitter, honouring
  Retry-After but never sleeping past the deadline. Callers and the mesh must not add another.
* Deadlines. Each attempt is bounded by min(profile.timeout_s, time left); `deadline_s` bounds
  the whole call (retries, backoff and re-asks included) and its expiry raises LLMTimeout.
* Circuit breaker per (base_url, model): `breaker_threshold` consecutive calls ending
  unavailable or timed out open it; while open, calls fail at once with LLMCircuitOpen.
* Accounting: tokens of every response, cost from the profile's prices, requests, latency.
* Privacy: prompts and answers are never logged; log events carry model, attempts, status and
  latency only. The API key is read from the variable the profile names, never from config.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONObject, ResponseFormatJSONSchema
from pydantic import BaseModel, ValidationError

from utimesh.llm.breaker import CircuitBreaker
from utimesh.llm.settings import ModelProfile
from utimesh.llm.types import (
    ConfigError,
    Generation,
    LLMInvalidOutput,
    LLMTimeout,
    LLMUnavailable,
    T,
    Usage,
)

log = logging.getLogger("utimesh.llm")

OPENAI_BASE_URL = "https://api.openai.com/v1"
PROVIDER = "openai-compatible"
# Local servers (llama.cpp, Ollama, vLLM without --api-key) need no key, but the client
# insists on one.
_NO_KEY = "no-key"
_MAX_ERRORS_QUOTED = 20

_Failure = Literal["timeout", "connection", "status"]


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the subset OpenAI's strict structured outputs accept: every
    object closed (`additionalProperties: false`) with all its properties required, no
    `default`, `oneOf` as `anyOf`, single `allOf` unwrapped, and `$ref` with sibling keywords
    inlined. `$defs` stay (strict mode supports them), so recursive models work.

    Fields with defaults become required: the model must always write them, which still
    validates. Free-form mappings (`dict[str, X]`) cannot be strict and raise ValueError."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    return _strict(schema, defs=defs, path="#", inlining=())  # type: ignore[no-any-return]


def _strict(node: Any, *, defs: Mapping[str, Any], path: str, inlining: tuple[str, ...]) -> Any:
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        name = ref.rsplit("/", 1)[-1]
        if ref.startswith("#/$defs/") and name in defs and name not in inlining:
            # Strict mode rejects $ref with siblings (e.g. a field description): inline it.
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            merged = {**copy.deepcopy(defs[name]), **siblings}
            return _strict(merged, defs=defs, path=path, inlining=(*inlining, name))
        node = {"$ref": ref}  # a recursive reference: keep the reference, drop the extras
    node.pop("default", None)
    if "oneOf" in node:
        node["anyOf"] = node.pop("oneOf")
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        only = node.pop("allOf")[0]
        node = {**only, **node}
        return _strict(node, defs=defs, path=path, inlining=inlining)
    if node.get("type") == "object" or "properties" in node:
        extra = node.get("additionalProperties")
        if "properties" not in node or isinstance(extra, dict):
            raise ValueError(
                f"{path}: a free-form mapping cannot be a strict structured output; "
                "use a list of objects or a model with named fields"
            )
        node["additionalProperties"] = False
        properties = node.get("properties", {})
        node["properties"] = {
            key: _strict(value, defs=defs, path=f"{path}/{key}", inlining=inlining)
            for key, value in properties.items()
        }
        node["required"] = list(properties)
    for key in ("items", "not"):
        if key in node:
            node[key] = _strict(node[key], defs=defs, path=f"{path}/{key}", inlining=inlining)
    for key in ("anyOf", "allOf", "prefixItems"):
        if isinstance(node.get(key), list):
            node[key] = [
                _strict(item, defs=defs, path=f"{path}/{key}", inlining=inlining)
                for item in node[key]
            ]
    if isinstance(node.get("$defs"), dict):
        node["$defs"] = {
            key: _strict(value, defs=defs, path=f"#/$defs/{key}", inlining=())
            for key, value in node["$defs"].items()
        }
    return node


@dataclass
class _Progress:
    """What one generate call has spent so far."""

    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, response: ChatCompletion) -> None:
        if response.usage is not None:
            self.input_tokens += response.usage.prompt_tokens
            self.output_tokens += response.usage.completion_tokens


@dataclass(frozen=True)
class _Answer:
    content: str
    truncated: bool  # finish_reason "length": the model ran out of max_output_tokens


class OpenAICompatibleLLM:
    """`StructuredLLM` over the openai package. One instance per process (composition root);
    it owns one client per (base_url, API key), created on first use, closed by `aclose()`."""

    provider = PROVIDER

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._breaker_threshold = breaker_threshold
        self._breaker_reset_s = breaker_reset_s
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self._clients_lock = asyncio.Lock()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._json_object_only: set[tuple[str, str]] = set()
        self._schemas: dict[type[BaseModel], dict[str, Any]] = {}

    def breaker(self, profile: ModelProfile) -> CircuitBreaker:
        """The circuit breaker of the profile's (base_url, model), for health reporting."""
        endpoint = (profile.base_url or OPENAI_BASE_URL, profile.model)
        found = self._breakers.get(endpoint)
        if found is None:
            found = CircuitBreaker(
                threshold=self._breaker_threshold,
                reset_s=self._breaker_reset_s,
                clock=self._clock,
                name=f"{_host(endpoint[0])} {endpoint[1]}",
            )
            self._breakers[endpoint] = found
        return found

    async def generate(
        self,
        *,
        system: str,
        user: str,
        output_type: type[T],
        profile: ModelProfile,
        deadline_s: float | None = None,
        prompt_version: str = "",
    ) -> Generation[T]:
        if profile.provider != PROVIDER:
            raise ConfigError(
                f"profile provider is {profile.provider!r}; OpenAICompatibleLLM serves "
                f"{PROVIDER!r} profiles only"
            )
        started = self._clock()
        deadline_at = None if deadline_s is None else started + deadline_s
        base_url = profile.base_url or OPENAI_BASE_URL
        api_key = self._api_key(profile)
        schema = self._schemas.get(output_type)
        if schema is None:
            # Building a schema walks the whole model: once per output type is enough.
            schema = self._schemas[output_type] = strict_json_schema(output_type)
        breaker = self.breaker(profile)
        progress = _Progress()
        status = "ok"
        try:
            if deadline_s is not None and deadline_s <= 0:
                status = "no_time"
                raise LLMTimeout("no time left for an LLM call")
            breaker.before_call()
        except LLMUnavailable:
            status = "circuit_open"
            self._log(profile, progress, status, started)
            raise
        except LLMTimeout:
            self._log(profile, progress, status, started)
            raise
        try:
            client = await self._client(base_url, api_key, profile.timeout_s)
            output, reasks = await self._validated(
                client, profile, system, user, output_type, schema, progress, deadline_at
            )
        except (LLMUnavailable, LLMTimeout) as exc:
            breaker.on_failure()
            status = exc.reason.lower()
            raise
        except LLMInvalidOutput as exc:
            breaker.on_success()  # the endpoint answered; the model's output is the problem
            status = exc.reason.lower()
            raise
        except BaseException:
            breaker.on_abandon()
            status = "cancelled_or_error"
            raise
        else:
            breaker.on_success()
        finally:
            self._log(profile, progress, status, started)
        usage = Usage(
            input_tokens=progress.input_tokens,
            output_tokens=progress.output_tokens,
            cost_usd=(
                progress.input_tokens * profile.input_cost_per_1k
                + progress.output_tokens * profile.output_cost_per_1k
            )
            / 1000.0,
            calls=progress.attempts,
            latency_ms=(self._clock() - started) * 1000.0,
        )
        return Generation(
            output=output,
            provider=PROVIDER,
            model=profile.model,
            usage=usage,
            attempts=progress.attempts,
            reasks=reasks,
            prompt_version=prompt_version,
        )

    async def aclose(self) -> None:
        async with self._clients_lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            await client.close()

    # -- one call, step by step -------------------------------------------------------------

    async def _validated(
        self,
        client: openai.AsyncOpenAI,
        profile: ModelProfile,
        system: str,
        user: str,
        output_type: type[T],
        schema: dict[str, Any],
        progress: _Progress,
        deadline_at: float | None,
    ) -> tuple[T, int]:
        """Ask, validate, re-ask with the errors; returns the output and the re-asks used."""
        conversation: list[ChatCompletionMessageParam] = [{"role": "user", "content": user}]
        reasks = 0
        while True:
            answer = await self._complete(
                client,
                profile,
                system,
                conversation,
                output_type.__name__,
                schema,
                progress,
                deadline_at,
            )
            try:
                return output_type.model_validate_json(_unfenced(answer.content)), reasks
            except ValidationError as exc:
                if reasks >= profile.reasks:
                    raise LLMInvalidOutput(
                        f"{profile.model} gave no valid {output_type.__name__} after "
                        f"{reasks} re-asks",
                        metadata={"model": profile.model, "errors": str(exc.error_count())},
                    ) from None  # the ValidationError quotes model output: keep it out of logs
                reasks += 1
                conversation.append({"role": "assistant", "content": answer.content})
                conversation.append({"role": "user", "content": _feedback(exc, answer)})

    async def _complete(
        self,
        client: openai.AsyncOpenAI,
        profile: ModelProfile,
        system: str,
        conversation: list[ChatCompletionMessageParam],
        schema_name: str,
        schema: dict[str, Any],
        progress: _Progress,
        deadline_at: float | None,
    ) -> _Answer:
        """One model answer, with the retries of the profile. The retry layer lives here."""
        endpoint = (profile.base_url or OPENAI_BASE_URL, profile.model)
        retries = 0
        while True:
            timeout = profile.timeout_s
            if deadline_at is not None:
                remaining = deadline_at - self._clock()
                if remaining <= 0:
                    raise LLMTimeout(f"{profile.model}: deadline exceeded")
                timeout = min(timeout, remaining)
            json_object = endpoint in self._json_object_only
            failure: _Failure
            retry_after: float | None = None
            progress.attempts += 1
            try:
                # asyncio.timeout bounds the whole attempt; httpx's own timeout is per read.
                async with asyncio.timeout(timeout):
                    response = await self._create(
                        client,
                        profile,
                        system,
                        conversation,
                        schema_name,
                        schema,
                        json_object=json_object,
                        attempt_timeout_s=timeout,
                    )
            except (TimeoutError, openai.APITimeoutError):
                failure = "timeout"
            except openai.APIConnectionError:
                failure = "connection"
            except openai.APIStatusError as exc:
                if not json_object and _rejects_json_schema(exc):
                    self._json_object_only.add(endpoint)
                    log.warning(
                        "json_schema rejected; using json_object from now on",
                        extra={"fields": {"model": profile.model, "status": exc.status_code}},
                    )
                    continue  # protocol negotiation, not a retry
                if exc.status_code != 429 and exc.status_code < 500:
                    error = LLMUnavailable(
                        f"{profile.model}: the provider refused the request "
                        f"(HTTP {exc.status_code})",
                        metadata={"status": str(exc.status_code), "model": profile.model},
                    )
                    error.retryable = False  # a key, model name or request problem
                    raise error from None
                failure = "status"
                retry_after = _retry_after(exc.response.headers, cap=self._max_retry_after_s)
            else:
                progress.add(response)
                return _answer(response)

            if deadline_at is not None and self._clock() >= deadline_at:
                raise LLMTimeout(f"{profile.model}: deadline exceeded")
            if retries >= profile.retries:
                raise _exhausted(profile, failure, retries)
            delay = retry_after if retry_after is not None else self._backoff(retries)
            if deadline_at is not None and self._clock() + delay >= deadline_at:
                # Sleeping would leave no time for the next attempt: fail now.
                raise _exhausted(profile, failure, retries)
            retries += 1
            await self._sleep(delay)

    async def _create(
        self,
        client: openai.AsyncOpenAI,
        profile: ModelProfile,
        system: str,
        conversation: list[ChatCompletionMessageParam],
        schema_name: str,
        schema: dict[str, Any],
        *,
        json_object: bool,
        attempt_timeout_s: float,
    ) -> ChatCompletion:
        response_format: ResponseFormatJSONSchema | ResponseFormatJSONObject
        if json_object:
            response_format = {"type": "json_object"}
            system = (
                f"{system}\n\nAnswer with one JSON object only, conforming to this JSON Schema:\n"
                f"{json.dumps(schema, separators=(',', ':'))}"
            )
        else:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": schema_name[:64], "schema": schema, "strict": True},
            }
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            *conversation,
        ]
        # OpenAI's own endpoints want max_completion_tokens (reasoning models reject
        # max_tokens); most self-hosted servers know only max_tokens.
        openai_hosted = _is_openai_hosted(profile.base_url)
        return await client.chat.completions.create(
            model=profile.model,
            messages=messages,
            temperature=profile.temperature,
            response_format=response_format,
            max_completion_tokens=profile.max_output_tokens if openai_hosted else openai.omit,
            max_tokens=openai.omit if openai_hosted else profile.max_output_tokens,
            timeout=attempt_timeout_s,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _api_key(self, profile: ModelProfile) -> str:
        key = self._environ.get(profile.api_key_env, "")
        if key:
            return key
        if profile.base_url is None or _is_openai_hosted(profile.base_url):
            raise ConfigError(
                f"the API key variable {profile.api_key_env} is not set",
                metadata={"api_key_env": profile.api_key_env},
            )
        return _NO_KEY

    async def _client(self, base_url: str, api_key: str, timeout_s: float) -> openai.AsyncOpenAI:
        async with self._clients_lock:
            client = self._clients.get((base_url, api_key))
            if client is None:
                # Building the client loads TLS certificates from disk: keep that off the loop.
                client = await asyncio.to_thread(
                    openai.AsyncOpenAI,
                    api_key=api_key,
                    base_url=base_url,
                    max_retries=0,  # the one retry layer is _complete
                    timeout=timeout_s,
                )
                self._clients[(base_url, api_key)] = client
            return client

    def _backoff(self, retries: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2.0**retries))
        # Equal jitter: at least half the ceiling, so retries stay spread but never hammer.
        return ceiling / 2 + self._jitter() * ceiling / 2

    def _log(self, profile: ModelProfile, progress: _Progress, status: str, started: float) -> None:
        log.info(
            "llm call",
            extra={
                "fields": {
                    "model": profile.model,
                    "attempts": progress.attempts,
                    "status": status,
                    "latency_ms": round((self._clock() - started) * 1000.0, 1),
                }
            },
        )


def _answer(response: ChatCompletion) -> _Answer:
    if not response.choices:
        return _Answer(content="", truncated=False)
    choice = response.choices[0]
    return _Answer(content=choice.message.content or "", truncated=choice.finish_reason == "length")


def _unfenced(content: str) -> str:
    # Small local models in json_object mode like to wrap JSON in a markdown fence.
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and "\n" in text:
        return text[text.index("\n") + 1 : -3].strip()
    return text


def _feedback(exc: ValidationError, answer: _Answer) -> str:
    # Locations and messages only: values from the answer are not quoted back.
    lines = [
        f"- {'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:_MAX_ERRORS_QUOTED]
    ]
    cut = (
        "Your answer was cut off at the output limit: answer more briefly.\n"
        if answer.truncated
        else ""
    )
    return (
        f"{cut}Your previous answer does not validate against the required JSON schema:\n"
        + "\n".join(lines)
        + "\nAnswer again with one JSON object only that conforms to the schema."
    )


def _rejects_json_schema(exc: openai.APIStatusError) -> bool:
    if exc.status_code not in (400, 422):
        return False
    text = f"{exc.message} {json.dumps(exc.body, default=str)}".lower()
    return any(word in text for word in ("response_format", "json_schema", "response format"))


def _retry_after(headers: Mapping[str, str], *, cap: float) -> float | None:
    """Seconds to wait from retry-after-ms or Retry-After (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return min(cap, max(0.0, float(value) / 1000.0))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(cap, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(cap, max(0.0, (when - datetime.now(UTC)).total_seconds()))


def _exhausted(
    profile: ModelProfile, failure: _Failure, retries: int
) -> LLMTimeout | LLMUnavailable:
    message = f"{profile.model}: {failure} failure after {retries} retries"
    metadata = {"model": profile.model, "failure": failure}
    if failure == "timeout":
        return LLMTimeout(message, metadata=metadata)
    return LLMUnavailable(message, metadata=metadata)


def _is_openai_hosted(base_url: str | None) -> bool:
    if base_url is None:
        return True
    host = _host(base_url)
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""
