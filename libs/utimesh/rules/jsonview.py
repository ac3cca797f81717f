"""JSON views of assessments and regimens, in the format of shared/clinical/cases.json."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from utimesh.rules.model import Agent, Assessment, CourseDuration, DoseComponent, Intake, Regimen


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def regimen_to_json(regimen: Regimen) -> dict[str, Any]:
    """The `expected.regimen` object of cases.json."""
    return {
        "agent": regimen.agent.value,
        "drug": regimen.drug,
        "dose": [
            {"ingredient": d.ingredient, "amount": _number(d.amount), "unit": d.unit}
            for d in regimen.dose
        ],
        "dose_form": regimen.dose_form,
        "route": regimen.route,
        "frequency": regimen.frequency,
        "duration": {"amount": regimen.duration.amount, "unit": regimen.duration.unit},
    }


def regimen_from_json(obj: Mapping[str, Any]) -> Regimen:
    """Read a regimen object; raises KeyError/ValueError on a malformed one."""
    return Regimen(
        agent=Agent(obj["agent"]),
        drug=str(obj["drug"]),
        dose=tuple(
            DoseComponent(str(d["ingredient"]), float(d["amount"]), str(d["unit"]))
            for d in obj["dose"]
        ),
        dose_form=str(obj["dose_form"]),
        route=str(obj["route"]),
        frequency=str(obj["frequency"]),
        duration=CourseDuration(int(obj["duration"]["amount"]), str(obj["duration"]["unit"])),
    )


def assessment_to_json(a: Assessment) -> dict[str, Any]:
    """What `utimesh triage` prints for one patient."""
    return {
        "profile": a.profile,
        "profile_version": a.profile_version,
        "ruleset_hash": a.ruleset_hash,
        "decision": a.decision.value,
        "regimen": regimen_to_json(a.regimen) if a.regimen else None,
        "rules_fired": list(a.rule_ids),
        "warnings": list(a.warning_ids),
        "excluded": [
            {
                "agent": e.agent.value,
                "drug": e.regimen.drug,
                "reasons": [
                    {"rule_id": h.rule_id, "title": h.title, "detail": h.detail}
                    for h in e.exclusions
                ],
            }
            for e in a.agent_evaluations
            if not e.eligible
        ],
        "eligible_regimens": [regimen_to_json(r) for r in a.eligible_regimens],
        "rule_details": [
            {
                "rule_id": h.rule_id,
                "title": h.title,
                "outcome": h.outcome.value,
                "sources": list(h.sources),
                "detail": h.detail,
            }
            for h in a.rules_fired
        ],
        "warning_details": [{"rule_id": w.rule_id, "text": w.text} for w in a.warnings],
        "follow_up": {
            "notify_primary_care": a.follow_up.notify_primary_care,
            "reassess_from_hours": a.follow_up.reassess_from_hours,
            "reassess_by_hours": a.follow_up.reassess_by_hours,
            "referral_urgency": a.follow_up.referral_urgency.value
            if a.follow_up.referral_urgency
            else None,
            "instructions": list(a.follow_up.instructions),
        },
        "missing_fields": [p.path for p in a.problems],
    }


def intake_to_json(intake: Intake) -> dict[str, Any]:
    """The cases.json patient format (the inverse of parse_intake for readable intakes)."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, StrEnum):
            return obj.value
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if hasattr(obj, "isoformat"):
            return obj.isoformat()
        if isinstance(obj, tuple):
            return [plain(x) for x in obj]
        return {name: plain(getattr(obj, name)) for name in obj.__dataclass_fields__}

    data = plain(intake)
    data.pop("unreadable", None)
    data["recurrence"] = (
        None if data["prior_episodes"] is None else {"prior_episodes": data["prior_episodes"]}
    )
    del data["prior_episodes"]
    return dict(data)
