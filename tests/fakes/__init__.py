"""First-party fakes at the project's I/O seams, real protocols on loopback: no mocks."""

from tests.fakes.openai_server import (
    FakeOpenAI,
    delayed,
    error,
    hang,
    reject_json_schema,
    reply,
    text,
)

__all__ = ["FakeOpenAI", "delayed", "error", "hang", "reject_json_schema", "reply", "text"]
