"""The report service over real gRPC on a loopback port: renders and answers round trip, bad
requests are INVALID_ARGUMENT with field violations and a stable reason, and the optional model
path against a real OpenAI-compatible HTTP server (the fake speaks the protocol) never lets a
citation through that the consultation does not contain."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio

from services.report.domain.render import render
from services.report.main import ReportSettings, build_spec
from services.report.servicer import DOMAIN, MAX_QUESTION_CHARS
from tests.fakes import FakeOpenAI, error, reply
from tests.report.support import assert_answer_ids_exist, passage_ids
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.server import RunningServer, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.kit.status import ErrorDetails, error_details
from utimesh.llm import ModelProfile, OpenAICompatibleLLM
from utimesh.report.v1 import report_pb2 as rpb
from utimesh.report.v1 import report_pb2_grpc
from utimesh.rules import Knowledge

pytestmark = pytest.mark.asyncio(loop_scope="module")

Stub = report_pb2_grpc.ReportServiceStub
MODEL = "scripted-report"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(knowledge: Knowledge) -> AsyncIterator[Stub]:
    running = await start_server(build_spec(knowledge), ServiceSettings(port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Stub(channel)
    finally:
        await running.server.stop(None)


async def rejected(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return error_details(info.value)


async def test_settings_default_to_port_50055(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReportSettings().port == 50055
    monkeypatch.setenv("UTIMESH_REPORT_PORT", "6001")
    assert ReportSettings().port == 6001


async def test_render_round_trip(stub: Stub, qa: dict[str, cpb.Consultation]) -> None:
    c = qa["sxt-lisinopril"]
    response = await stub.RenderReport(
        rpb.RenderReportRequest(consultation=c, corpus_version="corpus-9"), timeout=5
    )
    local = render(c, "corpus-9")
    assert response.markdown == local.markdown and response.sha256 == local.sha256
    assert [(s.id, s.title) for s in response.sections] == [(s.id, s.title) for s in local.sections]
    again = await stub.RenderReport(
        rpb.RenderReportRequest(consultation=c, corpus_version="corpus-9"), timeout=5
    )
    assert again.markdown == response.markdown


async def test_answer_round_trip(stub: Stub, qa: dict[str, cpb.Consultation]) -> None:
    c = qa["sxt-lisinopril"]
    response = await stub.AnswerQuestion(
        rpb.AnswerQuestionRequest(consultation=c, question="Does it interact with lisinopril?"),
        timeout=5,
    )
    assert response.kind == rpb.ANSWER_KIND_ANSWERED
    assert "DDI-003" in response.answer and list(response.rule_ids) == ["DDI-003"]
    assert response.generated_by == "offline-rules"
    titles = {s.id: s.title for s in response.sections}
    assert titles["warnings"] == "Warnings"
    assert response.passages and all(p.quoted_span and p.title for p in response.passages)
    assert_answer_ids_exist(response, c, {s.id for s in render(c, "").sections})


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("What if she is pregnant?", rpb.ANSWER_KIND_NEEDS_NEW_CONSULTATION),
        ("What's the weather tomorrow?", rpb.ANSWER_KIND_OUT_OF_SCOPE),
        ("Which source says seven days?", rpb.ANSWER_KIND_CANNOT_ANSWER),
    ],
)
async def test_refusals_round_trip(
    stub: Stub, qa: dict[str, cpb.Consultation], question: str, kind: int
) -> None:
    response = await stub.AnswerQuestion(
        rpb.AnswerQuestionRequest(consultation=qa["nit"], question=question), timeout=5
    )
    assert response.kind == kind and response.answer and not response.passages


async def test_a_question_of_exactly_the_limit_is_accepted(
    stub: Stub, qa: dict[str, cpb.Consultation]
) -> None:
    question = "Why nitrofurantoin?" + " " * (MAX_QUESTION_CHARS - len("Why nitrofurantoin?"))
    assert len(question) == MAX_QUESTION_CHARS
    response = await stub.AnswerQuestion(
        rpb.AnswerQuestionRequest(consultation=qa["nit"], question=question), timeout=5
    )
    assert response.kind == rpb.ANSWER_KIND_ANSWERED


def _render_without_consultation(c: cpb.Consultation) -> Any:
    return ("RenderReport", rpb.RenderReportRequest(corpus_version="v1"))


def _render_empty_consultation(c: cpb.Consultation) -> Any:
    return ("RenderReport", rpb.RenderReportRequest(consultation=cpb.Consultation(name="x")))


def _answer_without_consultation(c: cpb.Consultation) -> Any:
    return ("AnswerQuestion", rpb.AnswerQuestionRequest(question="Why?"))


def _answer_empty_question(c: cpb.Consultation) -> Any:
    return ("AnswerQuestion", rpb.AnswerQuestionRequest(consultation=c))


def _answer_blank_question(c: cpb.Consultation) -> Any:
    return ("AnswerQuestion", rpb.AnswerQuestionRequest(consultation=c, question=" \n\t "))


def _answer_long_question(c: cpb.Consultation) -> Any:
    question = "x" * (MAX_QUESTION_CHARS + 1)
    return ("AnswerQuestion", rpb.AnswerQuestionRequest(consultation=c, question=question))


def _answer_nothing(c: cpb.Consultation) -> Any:
    return ("AnswerQuestion", rpb.AnswerQuestionRequest())


BAD_REQUESTS: list[tuple[str, Callable[[cpb.Consultation], Any], str, list[str]]] = [
    (
        "render, no consultation",
        _render_without_consultation,
        "MISSING_CONSULTATION",
        ["consultation"],
    ),
    (
        "render, empty consultation",
        _render_empty_consultation,
        "MISSING_CONSULTATION",
        ["consultation.decision"],
    ),
    (
        "answer, no consultation",
        _answer_without_consultation,
        "MISSING_CONSULTATION",
        ["consultation"],
    ),
    ("answer, empty question", _answer_empty_question, "INVALID_QUESTION", ["question"]),
    ("answer, blank question", _answer_blank_question, "INVALID_QUESTION", ["question"]),
    ("answer, question too long", _answer_long_question, "INVALID_QUESTION", ["question"]),
    ("answer, nothing", _answer_nothing, "MISSING_CONSULTATION", ["consultation", "question"]),
]


@pytest.mark.parametrize(
    ("build", "reason", "fields"),
    [pytest.param(b, r, f, id=name) for name, b, r, f in BAD_REQUESTS],
)
async def test_bad_requests_are_invalid_argument(
    stub: Stub,
    qa: dict[str, cpb.Consultation],
    build: Callable[[cpb.Consultation], Any],
    reason: str,
    fields: list[str],
) -> None:
    method, request = build(qa["nit"])
    details = await rejected(getattr(stub, method)(request, timeout=5))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == (reason, DOMAIN)
    assert [f for f, _ in details.field_violations] == fields


# --- with a model ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def model_service(knowledge: Knowledge) -> AsyncIterator[tuple[FakeOpenAI, Stub]]:
    """The service with a model profile pointing at a fresh fake OpenAI-compatible server."""
    async with FakeOpenAI(models=(MODEL,)) as fake:
        profile = ModelProfile(
            provider="openai-compatible",
            model=MODEL,
            base_url=fake.base_url,
            retries=0,
            reasks=0,
            timeout_s=5.0,
        )
        llm = OpenAICompatibleLLM(environ={})
        running: RunningServer | None = None
        try:
            running = await start_server(
                build_spec(knowledge, llm, profile), ServiceSettings(port=0)
            )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                yield fake, Stub(channel)
        finally:
            if running is not None:
                await running.server.stop(None)
            await llm.aclose()


def model_answer(**fields: Any) -> dict[str, Any]:
    return {
        "kind": "ANSWERED",
        "answer": "Potassium can rise with lisinopril: see DDI-003.",
        "section_ids": ["warnings"],
        "passage_ids": [],
        "rule_ids": ["DDI-003"],
    } | fields


async def test_model_answer_with_known_ids_is_used(
    knowledge: Knowledge, qa: dict[str, cpb.Consultation]
) -> None:
    c = qa["sxt-lisinopril"]
    real = sorted(passage_ids(c))[0]
    async with model_service(knowledge) as (fake, stub):
        fake.script(reply(model_answer(passage_ids=[real])))
        response = await stub.AnswerQuestion(
            rpb.AnswerQuestionRequest(consultation=c, question="Does it interact with lisinopril?"),
            timeout=10,
        )
        sent = fake.requests[0]
    assert response.generated_by == MODEL and response.kind == rpb.ANSWER_KIND_ANSWERED
    assert [p.passage_id for p in response.passages] == [real]
    span = next(ct.quoted_span for g in c.groundings for ct in g.citations if ct.passage.id == real)
    assert response.passages[0].quoted_span == span, "the span comes from the consultation"
    system, user = sent["messages"][0]["content"], sent["messages"][-1]["content"]
    assert system.startswith("You answer a prescriber's question")
    assert c.name not in json.dumps(sent), "no record identifier goes to the model"
    assert json.loads(user)["question"] == "Does it interact with lisinopril?"


async def test_model_answer_citing_an_unknown_passage_is_discarded(
    knowledge: Knowledge, qa: dict[str, cpb.Consultation]
) -> None:
    c = qa["sxt-lisinopril"]
    async with model_service(knowledge) as (fake, stub):
        fake.script(reply(model_answer(passage_ids=["idsa-invented-passage"])))
        response = await stub.AnswerQuestion(
            rpb.AnswerQuestionRequest(consultation=c, question="Does it interact with lisinopril?"),
            timeout=10,
        )
    assert response.generated_by == "offline-rules"
    assert "idsa-invented-passage" not in [p.passage_id for p in response.passages]
    assert_answer_ids_exist(response, c, {s.id for s in render(c, "").sections})


async def test_model_failure_falls_back_to_the_offline_answer(
    knowledge: Knowledge, qa: dict[str, cpb.Consultation]
) -> None:
    async with model_service(knowledge) as (fake, stub):
        fake.script(error(500))
        response = await stub.AnswerQuestion(
            rpb.AnswerQuestionRequest(consultation=qa["nit"], question="What is the dose?"),
            timeout=10,
        )
    assert response.generated_by == "offline-rules" and response.kind == rpb.ANSWER_KIND_ANSWERED
    assert "100 mg" in response.answer


async def test_refusals_never_reach_the_model(
    knowledge: Knowledge, qa: dict[str, cpb.Consultation]
) -> None:
    async with model_service(knowledge) as (fake, stub):
        fake.script(reply(model_answer()))
        for question in ("What if she is pregnant?", "What's the weather tomorrow?"):
            response = await stub.AnswerQuestion(
                rpb.AnswerQuestionRequest(consultation=qa["nit"], question=question), timeout=10
            )
            assert response.kind != rpb.ANSWER_KIND_ANSWERED
        assert fake.pending == 1 and not fake.requests
