"""OpenAICompatibleLLM against a real HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import grpc
import pytest
from pydantic import BaseModel

from tests.fakes import FakeOpenAI, error, hang, reject_json_schema, reply, text
from utimesh.llm import (
    ConfigError,
    LLMCircuitOpen,
    LLMInvalidOutput,
    LLMTimeout,
    LLMUnavailable,
    ModelProfile,
    OpenAICompatibleLLM,
    StructuredLLM,
    strict_json_schema,
)

KEY = "sk-test-key-never-logged"
SYSTEM = "You are a careful pharmacist. PROMPT-MARKER-SYSTEM"
USER = "Review this plan. PROMPT-MARKER-USER"


class Verdict(BaseModel):
    verdict: Literal["approve", "revise", "reject"]
    concerns: list[str] = []


GOOD = {"verdict": "approve", "concerns": []}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records backoff sleeps instead of sleeping, so retry tests take no wall time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def llm(sleeps: Sleeps) -> AsyncIterator[OpenAICompatibleLLM]:
    client = OpenAICompatibleLLM(environ={"FAKE_KEY": KEY}, sleep=sleeps, jitter=lambda: 0.5)
    yield client
    await client.aclose()


def profile(fake: FakeOpenAI, **changes: Any) -> ModelProfile:
    values: dict[str, Any] = {
        "provider": "openai-compatible",
        "model": "fake-model",
        "base_url": fake.base_url,
        "api_key_env": "FAKE_KEY",
        "timeout_s": 5.0,
        "retries": 2,
        "reasks": 2,
        "input_cost_per_1k": 2.0,
        "output_cost_per_1k": 10.0,
    }
    return ModelProfile(**(values | changes))


async def generate(
    llm: OpenAICompatibleLLM, prof: ModelProfile, deadline_s: float | None = None
) -> Any:
    return await llm.generate(
        system=SYSTEM,
        user=USER,
        output_type=Verdict,
        profile=prof,
        deadline_s=deadline_s,
        prompt_version="pharmacist-review.v3",
    )


async def test_structured_output_with_usage_and_cost(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM
) -> None:
    fake.script(
        reply(
            {"verdict": "revise", "concerns": ["renal"]}, prompt_tokens=1200, completion_tokens=300
        )
    )
    result = await generate(llm, profile(fake, temperature=0.2, max_output_tokens=256))

    assert result.output == Verdict(verdict="revise", concerns=["renal"])
    assert (result.provider, result.model, result.prompt_version) == (
        "openai-compatible",
        "fake-model",
        "pharmacist-review.v3",
    )
    assert (result.attempts, result.reasks) == (1, 0)
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.calls) == (
        1200,
        300,
        1,
    )
    assert result.usage.cost_usd == pytest.approx(1.2 * 2.0 + 0.3 * 10.0)
    assert result.usage.latency_ms > 0

    [sent] = fake.requests
    assert sent["model"] == "fake-model"
    assert sent["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
    ]
    assert sent["temperature"] == 0.2
    assert sent["max_tokens"] == 256  # a self-hosted server: the classic parameter
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Verdict", "schema": strict_json_schema(Verdict), "strict": True},
    }
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"


async def test_json_schema_rejected_falls_back_to_json_object_and_remembers(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM
) -> None:
    fake.script(reject_json_schema(), GOOD, GOOD)
    first = await generate(llm, profile(fake))
    assert first.output.verdict == "approve"
    assert [r["response_format"]["type"] for r in fake.requests] == ["json_schema", "json_object"]
    fallback_system = fake.requests[1]["messages"][0]["content"]
    assert fallback_system.startswith(SYSTEM)
    assert '"additionalProperties":false' in fallback_system  # the schema rides in the prompt

    await generate(llm, profile(fake))  # remembered for this base_url + model: no second 400
    assert fake.requests[2]["response_format"] == {"type": "json_object"}


async def test_server_without_structured_outputs(llm: OpenAICompatibleLLM) -> None:
    async with FakeOpenAI(api_key=KEY, supports_json_schema=False) as fake:
        fake.script("```json\n" + '{"verdict": "reject"}' + "\n```")  # fenced, as small models do
        result = await generate(llm, profile(fake))
    assert result.output.verdict == "reject"
    assert result.attempts == 2


async def test_invalid_output_is_reasked_then_gives_up(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM
) -> None:
    fake.script(text("not json at all"), {"verdict": "maybe"}, text('{"verdict": '))
    with pytest.raises(LLMInvalidOutput) as raised:
        await generate(llm, profile(fake, reasks=2))
    assert len(fake.requests) == 1 + 2
    assert raised.value.reason == "LLM_INVALID_OUTPUT"
    assert raised.value.retryable is False
    assert raised.value.code == grpc.StatusCode.INTERNAL
    # Each re-ask carries the whole exchange and the validation errors, not the bad values.
    last = fake.requests[2]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last[2]["content"] == "not json at all"
    assert "does not validate" in last[3]["content"]
    assert "verdict" in last[5]["content"]
    assert "maybe" not in last[5]["content"]


async def test_reask_then_success_reports_the_reask(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM
) -> None:
    fake.script(text('{"verdict": "appr', finish_reason="length"), GOOD)
    result = await generate(llm, profile(fake))
    assert (result.attempts, result.reasks, result.usage.calls) == (2, 1, 2)
    assert result.usage.input_tokens == 20  # both answers are paid for
    assert "cut off" in fake.requests[1]["messages"][-1]["content"]


async def test_rate_limit_then_success_honours_retry_after(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM, sleeps: Sleeps
) -> None:
    fake.script(error(429, "slow down", retry_after="2"), GOOD)
    result = await generate(llm, profile(fake))
    assert result.output.verdict == "approve"
    assert len(fake.requests) == 2
    assert sleeps.delays == [2.0]


async def test_server_errors_are_retried_with_backoff_then_unavailable(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM, sleeps: Sleeps
) -> None:
    fake.script(*[error(500)] * 5)
    with pytest.raises(LLMUnavailable) as raised:
        await generate(llm, profile(fake, retries=2))
    assert len(fake.requests) == 1 + 2
    assert sleeps.delays == [0.375, 0.75]  # exponential, jitter fixed at the middle
    assert raised.value.reason == "LLM_UNAVAILABLE"
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


async def test_client_errors_are_not_retried(llm: OpenAICompatibleLLM) -> None:
    async with FakeOpenAI(api_key="another-key") as fake:
        with pytest.raises(LLMUnavailable) as raised:
            await generate(llm, profile(fake))
    assert len(fake.requests) == 1
    assert raised.value.retryable is False
    assert raised.value.metadata["status"] == "401"


async def test_connection_refused_is_unavailable(llm: OpenAICompatibleLLM, sleeps: Sleeps) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prof = ModelProfile(
        provider="openai-compatible",
        model="m",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env="FAKE_KEY",
        retries=1,
    )
    with pytest.raises(LLMUnavailable, match="connection"):
        await generate(llm, prof)
    assert len(sleeps.delays) == 1


async def test_slow_reply_times_out_within_the_deadline(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM
) -> None:
    fake.script(hang(), hang(), hang())
    started = time.monotonic()
    with pytest.raises(LLMTimeout) as raised:
        await generate(llm, profile(fake, timeout_s=30.0), deadline_s=0.4)
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 2.0
    assert len(fake.requests) == 1  # no time left for a retry
    assert raised.value.reason == "LLM_TIMEOUT"
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_attempt_timeout_is_retried_within_the_deadline(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM
) -> None:
    fake.script(hang(), GOOD)
    result = await generate(llm, profile(fake, timeout_s=0.2, retries=1), deadline_s=5.0)
    assert result.output.verdict == "approve"
    assert result.attempts == 2


async def test_no_time_left_means_no_request(fake: FakeOpenAI, llm: OpenAICompatibleLLM) -> None:
    with pytest.raises(LLMTimeout):
        await generate(llm, profile(fake), deadline_s=0.0)
    assert fake.requests == []


async def test_retry_after_beyond_the_deadline_fails_now(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM, sleeps: Sleeps
) -> None:
    fake.script(error(503, retry_after="30"), GOOD)
    with pytest.raises(LLMUnavailable):
        await generate(llm, profile(fake), deadline_s=5.0)
    assert sleeps.delays == []
    assert len(fake.requests) == 1


async def test_circuit_breaker_opens_rejects_and_half_opens(
    fake: FakeOpenAI, sleeps: Sleeps
) -> None:
    clock = FakeClock()
    llm = OpenAICompatibleLLM(
        environ={"FAKE_KEY": KEY},
        breaker_threshold=2,
        breaker_reset_s=30.0,
        clock=clock,
        sleep=sleeps,
    )
    prof = profile(fake, retries=0)
    try:
        fake.script(error(502), error(502))
        for _ in range(2):
            with pytest.raises(LLMUnavailable):
                await generate(llm, prof)
        assert len(fake.requests) == 2

        with pytest.raises(LLMCircuitOpen) as raised:
            await generate(llm, prof)
        assert len(fake.requests) == 2  # rejected without a request
        assert raised.value.reason == "LLM_CIRCUIT_OPEN"

        # Another model on the same server has its own breaker.
        fake.script(GOOD)
        await generate(llm, profile(fake, model="other-model"))

        clock.now += 30.0  # half-open: one trial goes through and closes the circuit
        fake.script(GOOD, GOOD)
        assert (await generate(llm, prof)).output.verdict == "approve"
        assert (await generate(llm, prof)).output.verdict == "approve"
        assert len(fake.requests) == 5
    finally:
        await llm.aclose()


async def test_prompts_and_keys_never_reach_the_logs(
    fake: FakeOpenAI, llm: OpenAICompatibleLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(reject_json_schema(), text("PROMPT-MARKER-ANSWER"), GOOD)
    await generate(llm, profile(fake))
    events = [r for r in caplog.records if r.name == "utimesh.llm"]
    assert events, "the call is logged"
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for secret in ("PROMPT-MARKER", KEY):
        assert secret not in logged
    call = events[-1].fields  # type: ignore[attr-defined]
    assert call == {
        "model": "fake-model",
        "attempts": 3,
        "status": "ok",
        "latency_ms": call["latency_ms"],
    }


async def test_configuration_mistakes_are_config_errors(fake: FakeOpenAI) -> None:
    llm = OpenAICompatibleLLM(environ={})
    try:
        with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
            await generate(llm, ModelProfile(provider="openai-compatible", model="gpt-4.1"))
        with pytest.raises(ConfigError, match="offline"):
            await generate(llm, ModelProfile())
    finally:
        await llm.aclose()
    assert fake.requests == []


async def test_a_local_server_needs_no_key(sleeps: Sleeps) -> None:
    llm = OpenAICompatibleLLM(environ={}, sleep=sleeps)
    try:
        async with FakeOpenAI() as fake:
            fake.script(GOOD)
            result = await generate(llm, profile(fake, api_key_env="UNSET_KEY"))
        assert result.output.verdict == "approve"
    finally:
        await llm.aclose()


async def test_implements_the_structured_llm_protocol() -> None:
    implementation: StructuredLLM = OpenAICompatibleLLM(environ={})  # checked by mypy
    await implementation.aclose()
