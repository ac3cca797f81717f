"""Plain words for contract values (decisions, agents, regimens, labels) and markdown escaping,
shared by the renderer and the answerer so that both say the same thing the same way."""

from __future__ import annotations

import re

from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb

DECISIONS: dict[int, str] = {
    pb.DECISION_UNSPECIFIED: "unspecified",
    pb.DECISION_RECOMMEND_TREATMENT: "recommend treatment",
    pb.DECISION_NO_ANTIBIOTICS: "no antibiotics",
    pb.DECISION_REFER: "refer",
}

OUTCOMES: dict[int, str] = {
    cpb.OUTCOME_UNSPECIFIED: "unspecified",
    cpb.OUTCOME_AGREED: "agreed (doctor and pharmacist agreed on an allowed regimen)",
    cpb.OUTCOME_NOT_TREATED: "not treated (triage decided no prescription; the agents explained it)",
    cpb.OUTCOME_ESCALATED: "escalated to a human",
    cpb.OUTCOME_UNREVIEWED: "UNREVIEWED (a review could not be had)",
}

ESCALATIONS: dict[int, str] = {
    cpb.ESCALATION_REASON_UNSPECIFIED: "",
    cpb.ESCALATION_REASON_PHARMACIST_REJECTED: "the pharmacist rejected the plan",
    cpb.ESCALATION_REASON_NO_AGREEMENT: "no agreement within the allowed rounds",
    cpb.ESCALATION_REASON_AGENT_CONTRADICTED_TRIAGE: (
        "the doctor proposed a prescription although triage decided otherwise"
    ),
}

# Short codes as in the profiles' DRUG_ORDER, and the names a prescriber reads.
AGENT_CODES: dict[int, str] = {
    pb.AGENT_NITROFURANTOIN: "NIT",
    pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE: "SXT",
    pb.AGENT_TRIMETHOPRIM: "TMP",
    pb.AGENT_FOSFOMYCIN: "FOS",
}
AGENT_NAMES: dict[int, str] = {
    pb.AGENT_NITROFURANTOIN: "nitrofurantoin",
    pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE: "TMP-SMX (trimethoprim-sulfamethoxazole)",
    pb.AGENT_TRIMETHOPRIM: "trimethoprim",
    pb.AGENT_FOSFOMYCIN: "fosfomycin",
}

ROUTES: dict[int, str] = {pb.ROUTE_UNSPECIFIED: "unspecified route", pb.ROUTE_ORAL: "oral (PO)"}
FREQUENCIES: dict[int, str] = {
    pb.FREQUENCY_UNSPECIFIED: "unspecified frequency",
    pb.FREQUENCY_TWICE_DAILY: "twice daily (BID)",
    pb.FREQUENCY_ONCE_DAILY: "once daily",
    pb.FREQUENCY_SINGLE_DOSE: "single dose",
}

RULE_OUTCOMES: dict[int, str] = {
    pb.RULE_OUTCOME_UNSPECIFIED: "unspecified",
    pb.RULE_OUTCOME_REFER: "refer",
    pb.RULE_OUTCOME_REFER_URGENT: "refer urgently",
    pb.RULE_OUTCOME_NO_ANTIBIOTICS: "no antibiotics",
    pb.RULE_OUTCOME_CONTINUE: "continue",
    pb.RULE_OUTCOME_ANNOTATION: "annotation",
    pb.RULE_OUTCOME_NOTE: "note for the prescriber",
    pb.RULE_OUTCOME_EXCLUDE_AGENT: "exclude agent",
    pb.RULE_OUTCOME_SELECT_AGENT: "select agent",
    pb.RULE_OUTCOME_WARNING: "warning",
    pb.RULE_OUTCOME_PLAN: "plan",
}
# Rule outcomes that decide against a prescription.
DECIDING_OUTCOMES = frozenset(
    {pb.RULE_OUTCOME_REFER, pb.RULE_OUTCOME_REFER_URGENT, pb.RULE_OUTCOME_NO_ANTIBIOTICS}
)

URGENCIES: dict[int, str] = {
    pb.REFERRAL_URGENCY_UNSPECIFIED: "",
    pb.REFERRAL_URGENCY_ROUTINE: "routine",
    pb.REFERRAL_URGENCY_URGENT: "URGENT (same day)",
}

