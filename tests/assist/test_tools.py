"""The three tools in-process (the SDK's in-memory client) over a scripted edge: what they
return, and which mistakes are stopped before anything reaches the edge."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from tests.factories import patient
from utimesh.assist import EdgeError, build_server
from utimesh.assist.summary import regimen_view, summary_view

REPORT = "# UTI consultation report\n\n**DRAFT for prescriber sign-off.**\n"

FOSFOMYCIN = {
    "agent": "AGENT_FOSFOMYCIN",
    "drug": "fosfomycin trometamol",
    "dose": [{"ingredient": "fosfomycin", "amount": 3, "unit": "g"}],
    "dose_form": "granules for oral solution",
    "route": "ROUTE_ORAL",
    "frequency": "FREQUENCY_SINGLE_DOSE",
    "duration": {"amount": 1, "unit": "DURATION_UNIT_DOSES"},
}

CONSULTATION: dict[str, Any] = {
    "name": "consultations/c-1",
    "outcome": "OUTCOME_ESCALATED",
    "escalation_reason": "ESCALATION_REASON_PHARMACIST_REJECTED",
    "decision": "DECISION_RECOMMEND_TREATMENT",
    "regimen": FOSFOMYCIN,
    "needs_prescriber_review": True,
    "missing_reviews": ["pharmacist model"],
    "triage": {
        "profile": "CA-ON",
        "profile_version": "1.0.0",
        "rules_fired": [
            {
                "rule_id": "RX-SEL-FOS",
                "title": "Select fosfomycin",
                "outcome": "RULE_OUTCOME_SELECT_AGENT",
            }
        ],
        "warnings": [{"rule_id": "W-1", "text": "Watch."}],
        "follow_up": {"instructions": ["Reassess at 48-72 h."]},
    },
    "assessment": {"rationale": "Because."},
    "review": {
        "verdict": "VERDICT_REJECT",
        "concerns": [
            {
                "severity": "SEVERITY_HIGH",
                "code": "INTERACTION",
                "text": "An interaction.",
                "source": "deterministic",
                "rule_ids": ["DDI-001"],
            }
        ],
    },
    "notice": "Agent text generated offline.",
    "report_markdown": REPORT,
    "report_sha256": hashlib.sha256(REPORT.encode()).hexdigest(),
    "intake": {"age": 30},
}


class ScriptedEdge:
    """Records calls; answers with `consultation`, or raises `error`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.consultation = copy.deepcopy(CONSULTATION)
        self.error: EdgeError | None = None

    def _answer(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if self.error:
            raise self.error

    async def create_consultation(self, intake: dict[str, Any], profile: str) -> dict[str, Any]:
        self._answer("create", intake, profile)
        return self.consultation

    async def get_consultation(self, name: str) -> dict[str, Any]:
        self._answer("get", name)
        return self.consultation

    async def ask(self, name: str, question: str) -> dict[str, Any]:
        self._answer("ask", name, question)
        return {"kind": "ANSWERED", "answer": "Because.", "rule_ids": ["RX-SEL-FOS"]}


@pytest.fixture
def edge() -> ScriptedEdge:
    return ScriptedEdge()


async def call(edge: ScriptedEdge, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    """One tool call through a fresh in-memory client session (anyio scopes stay in the test's
    own task, which an async fixture cannot promise)."""
    async with Client(build_server(edge)) as client:
        return await client.call_tool(tool, arguments)


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_consult_sends_the_converted_intake_and_summarises(edge: ScriptedEdge) -> None:
    result = await call(edge, "consult_patient", {"patient": patient(), "profile": "CA-AB"})
    assert not result.is_error, text_of(result)
    (method, (intake, profile)), *_ = edge.calls
    assert method == "create" and profile == "CA-AB" and intake["sex"] == "SEX_FEMALE"
    s = result.structured_content
    assert s is not None
    assert s["decision"] == "recommend_treatment"
    assert s["outcome"] == "escalated" and s["escalation_reason"] == "pharmacist_rejected"
    assert s["pharmacist_verdict"] == "reject"
    assert s["pharmacist_concerns"][0]["severity"] == "high"
    assert s["missing_reviews"] == ["pharmacist model"]
    assert s["rules_fired"] == [
        {
            "rule_id": "RX-SEL-FOS",
            "title": "Select fosfomycin",
            "outcome": "select_agent",
            "detail": "",
        }
    ]
    assert s["follow_up"] == ["Reassess at 48-72 h."]
    # A notice without the draft words is never passed on as it is.
    assert s["notice"] == "DRAFT for prescriber sign-off. Agent text generated offline."
    assert "intake" not in s


async def test_an_invalid_patient_never_reaches_the_edge(edge: ScriptedEdge) -> None:
    result = await call(edge, "consult_patient", {"patient": patient(age="30", mrn="A1")})
    assert result.is_error
    assert "intake.mrn: is not an intake field" in text_of(result)
    assert "intake.age: must be a whole number" in text_of(result)
    assert edge.calls == []


async def test_a_patient_that_is_not_an_object_is_refused(edge: ScriptedEdge) -> None:
    result = await call(edge, "consult_patient", {"patient": "30F dysuria"})
    assert result.is_error and "patient" in text_of(result)


async def test_edge_errors_become_tool_errors(edge: ScriptedEdge) -> None:
    edge.error = EdgeError(429, "Too Many Requests", retry_after="60")
    result = await call(edge, "get_report", {"name": "consultations/c-1"})
    assert result.is_error
    assert text_of(result) == (
        "Error executing tool get_report: rate limited (HTTP 429): Too Many Requests. "
        "Too many requests from this client. Retry after 60 s."
    )


async def test_ask_returns_the_cited_answer(edge: ScriptedEdge) -> None:
    result = await call(edge, "ask_consultation", {"name": "c-1", "question": "Why?"})
    assert not result.is_error, text_of(result)
    assert edge.calls == [("ask", ("consultations/c-1", "Why?"))]
    assert result.structured_content == {
        "name": "consultations/c-1",
        "kind": "ANSWERED",
        "answer": "Because.",
        "section_ids": [],
        "passage_ids": [],
        "rule_ids": ["RX-SEL-FOS"],
        "generated_by": "",
    }


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"name": "consultations/a/b", "question": "Why?"}, "name: must be a consultation name"),
        ({"name": "c-1", "question": "  "}, "question: must not be empty"),
    ],
)
async def test_ask_refuses_bad_arguments(
    edge: ScriptedEdge, arguments: dict[str, str], expected: str
) -> None:
    result = await call(edge, "ask_consultation", arguments)
    assert result.is_error and expected in text_of(result)
    assert edge.calls == []


