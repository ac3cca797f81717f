"""The one way a service gets its model client: none for the offline engine, otherwise an
OpenAI-compatible client that is closed when the service stops."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from utimesh.llm.settings import ModelProfile
from utimesh.llm.types import StructuredLLM


@contextlib.asynccontextmanager
async def model_client(profile: ModelProfile) -> AsyncIterator[StructuredLLM | None]:
    """Yield None for an offline profile, else a client (importing openai only then)."""
    if profile.provider == "offline":
        yield None
        return
    from utimesh.llm.openai_compat import OpenAICompatibleLLM

    llm = OpenAICompatibleLLM()
    try:
        yield llm
    finally:
        await llm.aclose()