VERDICTS: dict[int, str] = {
    apb.VERDICT_UNSPECIFIED: "no verdict",
    apb.VERDICT_APPROVE: "approve",
    apb.VERDICT_APPROVE_WITH_MONITORING: "approve with monitoring",
    apb.VERDICT_REQUEST_CHANGE: "request change",
    apb.VERDICT_REJECT: "REJECT",
}
SEVERITIES: dict[int, str] = {
    apb.SEVERITY_UNSPECIFIED: "unspecified",
    apb.SEVERITY_INFO: "info",
    apb.SEVERITY_LOW: "low",
    apb.SEVERITY_MODERATE: "moderate",
    apb.SEVERITY_HIGH: "HIGH",
    apb.SEVERITY_CRITICAL: "CRITICAL",
}
CLAIM_KINDS: dict[int, str] = {
    apb.CLAIM_KIND_UNSPECIFIED: "claim",
    apb.CLAIM_KIND_DIAGNOSIS: "diagnosis",
    apb.CLAIM_KIND_TREATMENT: "treatment",
    apb.CLAIM_KIND_SAFETY: "safety",
    apb.CLAIM_KIND_REFERRAL: "referral",
    apb.CLAIM_KIND_FOLLOW_UP: "follow-up",
}
SUPPORT: dict[int, str] = {
    epb.SUPPORT_LABEL_UNSPECIFIED: "⚠ NOT GROUNDED",
    epb.SUPPORT_LABEL_SUPPORTS: "supports",
    epb.SUPPORT_LABEL_PARTIAL: "partial support",
    epb.SUPPORT_LABEL_CONTRADICTS: "⚠ CONTRADICTS",
    epb.SUPPORT_LABEL_NOT_FOUND: "⚠ NOT FOUND (unsupported)",
}
# Labels whose passages an answer may cite as support.
SUPPORTING = frozenset({epb.SUPPORT_LABEL_SUPPORTS, epb.SUPPORT_LABEL_PARTIAL})


def name(table: dict[int, str], value: int) -> str:
    """The word for an enum value; an unknown (newer) value is shown as its number."""
    return table.get(value, f"unknown ({value})")


def amount(value: float) -> str:
    """160.0 -> "160", 0.5 -> "0.5"."""
    return f"{value:g}"


def dose_words(regimen: pb.Regimen) -> str:
    """Every ingredient with its amount: "trimethoprim 160 mg + sulfamethoxazole 800 mg"."""
    return " + ".join(f"{d.ingredient} {amount(d.amount)} {d.unit}" for d in regimen.dose)


def duration_words(regimen: pb.Regimen) -> str:
    n = regimen.duration.amount
    if regimen.duration.unit == pb.DURATION_UNIT_DOSES:
        return f"{n} dose" if n == 1 else f"{n} doses"
    if regimen.duration.unit == pb.DURATION_UNIT_DAYS:
        return f"{n} day" if n == 1 else f"{n} days"
    return f"{n} (unspecified unit)"


def regimen_words(regimen: pb.Regimen) -> str:
    """One line a prescriber reads: drug, dose per ingredient, form, route, frequency, length."""
    return (
        f"{regimen.drug} ({dose_words(regimen)}), {regimen.dose_form}, "
        f"{name(ROUTES, regimen.route)}, {name(FREQUENCIES, regimen.frequency)}, "
        f"for {duration_words(regimen)}"
    )


_SPACE = re.compile(r"\s+")
# Anything that needs work; most texts have none and are returned as they are.
_SPECIAL = re.compile(r"[&<>|\\\t\n\r\f\v]|\s\s|^\s|\s$")


def inline(text: str) -> str:
    """Text for one markdown line: whitespace collapsed, HTML metacharacters escaped (free text
    from a patient or a model is data and must not become markup)."""
    if not _SPECIAL.search(text):
        return text
    text = _SPACE.sub(" ", text).strip()
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cell(text: str) -> str:
    """Text for one markdown table cell: escaped, pipes and backslashes escaped, line breaks
    kept as <br> so that a cell never breaks its row."""
    if not _SPECIAL.search(text):
        return text or "—"
    lines = [inline(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    joined = "<br>".join(line for line in lines if line)
    return joined.replace("\\", "\\\\").replace("|", "\\|") or "—"


def mermaid_label(text: str) -> str:
    """Text for a quoted mermaid node label (quotes and markup neutralised)."""
    text = _SPACE.sub(" ", text).strip()
    for raw, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return text