async def test_report_is_the_markdown_checked_against_its_hash(edge: ScriptedEdge) -> None:
    result = await call(edge, "get_report", {"name": "consultations/c-1"})
    assert not result.is_error and text_of(result) == REPORT
    assert result.structured_content is None  # plain markdown

    edge.consultation["report_sha256"] = "0" * 64
    result = await call(edge, "get_report", {"name": "consultations/c-1"})
    assert result.is_error and "SHA-256" in text_of(result)

    edge.consultation["report_markdown"] = ""
    result = await call(edge, "get_report", {"name": "consultations/c-1"})
    assert result.is_error and "report service was unavailable" in text_of(result)


def test_a_single_dose_regimen_reads_naturally() -> None:
    view = regimen_view(FOSFOMYCIN)
    assert view is not None
    assert view.text == (
        "fosfomycin trometamol: fosfomycin 3 g granules for oral solution by mouth as a single dose"
    )
    assert (view.frequency, view.duration.unit, view.agent) == (
        "single_dose",
        "doses",
        "fosfomycin",
    )


def test_a_consultation_without_regimen_or_review() -> None:
    s = summary_view(
        {
            "name": "consultations/r",
            "decision": "DECISION_REFER",
            "outcome": "OUTCOME_NOT_TREATED",
            "escalation_reason": "ESCALATION_REASON_UNSPECIFIED",
            "notice": "DRAFT for prescriber sign-off.",
        }
    )
    assert s.regimen is None and s.escalation_reason is None and s.pharmacist_verdict is None
    assert s.decision == "refer" and s.outcome == "not_treated" and not s.report_available
