"""The allow-list check (ValidatePlan): a proposed regimen is allowed only when it equals one of
the assessment's eligible regimens field for field. No substring or fuzzy matching."""

from __future__ import annotations

from dataclasses import dataclass

from utimesh.rules.model import Assessment, Decision, Outcome, Regimen


@dataclass(frozen=True, slots=True)
class PlanViolation:
    code: str  # stable machine code
    field: str  # Regimen field concerned, "" for the whole plan
    message: str
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlanCheck:
    allowed: bool
    violations: tuple[PlanViolation, ...]


def _fmt_dose(regimen: Regimen) -> str:
    return " + ".join(f"{d.ingredient} {d.amount:g} {d.unit}" for d in regimen.dose) or "(none)"


def check_plan(
    assessment: Assessment, proposed: Regimen | None, proposed_drug: str = ""
) -> PlanCheck:
    """Compare `proposed` with the eligible regimens of `assessment`. None stands for a
    proposal whose agent the rules do not know (e.g. ciprofloxacin), named by `proposed_drug`."""
    if assessment.decision is not Decision.RECOMMEND_TREATMENT:
        decisive = tuple(
            h.rule_id
            for h in assessment.rules_fired
            if h.outcome in (Outcome.REFER, Outcome.REFER_URGENT, Outcome.NO_ANTIBIOTICS)
        )
        return PlanCheck(
            False,
            (
                PlanViolation(
                    "DECISION_NOT_TREATMENT",
                    "",
                    f"triage decided {assessment.decision.value}: no prescription is allowed",
                    decisive,
                ),
            ),
        )
    if proposed is not None and proposed in assessment.eligible_regimens:
        return PlanCheck(True, ())
    evaluation = None
    if proposed is not None:
        evaluation = next(
            (e for e in assessment.agent_evaluations if e.agent is proposed.agent), None
        )
    if proposed is None or evaluation is None:
        allowed = ", ".join(r.drug for r in assessment.eligible_regimens)
        what = proposed_drug or "the proposed drug"
        return PlanCheck(
            False,
            (
                PlanViolation(
                    "AGENT_NOT_ELIGIBLE",
                    "agent",
                    f"{what} is not one of the eligible regimens ({allowed})",
                ),
            ),
        )
    if not evaluation.eligible:
        ids = tuple(h.rule_id for h in evaluation.exclusions)
        message = f"{proposed.agent.value} is excluded for this patient by {', '.join(ids)}"
        return PlanCheck(False, (PlanViolation("AGENT_EXCLUDED", "agent", message, ids),))
    want = evaluation.regimen
    rule = f"the {want.agent.value} regimen"
    fields: list[tuple[str, str, object, object]] = [
        ("DRUG_MISMATCH", "drug", want.drug, proposed.drug),
        ("DOSE_MISMATCH", "dose", _fmt_dose(want), _fmt_dose(proposed)),
        ("DOSE_FORM_MISMATCH", "dose_form", want.dose_form, proposed.dose_form),
        ("ROUTE_MISMATCH", "route", want.route, proposed.route),
        ("FREQUENCY_MISMATCH", "frequency", want.frequency, proposed.frequency),
        (
            "DURATION_MISMATCH",
            "duration",
            f"{want.duration.amount} {want.duration.unit}",
            f"{proposed.duration.amount} {proposed.duration.unit}",
        ),
    ]
    violations = tuple(
        PlanViolation(code, name, f"{name} must be {expected!s} for {rule}, got {got!s}")
        for code, name, expected, got in fields
        if expected != got
    )
    if not violations:  # dose amounts equal as text but not as numbers, e.g. 100 vs 100.0000001
        violations = (
            PlanViolation("DOSE_MISMATCH", "dose", f"dose must be exactly {_fmt_dose(want)}"),
        )
    return PlanCheck(False, violations)
