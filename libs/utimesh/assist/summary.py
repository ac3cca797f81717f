"""What the assistant's tools return: short, structured views of the edge's JSON.

The edge prints proto JSON (proto field names, enums as names such as
`DECISION_RECOMMEND_TREATMENT`). These views keep what a clinician needs first, with enum
values in the cases.json vocabulary (`recommend_treatment`), and never echo the intake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "DRAFT_NOTICE",
    "ConsultationAnswer",
    "ConsultationSummary",
    "answer_view",
    "summary_view",
]

DRAFT_NOTICE = "DRAFT for prescriber sign-off"


class Dose(BaseModel):
    """One active ingredient of a dose."""

    ingredient: str
    amount: float
    unit: str = Field(description='"mg" or "g".')


class Duration(BaseModel):
    """Length of the course."""

    amount: int
    unit: str = Field(description='"days" or "doses".')


class RegimenView(BaseModel):
    """A structured regimen (one of triage's allow-listed regimens)."""

    agent: str = Field(description='e.g. "nitrofurantoin", "trimethoprim_sulfamethoxazole".')
    drug: str
    dose: list[Dose]
    dose_form: str
    route: str = Field(description='"oral".')
    frequency: str = Field(description='"twice_daily", "once_daily" or "single_dose".')
    duration: Duration
    text: str = Field(description="The regimen in one line.")


class RuleFired(BaseModel):
    """One triage rule that fired, in evaluation order."""

    rule_id: str
    title: str
    outcome: str = Field(description='e.g. "select_agent", "refer", "exclude_agent", "plan".')
    detail: str = ""


class RuleWarning(BaseModel):
    """A warning that goes with a recommended treatment."""

    rule_id: str
    text: str


class Concern(BaseModel):
    """One safety concern of the pharmacist review."""

    severity: str = Field(description='"info", "low", "moderate", "high" or "critical".')
    code: str
    text: str
    suggested_action: str = ""
    source: str = Field(description='"deterministic" (always run) or "model".')
    rule_ids: list[str] = Field(default_factory=list)


class ConsultationSummary(BaseModel):
    """The summary of a finished consultation: always a DRAFT for prescriber sign-off."""

    name: str = Field(
        description="The consultation's name; pass it to ask_consultation and get_report."
    )
    profile: str = Field(description="Jurisdiction profile and version, e.g. CA-ON 1.0.0.")
    decision: str = Field(
        description='Triage\'s decision: "recommend_treatment", "no_antibiotics" or "refer".'
    )
    outcome: str = Field(
        description='"agreed", "not_treated", "escalated" (a human must decide) or '
        '"unreviewed" (a review could not be had; the deterministic decision stands).'
    )
    escalation_reason: str | None = None
    needs_prescriber_review: bool
    regimen: RegimenView | None = Field(
        None, description="The recommended regimen; null when there is none."
    )
    rationale: str = Field("", description="Why, in the doctor agent's words.")
    rules_fired: list[RuleFired]
    warnings: list[RuleWarning]
    pharmacist_verdict: str | None = None
    pharmacist_concerns: list[Concern]
    missing_reviews: list[str] = Field(description="Reviews that could not be had.")
    follow_up: list[str] = Field(description="Plain-language follow-up instructions.")
    notice: str = Field(description="Says the result is a DRAFT for prescriber sign-off.")
    report_available: bool = Field(description="Whether get_report has a report to return.")


class ConsultationAnswer(BaseModel):
    """An answer to a question about one consultation, from its report and the evidence."""

    name: str
    kind: str = Field(
        description='"ANSWERED", "CANNOT_ANSWER", "NEEDS_NEW_CONSULTATION" or "OUT_OF_SCOPE".'
    )
    answer: str
    section_ids: list[str] = Field(description="Report sections (anchors) the answer rests on.")
    passage_ids: list[str] = Field(description="Evidence passages the answer cites.")
    rule_ids: list[str] = Field(description="Triage rules the answer cites.")
    generated_by: str = ""


def _short(value: object, prefix: str) -> str | None:
    """`DECISION_RECOMMEND_TREATMENT` -> `recommend_treatment`; unset or UNSPECIFIED -> None."""
    if not isinstance(value, str) or not value or value.endswith("_UNSPECIFIED"):
        return None
    return value.removeprefix(prefix).lower()


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _objs(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _strs(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


_FREQUENCY_WORDS = {
    "twice_daily": "twice daily",
    "once_daily": "once daily",
    "single_dose": "as a single dose",
}


def regimen_view(regimen: Mapping[str, Any]) -> RegimenView | None:
    """The structured regimen with a one-line text, or None when no regimen is set."""
    if not regimen.get("drug"):
        return None
    doses = [
        Dose(
            ingredient=str(d.get("ingredient", "")),
            amount=float(d.get("amount") or 0),
            unit=str(d.get("unit", "")),
        )
        for d in _objs(regimen.get("dose"))
    ]
    frequency = _short(regimen.get("frequency"), "FREQUENCY_") or ""
    route = _short(regimen.get("route"), "ROUTE_") or ""
    duration_json = _obj(regimen.get("duration"))
    duration = Duration(
        amount=int(duration_json.get("amount") or 0),
        unit=_short(duration_json.get("unit"), "DURATION_UNIT_") or "",
    )
    strength = " + ".join(f"{d.ingredient} {d.amount:g} {d.unit}" for d in doses)
    form = str(regimen.get("dose_form", ""))
    text = f"{regimen['drug']}: {strength}" + (f" {form}" if form else "")
    text += " by mouth" if route == "oral" else (f" {route}" if route else "")
    text += f" {_FREQUENCY_WORDS.get(frequency, frequency.replace('_', ' '))}"
    if frequency != "single_dose":
        text += f" for {duration.amount} {duration.unit}"
    return RegimenView(
        agent=_short(regimen.get("agent"), "AGENT_") or "",
        drug=str(regimen["drug"]),
        dose=doses,
        dose_form=form,
        route=route,
        frequency=frequency,
        duration=duration,
        text=text.strip(),
    )


def summary_view(consultation: Mapping[str, Any]) -> ConsultationSummary:
    """The summary of a Consultation as the edge returns it (proto JSON)."""
    triage = _obj(consultation.get("triage"))
    assessment = _obj(consultation.get("assessment"))
    review = _obj(consultation.get("review"))
    notice = str(consultation.get("notice") or "")
    if DRAFT_NOTICE.lower() not in notice.lower():  # the service always says it; make sure
        notice = f"{DRAFT_NOTICE}. {notice}".strip()
    profile = " ".join(str(triage.get(k) or "") for k in ("profile", "profile_version")).strip()
    return ConsultationSummary(
        name=str(consultation.get("name", "")),
        profile=profile,
        decision=_short(consultation.get("decision"), "DECISION_") or "unknown",
        outcome=_short(consultation.get("outcome"), "OUTCOME_") or "unknown",
        escalation_reason=_short(consultation.get("escalation_reason"), "ESCALATION_REASON_"),
        needs_prescriber_review=bool(consultation.get("needs_prescriber_review", True)),
        regimen=regimen_view(_obj(consultation.get("regimen"))),
        rationale=str(assessment.get("referral_rationale") or assessment.get("rationale") or ""),
        rules_fired=[
            RuleFired(
                rule_id=str(r.get("rule_id", "")),
                title=str(r.get("title", "")),
                outcome=_short(r.get("outcome"), "RULE_OUTCOME_") or "",
                detail=str(r.get("detail") or ""),
            )
            for r in _objs(triage.get("rules_fired"))
        ],
        warnings=[
            RuleWarning(rule_id=str(w.get("rule_id", "")), text=str(w.get("text", "")))
            for w in _objs(triage.get("warnings"))
        ],
        pharmacist_verdict=_short(review.get("verdict"), "VERDICT_"),
        pharmacist_concerns=[
            Concern(
                severity=_short(c.get("severity"), "SEVERITY_") or "",
                code=str(c.get("code", "")),
                text=str(c.get("text", "")),
                suggested_action=str(c.get("suggested_action") or ""),
                source=str(c.get("source") or ""),
                rule_ids=_strs(c.get("rule_ids")),
            )
            for c in _objs(review.get("concerns"))
        ],
        missing_reviews=_strs(consultation.get("missing_reviews")),
        follow_up=_strs(_obj(triage.get("follow_up")).get("instructions")),
        notice=notice,
        report_available=bool(consultation.get("report_markdown")),
    )


def answer_view(name: str, answer: Mapping[str, Any]) -> ConsultationAnswer:
    """The view of an AskConsultationResponse."""
    return ConsultationAnswer(
        name=name,
        kind=str(answer.get("kind", "")),
        answer=str(answer.get("answer", "")),
        section_ids=_strs(answer.get("section_ids")),
        passage_ids=_strs(answer.get("passage_ids")),
        rule_ids=_strs(answer.get("rule_ids")),
        generated_by=str(answer.get("generated_by") or ""),
    )
