"""The LLM layer: model profiles per agent, the `StructuredLLM` protocol and its
OpenAI-compatible adapter, the error tree, usage accounting and versioned prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from utimesh.llm.client import model_client
from utimesh.llm.prompts import Prompt, load_prompt
from utimesh.llm.settings import LLMSettings, ModelProfile, load_llm_settings, masked
from utimesh.llm.types import (
    ConfigError,
    Generation,
    LLMCircuitOpen,
    LLMError,
    LLMInvalidOutput,
    LLMTimeout,
    LLMUnavailable,
    StructuredLLM,
    Usage,
)

if TYPE_CHECKING:
    from utimesh.llm.openai_compat import OpenAICompatibleLLM, strict_json_schema

__all__ = [
    "ConfigError",
    "Generation",
    "LLMCircuitOpen",
    "LLMError",
    "LLMInvalidOutput",
    "LLMSettings",
    "LLMTimeout",
    "LLMUnavailable",
    "ModelProfile",
    "OpenAICompatibleLLM",
    "Prompt",
    "StructuredLLM",
    "Usage",
    "load_llm_settings",
    "load_prompt",
    "masked",
    "model_client",
    "strict_json_schema",
]

_LAZY = {"OpenAICompatibleLLM", "strict_json_schema"}


def __getattr__(name: str) -> Any:
    # The openai package takes about half a second to import: only processes that call a
    # model pay for it, not `utimesh config show` or the offline engine.
    if name in _LAZY:
        from utimesh.llm import openai_compat

        return getattr(openai_compat, name)
    raise AttributeError(f"module 'utimesh.llm' has no attribute {name!r}")
