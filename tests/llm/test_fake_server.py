"""The fake OpenAI server speaks the protocol the real openai client expects."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.fakes import FakeOpenAI, error


async def test_models_responder_and_recording() -> None:
    async with FakeOpenAI(models=("a", "b")) as fake:
        client = openai.AsyncOpenAI(api_key="k", base_url=fake.base_url, max_retries=0)
        try:
            assert [m.id for m in (await client.models.list()).data] == ["a", "b"]

            def by_system_prompt(request: dict[str, Any]) -> dict[str, Any]:
                return {"echo": request["messages"][0]["content"]}

            fake.responder = by_system_prompt
            completion = await client.chat.completions.create(
                model="a", messages=[{"role": "system", "content": "hello"}]
            )
            assert json.loads(completion.choices[0].message.content or "") == {"echo": "hello"}
            assert completion.usage is not None and completion.usage.total_tokens == 15
            await fake.wait_for_requests(1)
            assert fake.requests[0]["model"] == "a"
        finally:
            await client.close()


async def test_scripted_errors_carry_openai_bodies_and_headers() -> None:
    async with FakeOpenAI() as fake:
        fake.script(error(429, "slow down", retry_after="3"))
        client = openai.AsyncOpenAI(api_key="k", base_url=fake.base_url, max_retries=0)
        try:
            with pytest.raises(openai.RateLimitError) as raised:
                await client.chat.completions.create(model="m", messages=[])
            assert raised.value.response.headers["retry-after"] == "3"
            assert raised.value.body == {
                "message": "slow down",
                "type": "rate_limit_exceeded",
                "param": None,
                "code": None,
            }
            assert fake.pending == 0
        finally:
            await client.close()
