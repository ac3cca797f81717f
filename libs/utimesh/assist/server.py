"""The utimesh MCP server: three tools over the REST edge.

    consult_patient(patient, profile)   run a consultation; its summary and name
    ask_consultation(name, question)    a cited answer about it
    get_report(name)                    its markdown report

The server holds no clinical logic and no state: every call goes to the edge with the bearer
token, and the edge's answer (or error) is passed on. Errors are tool errors (`isError`) whose
text names the field or the reason; the token never appears in them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Protocol, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field, WithJsonSchema

from utimesh.assist.edge import EdgeError, consultation_id
from utimesh.assist.patient import PATIENT_SCHEMA, PatientError, intake_json
from utimesh.assist.summary import (
    DRAFT_NOTICE,
    ConsultationAnswer,
    ConsultationSummary,
    answer_view,
    summary_view,
)

__all__ = ["ConsultationsApi", "build_server"]

_T = TypeVar("_T")

INSTRUCTIONS = f"""\
utimesh runs pharmacist-led consultations for uncomplicated urinary tract infection: a
deterministic triage (the rules decide), a doctor agent and a pharmacist agent that review it,
and a report that cites its evidence. Every result is a {DRAFT_NOTICE}: present it as a draft
for a prescriber to review, never as a prescription. Patient data goes to the utimesh edge as
given; it must carry no identifiers. Use consult_patient first, then ask_consultation and
get_report with the consultation name it returns."""

CONSULT_DESCRIPTION = f"""\
Run a consultation for one patient and return its summary: triage's decision
(recommend_treatment, no_antibiotics or refer), the outcome of the doctor/pharmacist review
(agreed, not_treated, escalated, unreviewed), the structured regimen if one is recommended,
the rules that fired, warnings, the pharmacist's concerns, reviews that could not be had,
follow-up instructions, and the notice. Every result is a {DRAFT_NOTICE}, not a
prescription. Keep the returned `name` for ask_consultation and get_report.

`patient` is one patient in the cases.json `patient` format (schema in the input schema), e.g.
{{"encounter_type": "initial", "assessment_date": "2026-03-01", "age": 30, "sex": "female",
"pregnancy_status": "not_pregnant", "gestational_weeks": null, "lactating": false,
"egfr_ml_min": null, "urine_test_positive": null,
"symptoms": {{"dysuria": true, "urgency": false, "frequency": false, "suprapubic_pain": false,
"hematuria": false, "vaginal_discharge_or_itch": false, "dyspareunia": false, "confusion": false,
"delirium": false, "falls_or_functional_decline": false, "cloudy_or_malodorous_urine": false,
"duration_days": 2}},
"red_flags": {{"fever": false, "rigors_chills": false, "flank_or_back_pain": false,
"nausea_vomiting": false, "systemic_illness": false}},
"history": {{"catheter": false, "neurogenic_bladder": false, "stones": false,
"abnormal_urinary_tract": false, "renal_dysfunction": false, "immunocompromised": false,
"diabetes": false, "diabetes_poorly_controlled": false,
"urologic_instrumentation_last_30d": false, "hospitalized_last_90d": false,
"g6pd_deficiency": false, "megaloblastic_anemia_folate_deficiency": false,
"prior_nitrofurantoin_pulmonary_or_hepatic_reaction": false,
"breastfeeding_infant_under_1_month": false, "allergies": [], "medications": [],
"recent_antibiotics": []}},
"recurrence": {{"prior_episodes": []}},
"follow_up": null}}
null or absent means "not asked": a required question left unanswered makes triage refer
for missing data (DATA-001), so answer every question you know; [] means none. Entries:
recent_antibiotics [{{"drug": "amoxicillin", "days_ago": 40}}], prior_episodes
[{{"onset_date": "2025-11-02", "treated": true, "treatment_end_date": "2025-11-07"}}],
allergies and medications as free text. At a follow_up encounter, `follow_up` holds
hours_since_treatment_start, improved, worsened, serious_adverse_effect and current_regimen.

The intake has NO identifiers and must not get any: do not put names, initials, dates of
birth, health-card, record or phone numbers, addresses or any other identifier anywhere in
it, free-text allergies and medications included. Unknown fields are rejected. The patient
is sent to the utimesh edge as given.

