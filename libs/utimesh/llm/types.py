"""Shared vocabulary of the LLM layer: usage accounting, a generation result, the error tree
and the `StructuredLLM` protocol every provider (OpenAI-compatible, offline engine, fakes)
implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from utimesh.kit.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    Unavailable,
    UtimeshError,
)

if TYPE_CHECKING:
    from utimesh.llm.settings import ModelProfile

T = TypeVar("T", bound=BaseModel)


class Usage(BaseModel):
    """Tokens, money and time spent on one or more model calls; add them up with `+`."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    latency_ms: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
            latency_ms=self.latency_ms + other.latency_ms,
        )


@dataclass(frozen=True)
class Generation(Generic[T]):
    """A validated structured output and what it cost to get it."""

    output: T
    provider: str
    model: str
    usage: Usage
    attempts: int  # HTTP requests sent, retries and re-asks included
    reasks: int  # re-asks used because an answer did not validate
    prompt_version: str = ""


class LLMError(UtimeshError):
    """Base of every error the LLM layer raises. Callers degrade on it (the consultation goes
    on with the deterministic decision, marked as missing that review); they never parse the
    message, only `reason`."""

    default_reason = "LLM_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason or self.default_reason, metadata=metadata)


class LLMUnavailable(LLMError, Unavailable):
    """The provider could not be reached or kept failing (connection errors, 5xx, 429) after
    the retries of the profile, or refused the request outright (e.g. 401, 404)."""

    default_reason = "LLM_UNAVAILABLE"


class LLMCircuitOpen(LLMUnavailable):
    """Rejected without a request: the circuit breaker of this endpoint and model is open."""

    default_reason = "LLM_CIRCUIT_OPEN"


class LLMTimeout(LLMError, DeadlineExceeded):
    """The deadline of the call (or every attempt's timeout) ran out before a valid answer."""

    default_reason = "LLM_TIMEOUT"


class LLMInvalidOutput(LLMError, Internal):
    """The model kept answering with output that does not validate, re-asks exhausted.

    Not retryable: the re-asks were the retries. The code is INTERNAL rather than UNAVAILABLE
    on purpose, because gRPC retry policies retry UNAVAILABLE and that would multiply the
    re-asks at another layer."""

    default_reason = "LLM_INVALID_OUTPUT"
    retryable = False


class ConfigError(LLMError, FailedPrecondition):
    """LLM configuration that cannot work: a bad value in models.toml or the environment, a
    missing API key, a profile sent to the wrong provider. Raised at start where possible."""

    default_reason = "LLM_CONFIG_INVALID"
    retryable = False


class StructuredLLM(Protocol):
    """A model that answers with a validated instance of a pydantic model."""

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
        """Ask once (with bounded retries and re-asks) and return the validated output.

        `deadline_s` is the time left for the whole call in seconds (e.g. the gRPC context's
        `time_remaining()`); None means each attempt is bounded by the profile alone."""
        ...

    async def aclose(self) -> None:
        """Release connections. The instance is not used afterwards."""
        ...
