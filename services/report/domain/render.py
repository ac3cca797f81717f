"""Deterministic markdown report of one consultation, for a prescriber to sign.

Same input, same bytes: no clock, no random ids, nothing from the environment; every list is
printed in the order the consultation holds it (which is itself deterministic) or sorted.
Every section has a stable anchor (`<a id="...">`) that answers cite.

The consultation message does not carry the intake. When the caller has it (`intake`), the
patient snapshot prints it field by field; otherwise the snapshot prints what the consultation
records about the patient (the doctor's summary and the rules that matched) and says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.report.domain.words import (
    AGENT_CODES,
    AGENT_NAMES,
    CLAIM_KINDS,
    DECIDING_OUTCOMES,
    DECISIONS,
    ESCALATIONS,
    FREQUENCIES,
    OUTCOMES,
    ROUTES,
    RULE_OUTCOMES,
    SEVERITIES,
    SUPPORT,
    URGENCIES,
    VERDICTS,
    cell,
    dose_words,
    duration_words,
    inline,
    mermaid_label,
    name,
    regimen_words,
)
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb

RENDERER = "utimesh report renderer v1 (offline, deterministic)"
DRAFT_LINE = "DRAFT for prescriber sign-off"


@dataclass(frozen=True, slots=True)
class Section:
    """A report section: its stable anchor and its title."""

    id: str
    title: str


@dataclass(frozen=True, slots=True)
class Rendered:
    """The report: markdown, its SHA-256 (UTF-8, hex) and its sections in order."""

    markdown: str
    sha256: str
    sections: tuple[Section, ...]

    def section_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.sections)

    def section(self, section_id: str) -> Section | None:
        return next((s for s in self.sections if s.id == section_id), None)


# Stable anchors. Answers cite these ids; tests and clients may link to them.
DRAFT = Section("draft-notice", "Draft notice")
DEGRADED = Section("degraded-review", "WARNING: incomplete review")
PATIENT = Section("patient", "Patient snapshot")
DECISION = Section("decision", "Decision and rules fired")
ASSESSMENT = Section("assessment", "Clinical assessment")
PLAN = Section("plan", "Plan")
EXCLUDED = Section("excluded-agents", "Excluded agents")
WARNINGS = Section("warnings", "Warnings")
DELIBERATION = Section("deliberation", "Deliberation transcript")
CONCERNS = Section("pharmacist-concerns", "Pharmacist's concerns")
MONITORING = Section("monitoring-counselling", "Monitoring and counselling")
EVIDENCE = Section("evidence", "Evidence")
FOLLOW_UP = Section("follow-up", "Follow-up and safety-netting")
DECISION_PATH = Section("decision-path", "Decision path")
VERSIONS = Section("versions", "Versions")
SIGN_OFF = Section("sign-off", "Prescriber sign-off")


def render(
    consultation: cpb.Consultation, corpus_version: str, intake: pb.Intake | None = None
) -> Rendered:
    """The report of `consultation`. `corpus_version` is the evidence corpus the groundings
    came from (the consultation's own `corpus_version` is used when empty). Pure."""
    c = consultation
    if intake is None and c.HasField("intake"):
        intake = c.intake
    parts: list[tuple[Section, list[str]]] = [(DRAFT, _draft(c))]
    if c.missing_reviews:
        parts.append((DEGRADED, _degraded(c)))
    parts += [
        (PATIENT, _patient(c, intake)),
        (DECISION, _decision(c)),
        (ASSESSMENT, _assessment(c)),
        (_plan_section(c), _plan(c)),
        (EXCLUDED, _excluded(c)),
        (WARNINGS, _warnings(c)),
        (DELIBERATION, _deliberation(c)),
        (CONCERNS, _concerns(c)),
        (MONITORING, _monitoring(c)),
        (EVIDENCE, _evidence(c)),
        (FOLLOW_UP, _follow_up(c)),
        (DECISION_PATH, _decision_path(c)),
        (VERSIONS, _versions(c, corpus_version or c.corpus_version)),
        (SIGN_OFF, _sign_off()),
    ]
    lines = [
        "# UTI consultation report",
        "",
        f"**{DRAFT_LINE}.** Consultation `{inline(c.name) or 'unnamed'}`"
        + (f", created {inline(c.create_time)}" if c.create_time else "")
        + ".",
        "",
    ]
    for number, (section, body) in enumerate(parts, start=1):
        lines += [f'<a id="{section.id}"></a>', "", f"## {number}. {section.title}", ""]
        lines += body
        lines.append("")
    markdown = "\n".join(lines).rstrip("\n") + "\n"
    return Rendered(
        markdown=markdown,
        sha256=hashlib.sha256(markdown.encode("utf-8")).hexdigest(),
        sections=tuple(section for section, _ in parts),
    )


# --- helpers ----------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GFM table; every cell escaped."""
    out = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def _bullets(items: Iterable[str], empty: str) -> list[str]:
    out = [f"- {inline(i)}" for i in items if i.strip()]
    return out or [f"- {empty}"]


def _rule_hits(c: cpb.Consultation) -> list[pb.RuleHit]:
    """Every rule that fired, then the exclusions seen only in the agent evaluations."""
    hits = list(c.triage.rules_fired)
    seen = {h.rule_id for h in hits}
    for evaluation in c.triage.agent_evaluations:
        for hit in evaluation.exclusions:
            if hit.rule_id not in seen:
                seen.add(hit.rule_id)
                hits.append(hit)
    return hits


def _runs(c: cpb.Consultation) -> list[tuple[str, apb.AgentRun]]:
    """(actor, run) for every transcript entry produced by an agent, in order."""
    return [(e.actor, e.run) for e in c.transcript if e.HasField("run")]


# --- sections ---------------------------------------------------------------------------------


def _draft(c: cpb.Consultation) -> list[str]:
    lines = [f"> **{DRAFT_LINE}.** Nothing in this report is a prescription until signed."]
    if c.notice:
        lines += [">", f"> {inline(c.notice)}"]
    if c.needs_prescriber_review:
        lines += [">", "> **A prescriber must review this consultation before anything is done.**"]
    return lines


def _degraded(c: cpb.Consultation) -> list[str]:
    missing = ", ".join(inline(m) for m in c.missing_reviews)
    lines = [
        f"> **⚠ NOT FULLY REVIEWED.** Missing review(s): **{missing}**.",
        ">",
        "> The deterministic triage decision stands, but it was not checked by every reviewer. "
        "Do not treat this report as reviewed; check the missing part yourself before signing.",
    ]
    reasons = [e.summary for e in c.transcript if e.action == "degrade" and e.summary]
    if c.review.model_review_missing_reason:
        reasons.append(f"pharmacist model review missing ({c.review.model_review_missing_reason})")
    if reasons:
        lines += [">", *(f"> - {inline(r)}" for r in reasons)]
    return lines


_SYMPTOMS = (
    ("dysuria", "dysuria"),
    ("urgency", "urgency"),
    ("frequency", "frequency"),
    ("suprapubic_pain", "suprapubic pain"),
    ("hematuria", "visible hematuria"),
    ("vaginal_discharge_or_itch", "vaginal discharge or itch"),
    ("dyspareunia", "dyspareunia"),
    ("confusion", "confusion"),
    ("delirium", "delirium"),
    ("falls_or_functional_decline", "falls or functional decline"),
    ("cloudy_or_malodorous_urine", "cloudy or malodorous urine"),
)
_RED_FLAGS = (
    ("fever", "fever"),
    ("rigors_chills", "rigors or chills"),
    ("flank_or_back_pain", "flank or back pain"),
    ("nausea_vomiting", "nausea or vomiting"),
    ("systemic_illness", "systemic illness"),
)
_HISTORY = (
    ("catheter", "catheter"),
    ("neurogenic_bladder", "neurogenic bladder"),
    ("stones", "stones"),
    ("abnormal_urinary_tract", "abnormal urinary tract"),
    ("renal_dysfunction", "renal dysfunction"),
    ("immunocompromised", "immunocompromised"),
    ("diabetes", "diabetes"),
    ("diabetes_poorly_controlled", "diabetes, poorly controlled"),
    ("urologic_instrumentation_last_30d", "urologic instrumentation in the last 30 days"),
    ("hospitalized_last_90d", "hospitalised in the last 90 days"),
    ("g6pd_deficiency", "G6PD deficiency"),
    ("megaloblastic_anemia_folate_deficiency", "megaloblastic anaemia / folate deficiency"),
    (
        "prior_nitrofurantoin_pulmonary_or_hepatic_reaction",
        "prior nitrofurantoin pulmonary or hepatic reaction",
    ),
    ("breastfeeding_infant_under_1_month", "breastfeeding an infant under 1 month"),
)


def _enum_word(enum: type[object], value: int, prefix: str) -> str:
    """ "SEX_FEMALE" -> "female"; a value this version does not know is shown as its number."""
    try:
        raw: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return f"unknown ({value})"
    return raw.removeprefix(prefix).replace("_", " ").lower()


def _flags(msg: object, names: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(present, not asked) among optional booleans."""
    present = [label for field, label in names if getattr(msg, field)]
    unasked = [label for field, label in names if not msg.HasField(field)]  # type: ignore[attr-defined]
    return present, unasked


def _free_text(has: bool, entries: Sequence[str]) -> str:
    if not has:
        return "not recorded"
    return "; ".join(inline(e) for e in entries) if entries else "none known"


def _patient(c: cpb.Consultation, intake: pb.Intake | None) -> list[str]:
    if intake is not None:
        return _patient_from_intake(intake, c)
    return _patient_from_consultation(c)


def _patient_from_intake(i: pb.Intake, c: cpb.Consultation) -> list[str]:
    """Every snapshot field from the intake as recorded (it holds no identifiers)."""
    unknown = "not recorded"
    sex = _enum_word(pb.Sex, i.sex, "SEX_") if i.HasField("sex") else unknown
    pregnancy = (
        _enum_word(pb.PregnancyStatus, i.pregnancy_status, "PREGNANCY_STATUS_")
        if i.HasField("pregnancy_status")
        else unknown
    )
    if i.HasField("gestational_weeks"):
        pregnancy += f", {i.gestational_weeks} weeks of gestation"
    lactating = ("yes" if i.lactating else "no") if i.HasField("lactating") else unknown
    kidney = f"{i.egfr_ml_min:g} mL/min" if i.HasField("egfr_ml_min") else "not known"
    urine = (
        ("positive" if i.urine_test_positive else "negative")
        if i.HasField("urine_test_positive")
        else "not done"
    )
    symptoms, symptoms_unasked = _flags(i.symptoms, _SYMPTOMS)
    duration = (
        f"{i.symptoms.duration_days} day(s)"
        if i.symptoms.HasField("duration_days")
        else "not known"
    )
    flags, flags_unasked = _flags(i.red_flags, _RED_FLAGS)
    history, _ = _flags(i.history, _HISTORY)
    h = i.history
    antibiotics = (
        "; ".join(
            inline(a.drug) + (f" ({a.days_ago} days ago)" if a.HasField("days_ago") else "")
            for a in h.recent_antibiotics.entries
        )
        or "none"
        if h.HasField("recent_antibiotics")
        else unknown
    )
    episodes = str(len(i.recurrence.prior_episodes)) if i.HasField("recurrence") else "not asked"
    encounter = (
        _enum_word(pb.EncounterType, i.encounter_type, "ENCOUNTER_TYPE_")
        if i.HasField("encounter_type")
        else unknown
    )
    rows = [
        ("Encounter", f"{encounter}, assessed {i.assessment_date or 'date not recorded'}"),
        ("Age", f"{i.age} years" if i.HasField("age") else unknown),
        ("Sex", sex),
        ("Pregnancy", pregnancy),
        ("Lactating", lactating),
        ("Kidney function", kidney),
        ("Urine test", urine),
        ("Symptoms present", ", ".join(symptoms) or "none"),
        ("Symptom duration", duration),
        ("Red flags present", ", ".join(flags) or "none"),
        ("Relevant history", ", ".join(history) or "none recorded"),
        ("Allergies (as recorded)", _free_text(h.HasField("allergies"), h.allergies.entries)),
        (
            "Medications (as recorded)",
            _free_text(h.HasField("medications"), h.medications.entries),
        ),
        ("Recent systemic antibiotics", antibiotics),
        ("Prior UTI episodes", episodes),
    ]
    unasked = symptoms_unasked + flags_unasked
    if unasked:
        rows.append(("Not asked", ", ".join(unasked)))
    if c.triage.missing_fields:
        rows.append(("Missing answers (DATA-001)", ", ".join(c.triage.missing_fields)))
    return ["No identifiers: the intake holds none.", "", *_table(("Field", "Value"), rows)]


# Rules whose hits describe the patient, for the snapshot without an intake. An entry ending
# in "-" is a family prefix; any other entry is one rule id. The first matching group wins.
_SNAPSHOT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Red flags", ("RF-",)),
    ("Pregnancy and lactation", ("CX-002", "CX-003", "CX-014", "PREG-", "SX-006", "W-LACT")),
    (
        "Kidney function",
        ("CX-011", "RX-NIT-02", "RX-SXT-02", "RX-TMP-02", "W-NIT-RENAL", "W-RENAL-UNKNOWN"),
    ),
    ("Age and sex", ("CX-001", "CX-004", "W-AGE65", "W-ADOLESCENT", "RX-FOS-02")),
    (
        "Allergies matched by the rules",
        ("RX-NIT-01", "RX-SXT-01", "RX-TMP-01", "RX-FOS-01", "W-SULFA-NONABX"),
    ),
    (
        "Medications and antibiotics matched by the rules",
        ("DDI-", "CX-013", "CX-015", "RX-SXT-05", "RX-SXT-06", "RX-TMP-04", "W-ABX-RECENT"),
    ),
    ("Symptoms, recurrence and follow-up", ("SX-", "REC-", "FU-003", "FU-004", "FU-005", "FU-006")),
    (
        "Other history",
        ("CX-", "RX-NIT-03", "RX-NIT-04", "RX-SXT-03", "RX-SXT-04", "RX-TMP-03", "W-"),
    ),
    ("Missing answers", ("DATA-",)),
)


def _in_group(rule_id: str, members: tuple[str, ...]) -> bool:
    return any(rule_id == m or (m.endswith("-") and rule_id.startswith(m)) for m in members)


def _patient_from_consultation(c: cpb.Consultation) -> list[str]:
    """What the consultation records about the patient, without the intake itself."""
    lines = [
        "The intake itself is not part of this consultation record; this snapshot shows what "
        "the consultation records about the patient. No identifiers are held.",
        "",
    ]
    if c.assessment.summary:
        lines += [f"**Summary (doctor):** {inline(c.assessment.summary)}", ""]
    hits = _rule_hits(c)
    rows: list[tuple[str, str]] = []
    used: set[str] = set()
    for label, members in _SNAPSHOT_GROUPS:
        matched = [h for h in hits if h.rule_id not in used and _in_group(h.rule_id, members)]
        used.update(h.rule_id for h in matched)
        if matched:
            rows.append(
                (
                    label,
                    "; ".join(
                        f"{h.rule_id} {h.title}" + (f" ({h.detail})" if h.detail else "")
                        for h in matched
                    ),
                )
            )
    red_flag_fired = any(h.rule_id.startswith("RF-") for h in hits)
    if not red_flag_fired:
        rows.insert(0, ("Red flags", "none fired (RF-001..RF-006 did not fire)"))
    if c.triage.missing_fields:
        rows.append(("Unanswered intake fields", ", ".join(c.triage.missing_fields)))
    rows.append(
        (
            "Allergies and medications as recorded",
            "not carried by the consultation; only the matches above are known",
        )
    )
    return [*lines, *_table(("Aspect", "Recorded by the rules"), rows)]


def _decision(c: cpb.Consultation) -> list[str]:
    t = c.triage
    lines = [
        f"**Decision: {name(DECISIONS, c.decision)}** (triage, {inline(t.profile)} "
        f"{inline(t.profile_version)}; the rules are authoritative).",
        "",
        f"- Outcome of the deliberation: {name(OUTCOMES, c.outcome)}",
    ]
    if c.escalation_reason != cpb.ESCALATION_REASON_UNSPECIFIED:
        lines.append(f"- Escalation: {name(ESCALATIONS, c.escalation_reason)}")
    if t.follow_up.referral_urgency != pb.REFERRAL_URGENCY_UNSPECIFIED:
        lines.append(f"- Referral urgency: {name(URGENCIES, t.follow_up.referral_urgency)}")
    lines.append(f"- Needs prescriber review first: {'YES' if c.needs_prescriber_review else 'no'}")
    lines.append(f"- Deliberation rounds used: {c.rounds}")
    lines += ["", "Rules that fired, in evaluation order:", ""]
    rows = [
        (
            h.rule_id,
            h.title,
            name(RULE_OUTCOMES, h.outcome),
            h.detail,
            ", ".join(h.source_keys),
        )
        for h in t.rules_fired
    ]
    if rows:
        lines += _table(("Rule", "Title", "Outcome", "Detail", "Sources"), rows)
    else:
        lines.append("- No rule fired (the triage result is empty).")
    return lines


def _assessment(c: cpb.Consultation) -> list[str]:
    a = c.assessment
    if not c.HasField("assessment"):
        return ["- No doctor assessment is available (see the deliberation transcript)."]
    lines = [f"**Summary:** {inline(a.summary)}" if a.summary else "**Summary:** none given", ""]
    if a.differential:
        lines += _table(
            ("Condition", "Likelihood", "Reasons"),
            (
                (
                    d.condition,
                    _enum_word(apb.Likelihood, d.likelihood, "LIKELIHOOD_"),
                    "; ".join(d.reasons),
                )
                for d in a.differential
            ),
        )
        lines.append("")
    if a.rationale:
        lines.append(f"**Rationale:** {inline(a.rationale)}")
    return lines


def _plan_section(c: cpb.Consultation) -> Section:
    if c.decision == pb.DECISION_RECOMMEND_TREATMENT:
        return Section(PLAN.id, "Plan: prescription (draft)")
    if c.decision == pb.DECISION_REFER:
        return Section(PLAN.id, "Plan: referral, no prescription")
    if c.decision == pb.DECISION_NO_ANTIBIOTICS:
        return Section(PLAN.id, "Plan: no antibiotic")
    return PLAN


def _plan(c: cpb.Consultation) -> list[str]:
    if c.decision == pb.DECISION_RECOMMEND_TREATMENT and c.HasField("regimen"):
        r = c.regimen
        selection = [h for h in c.triage.rules_fired if h.outcome == pb.RULE_OUTCOME_SELECT_AGENT]
        return [
            f"**{inline(regimen_words(r))}**",
            "",
            *_table(
                ("Drug", "Dose per ingredient", "Form", "Route", "Frequency", "Duration"),
                [
                    (
                        r.drug,
                        dose_words(r),
                        r.dose_form,
                        name(ROUTES, r.route),
                        name(FREQUENCIES, r.frequency),
                        duration_words(r),
                    )
                ],
            ),
            "",
            f"- Agent: {AGENT_CODES.get(r.agent, '?')}, "
            f"{AGENT_NAMES.get(r.agent, 'unknown agent')}",
            "- Selected by: "
            + (", ".join(f"{h.rule_id} {inline(h.title)}" for h in selection) or "not recorded"),
            "- One of triage's eligible regimens, re-validated by the allow-list before it was "
            "returned.",
        ]
    if c.decision == pb.DECISION_RECOMMEND_TREATMENT:
        return [
            "**No regimen is attached** although triage recommends treatment: the plan was not "
            "agreed (see the decision and the transcript). A prescriber must decide."
        ]
    deciding = [h for h in c.triage.rules_fired if h.outcome in DECIDING_OUTCOMES]
    what = "Referral" if c.decision == pb.DECISION_REFER else "No antibiotic"
    urgency = c.triage.follow_up.referral_urgency
    if c.decision == pb.DECISION_REFER and urgency != pb.REFERRAL_URGENCY_UNSPECIFIED:
        what += f" ({name(URGENCIES, urgency)})"
    lines = [f"**{what}: no pharmacist prescription.**", ""]
    lines += _bullets(
        (
            f"{h.rule_id} {h.title}: {name(RULE_OUTCOMES, h.outcome)}"
            + (f" ({h.detail})" if h.detail else "")
            for h in deciding
        ),
        "No deciding rule recorded.",
    )
    rationale = c.assessment.referral_rationale or c.assessment.rationale
    if rationale:
        lines += ["", f"**Rationale:** {inline(rationale)}"]
    notes = [h for h in c.triage.rules_fired if h.outcome == pb.RULE_OUTCOME_NOTE]
    if notes:
        lines += ["", "Notes for the prescriber who receives the referral:", ""]
        lines += _bullets(
            (f"{h.rule_id} {h.title}" + (f" ({h.detail})" if h.detail else "") for h in notes),
            "",
        )
    return lines


def _excluded(c: cpb.Consultation) -> list[str]:
    evaluations = sorted(c.triage.agent_evaluations, key=lambda e: (e.rank, e.agent))
    if not evaluations:
        return ["- Drug selection was not reached: no agent was evaluated."]
    order = " > ".join(AGENT_CODES.get(e.agent, "?") for e in evaluations)
    rows = []
    for e in evaluations:
        status = "eligible" if e.eligible else "EXCLUDED"
        if c.HasField("regimen") and e.agent == c.regimen.agent:
            status = "eligible, SELECTED"
        rows.append(
            (
                str(e.rank),
                f"{AGENT_CODES.get(e.agent, '?')} {AGENT_NAMES.get(e.agent, 'unknown agent')}",
                status,
                "; ".join(
                    f"{x.rule_id} {x.title}" + (f" ({x.detail})" if x.detail else "")
                    for x in e.exclusions
                ),
            )
        )
    return [
        f"Profile order: {order}. The first eligible agent is selected.",
        "",
        *_table(("Rank", "Agent", "Status", "Excluded by"), rows),
    ]


def _warnings(c: cpb.Consultation) -> list[str]:
    rows = [(w.rule_id, w.text) for w in c.triage.warnings]
    if not rows:
        return ["- No warning applies to this decision."]
    return _table(("Rule", "Warning and action"), rows)


def _round_blocks(c: cpb.Consultation) -> list[tuple[str, list[cpb.TranscriptEntry]]]:
    """Consecutive transcript entries grouped by round: triage, round 1..n, finalisation."""
    blocks: list[tuple[str, list[cpb.TranscriptEntry]]] = []
    for entry in c.transcript:
        if entry.round > 0:
            label = f"Round {entry.round}"
        else:
            label = "Triage" if not blocks else "Finalisation"
        if blocks and blocks[-1][0] == label:
            blocks[-1][1].append(entry)
        else:
            blocks.append((label, [entry]))
    return blocks


def _model_words(run: apb.AgentRun) -> str:
    if not run.model and not run.generated_by:
        return "—"
    words = run.model or run.generated_by
    if run.provider and run.provider not in words:
        words += f" ({run.provider})"
    if run.prompt_version:
        words += f", prompt {run.prompt_version}"
    return words


def _deliberation(c: cpb.Consultation) -> list[str]:
    if not c.transcript:
        return ["- No transcript was recorded."]
    lines: list[str] = []
    for label, entries in _round_blocks(c):
        lines += [f"**{label}**", ""]
        rows = []
        for e in entries:
            summary = e.summary
            if e.violations:
                summary += " Violations: " + "; ".join(
                    f"{v.code} {v.message}" for v in e.violations
                )
            rows.append(
                (e.actor, e.action, summary, _model_words(e.run) if e.HasField("run") else "—")
            )
        lines += _table(("Who", "Action", "Summary", "Model"), rows)
        lines.append("")
    return lines[:-1]


def _concerns(c: cpb.Consultation) -> list[str]:
    if not c.HasField("review"):
        return ["- No pharmacist review is available: **no safety review was recorded**."]
    r = c.review
    lines = [f"- Verdict: **{name(VERDICTS, r.verdict)}**"]
    if r.model_review_missing_reason:
        lines.append(
            f"- ⚠ The model review is missing ({inline(r.model_review_missing_reason)}); "
            "the deterministic checks stand alone."
        )
    lines.append(
        "- Deterministic safety checks: " + ("run" if r.deterministic_checks_run else "NOT run")
    )
    lines.append("")
    if not r.concerns:
        return [*lines, "- No concern was raised."]
    rows = [
        (
            name(SEVERITIES, x.severity),
            x.code,
            x.text,
            x.suggested_action,
            ", ".join(x.rule_ids),
            x.source,
        )
        for x in r.concerns
    ]
    return lines + _table(
        ("Severity", "Code", "Concern", "Suggested action", "Rules", "Source"), rows
    )


def _monitoring(c: cpb.Consultation) -> list[str]:
    counselling = list(c.review.counselling)
    if c.HasField("regimen"):
        for e in c.triage.agent_evaluations:
            if e.agent == c.regimen.agent:
                counselling += [x for x in e.counselling if x not in counselling]
    return [
        "**Monitoring**",
        "",
        *_bullets(c.review.monitoring, "No monitoring was recorded."),
        "",
        "**Counselling for the patient**",
        "",
        *_bullets(counselling, "No counselling was recorded."),
    ]


def _claims(c: cpb.Consultation) -> list[apb.Claim]:
    return [*c.assessment.claims, *c.review.claims]


def _evidence(c: cpb.Consultation) -> list[str]:
    groundings = list(c.groundings)
    grounded_ids = {g.claim.id for g in groundings}
    ungrounded = [cl for cl in _claims(c) if cl.id not in grounded_ids]
    if not groundings:
        lines = [
            "**⚠ Evidence grounding is unavailable for this consultation**: the claims below are "
            "shown without citations and are NOT evidence-checked.",
            "",
        ]
    else:
        flagged = sum(1 for g in groundings if g.flagged)
        lines = [
            f"{len(groundings)} claim(s) grounded; {flagged} flagged as unsupported or "
            "contradicted (shown and marked, never hidden).",
            "",
        ]
    rows: list[tuple[str, ...]] = []
    for g in groundings:
        claim = _claim_words(g.claim)
        if g.flagged:
            claim = f"⚠ FLAGGED: {g.flag_reason or 'unsupported or contradicted'}\n{claim}"
        if not g.citations:
            rows.append((claim, "no citation found", "—", "—", name(SUPPORT, g.support)))
        for citation in g.citations:
            rows.append(
                (
                    claim,
                    _citation_words(citation.passage),
                    f"“{citation.quoted_span}”" if citation.quoted_span else "—",
                    citation.relevance_rationale,
                    name(SUPPORT, citation.support),
                )
            )
    rows += [
        (_claim_words(cl), "not grounded", "—", "—", name(SUPPORT, epb.SUPPORT_LABEL_UNSPECIFIED))
        for cl in ungrounded
    ]
    if not rows:
        return [*lines, "- No claim was made."]
    return lines + _table(("Claim", "Citation", "Quoted span", "Relevance", "Support"), rows)


def _claim_words(claim: apb.Claim) -> str:
    rules = f" [{', '.join(claim.rule_ids)}]" if claim.rule_ids else ""
    return f"{claim.id} ({name(CLAIM_KINDS, claim.kind)}): {claim.text}{rules}"


def _citation_words(p: epb.Passage) -> str:
    where = ", ".join(x for x in (p.organisation, str(p.year) if p.year else "", p.section) if x)
    return f"{p.title} ({where}); passage {p.id}" if where else f"{p.title}; passage {p.id}"


def _follow_up(c: cpb.Consultation) -> list[str]:
    f = c.triage.follow_up
    lines: list[str] = []
    if f.reassess_by_hours:
        lines.append(
            f"- Reassess at {f.reassess_from_hours}-{f.reassess_by_hours} h for response and "
            "adverse effects."
        )
    if f.notify_primary_care:
        lines.append("- Notify the patient's primary care provider.")
    if f.referral_urgency != pb.REFERRAL_URGENCY_UNSPECIFIED:
        lines.append(f"- Referral: {name(URGENCIES, f.referral_urgency)}.")
    lines += ["", "**Instructions (rules)**", ""]
    lines += _bullets(f.instructions, "No follow-up instruction was recorded.")
    lines += ["", "**Safety-netting for the patient**", ""]
    lines += _bullets(c.assessment.safety_netting, "No safety-netting advice was recorded.")
    return lines


def _step_label(e: cpb.TranscriptEntry) -> str:
    label = f"{e.actor}: {e.action}"
    if e.action == "validate":
        label += " - not allowed" if e.violations else " - allowed"
    elif e.verdict != apb.VERDICT_UNSPECIFIED:
        label += f" - {name(VERDICTS, e.verdict)}"
    elif e.action in ("degrade", "escalate") and e.summary:
        label += f" - {e.summary[:80]}"
    return label


def _decision_path(c: cpb.Consultation) -> list[str]:
    t = c.triage
    lines = ["```mermaid", "flowchart TD"]
    nodes: list[str] = []

    def node(text: str, shape: str = "box", indent: str = "  ") -> str:
        node_id = f"n{len(nodes)}"
        label = "<br/>".join(mermaid_label(part) for part in text.split("\n"))
        open_, close = ('(["', '"])') if shape == "stadium" else ('["', '"]')
        lines.append(f"{indent}{node_id}{open_}{label}{close}")
        nodes.append(node_id)
        return node_id

    node(f"Triage {t.profile} {t.profile_version}\ndecision: {name(DECISIONS, t.decision)}")
    fired = [h.rule_id for h in t.rules_fired]
    chunks = [", ".join(fired[i : i + 5]) for i in range(0, len(fired), 5)] or ["none"]
    node("Rules fired\n" + "\n".join(chunks))
    blocks = _round_blocks(c)
    for index, (label, entries) in enumerate(blocks):
        steps = [e for e in entries if not (label == "Triage" and e.action == "assess")]
        if not steps:
            continue
        if label.startswith("Round"):
            lines.append(f'  subgraph r{index}["{mermaid_label(label)}"]')
            for e in steps:
                node(_step_label(e), indent="    ")
            lines.append("  end")
        else:
            for e in steps:
                node(_step_label(e))
    outcome = f"Outcome: {name(OUTCOMES, c.outcome).split(' (')[0]}"
    if c.HasField("regimen"):
        outcome += f"\n{AGENT_CODES.get(c.regimen.agent, '?')} {dose_words(c.regimen)}"
        outcome += f", {duration_words(c.regimen)}"
    else:
        outcome += f"\n{name(DECISIONS, c.decision)}, no prescription"
    node(outcome, shape="stadium")
    lines.append("  " + " --> ".join(nodes))
    lines.append("```")
    return lines


def _versions(c: cpb.Consultation, corpus_version: str) -> list[str]:
    t = c.triage
    rows = [
        ("Ruleset profile", t.profile or "unknown"),
        ("Ruleset version", t.profile_version or "unknown"),
        ("Ruleset hash (SHA-256)", t.ruleset_hash or "unknown"),
        ("Evidence corpus", corpus_version or "none: grounding unavailable"),
    ]
    seen: set[tuple[str, str, str, str]] = set()
    for actor, run in _runs(c):
        key = (actor, run.generated_by, run.model, run.prompt_version)
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            (
                f"{actor} run",
                f"generated by {run.generated_by or 'unknown'}; model {run.model or 'none'}"
                f"; provider {run.provider or 'none'}"
                f"; prompt {run.prompt_version or 'none (offline engine)'}",
            )
        )
    rows.append(("Report generated by", RENDERER))
    u = c.usage
    rows.append(
        (
            "Model usage",
            f"{u.model_calls} call(s), {u.input_tokens} input / {u.output_tokens} output tokens, "
            f"USD {u.cost_usd:.4f}",
        )
    )
    return _table(("Item", "Value"), rows)


def _sign_off() -> list[str]:
    return [
        "I have reviewed this draft and the evidence above.",
        "",
        "Prescriber name: ______________________________",
        "",
        "Licence number: ______________________________",
        "",
        "Signature: ______________________________",
        "",
        "Date: ______________________________",
        "",
        "- [ ] **Approve** as drafted",
        "- [ ] **Amend** (changes below)",
        "- [ ] **Reject** (reason below)",
        "",
        "Changes or reason: ____________________________________________",
    ]