`profile` is the jurisdiction's rule profile (CA-ON by default; CA-AB is also available).
Errors name the field that was wrong, e.g. intake.age."""

ASK_DESCRIPTION = """\
Ask a question about a consultation (e.g. "Why this antibiotic?", "What should the patient
watch for?"). The answer comes from the consultation's report and cited evidence, never from
new clinical reasoning: `kind` is ANSWERED, CANNOT_ANSWER, NEEDS_NEW_CONSULTATION (the question
changes the patient's facts: run consult_patient again) or OUT_OF_SCOPE. Returns the answer
with the report sections, evidence passages and rules it cites. Do not put identifiers in the
question."""

REPORT_DESCRIPTION = f"""\
The markdown report of a consultation: the {DRAFT_NOTICE} notice, triage's decision and the
rules behind it, the plan, excluded agents, the doctor's and pharmacist's review, follow-up
and the cited evidence. Pass the name consult_patient returned."""

_NAME = Annotated[
    str,
    Field(description="The consultation's name, 'consultations/{id}', from consult_patient."),
]


class ConsultationsApi(Protocol):
    """What the tools need from the edge (implemented by `EdgeClient`)."""

    async def create_consultation(self, intake: dict[str, Any], profile: str) -> dict[str, Any]:
        """Run a consultation; the Consultation JSON."""
        ...

    async def get_consultation(self, name: str) -> dict[str, Any]:
        """A stored consultation; the Consultation JSON."""
        ...

    async def ask(self, name: str, question: str) -> dict[str, Any]:
        """A question about a consultation; the AskConsultationResponse JSON."""
        ...


async def _edge(call: Awaitable[_T]) -> _T:
    """Await an edge call; its failure becomes a tool error with the same text."""
    try:
        return await call
    except EdgeError as exc:
        raise ToolError(str(exc)) from None


def _name(name: str) -> str:
    """The canonical consultation name, or a tool error naming the argument."""
    try:
        return f"consultations/{consultation_id(name)}"
    except ValueError as exc:
        raise ToolError(f"name: {exc}") from None


def _version() -> str:
    try:
        return version("utimesh")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


def build_server(edge: ConsultationsApi) -> MCPServer:
    """The MCP server with its three tools, calling `edge`."""
    server: MCPServer = MCPServer(
        name="utimesh",
        title="utimesh: pharmacist UTI consultations",
        instructions=INSTRUCTIONS,
        version=_version(),
        log_level="WARNING",
    )

    @server.tool(
        name="consult_patient",
        title="Run a UTI consultation",
        description=CONSULT_DESCRIPTION,
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )
    async def consult_patient(
        patient: Annotated[dict[str, Any], WithJsonSchema(PATIENT_SCHEMA)],
        profile: Annotated[
            str, Field(description="Jurisdiction rule profile, e.g. CA-ON (default) or CA-AB.")
        ] = "CA-ON",
    ) -> ConsultationSummary:
        """Run a consultation for one patient; its summary."""
        try:
            intake = intake_json(patient)
        except PatientError as exc:
            raise ToolError(f"invalid patient: {exc}") from None
        consultation = await _edge(edge.create_consultation(intake, profile))
        return summary_view(consultation)

    @server.tool(
        name="ask_consultation",
        title="Ask about a consultation",
        description=ASK_DESCRIPTION,
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def ask_consultation(
        name: _NAME,
        question: Annotated[str, Field(description="The question, in plain language.")],
    ) -> ConsultationAnswer:
        """Answer a question about a consultation."""
        canonical = _name(name)
        if not question.strip():
            raise ToolError("question: must not be empty")
        return answer_view(canonical, await _edge(edge.ask(canonical, question)))

    @server.tool(
        name="get_report",
        title="Get a consultation's report",
        description=REPORT_DESCRIPTION,
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
        structured_output=False,
    )
    async def get_report(name: _NAME) -> str:
        """The markdown report of a consultation."""
        canonical = _name(name)
        consultation = await _edge(edge.get_consultation(canonical))
        markdown = str(consultation.get("report_markdown") or "")
        if not markdown:
            raise ToolError(
                f"no report for {canonical}: the report service was unavailable when it ran"
            )
        expected = str(consultation.get("report_sha256") or "")
        if expected and hashlib.sha256(markdown.encode()).hexdigest() != expected:
            raise ToolError(f"the report of {canonical} does not match its recorded SHA-256")
        return markdown

    return server
