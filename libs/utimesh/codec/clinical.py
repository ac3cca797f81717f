"""utimesh.clinical.v1 <-> utimesh.rules.model.

Proto semantics kept: an unset optional or wrapper = not asked (None); a value that is set but
impossible (an *_UNSPECIFIED or unknown enum number, a malformed date) is recorded as
unreadable so that `intake_problems` reports it as invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar

from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.rules.model import (
    HISTORY_FLAGS,
    RED_FLAGS,
    SYMPTOM_FLAGS,
    Agent,
    CourseDuration,
    Decision,
    DoseComponent,
    EncounterType,
    FollowUpAnswers,
    FollowUpPlan,
    History,
    Intake,
    Outcome,
    PregnancyStatus,
    PriorEpisode,
    RecentAntibiotic,
    RedFlags,
    ReferralUrgency,
    Regimen,
    RuleHit,
    Sex,
    Symptoms,
    Warning,
)

_E = TypeVar("_E", bound=StrEnum)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

ENCOUNTER_TYPES = {
    EncounterType.INITIAL: pb.ENCOUNTER_TYPE_INITIAL,
    EncounterType.FOLLOW_UP: pb.ENCOUNTER_TYPE_FOLLOW_UP,
}
SEXES = {
    Sex.FEMALE: pb.SEX_FEMALE,
    Sex.MALE: pb.SEX_MALE,
    Sex.OTHER: pb.SEX_OTHER,
    Sex.UNKNOWN: pb.SEX_UNKNOWN,
}
PREGNANCY_STATUSES = {
    PregnancyStatus.NOT_PREGNANT: pb.PREGNANCY_STATUS_NOT_PREGNANT,
    PregnancyStatus.PREGNANT: pb.PREGNANCY_STATUS_PREGNANT,
    PregnancyStatus.UNKNOWN: pb.PREGNANCY_STATUS_UNKNOWN,
    PregnancyStatus.NOT_APPLICABLE: pb.PREGNANCY_STATUS_NOT_APPLICABLE,
}
AGENTS = {
    Agent.NIT: pb.AGENT_NITROFURANTOIN,
    Agent.SXT: pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE,
    Agent.TMP: pb.AGENT_TRIMETHOPRIM,
    Agent.FOS: pb.AGENT_FOSFOMYCIN,
}
DECISIONS = {
    Decision.RECOMMEND_TREATMENT: pb.DECISION_RECOMMEND_TREATMENT,
    Decision.NO_ANTIBIOTICS: pb.DECISION_NO_ANTIBIOTICS,
    Decision.REFER: pb.DECISION_REFER,
}
OUTCOMES = {o: pb.RuleOutcome.Value(f"RULE_OUTCOME_{o.name}") for o in Outcome}
URGENCIES = {
    ReferralUrgency.ROUTINE: pb.REFERRAL_URGENCY_ROUTINE,
    ReferralUrgency.URGENT: pb.REFERRAL_URGENCY_URGENT,
}
# Regimen vocabulary of data/regimens.toml <-> structured enums.
ROUTES = {"PO": pb.ROUTE_ORAL}
FREQUENCIES = {
    "BID": pb.FREQUENCY_TWICE_DAILY,
    "once daily": pb.FREQUENCY_ONCE_DAILY,
    "single dose": pb.FREQUENCY_SINGLE_DOSE,
}
DURATION_UNITS = {"days": pb.DURATION_UNIT_DAYS, "dose": pb.DURATION_UNIT_DOSES}


_K = TypeVar("_K")
_V = TypeVar("_V")


def _reverse(mapping: dict[_K, _V]) -> dict[_V, _K]:
    return {v: k for k, v in mapping.items()}


_ENCOUNTER_FROM = _reverse(ENCOUNTER_TYPES)
_SEX_FROM = _reverse(SEXES)
_PREGNANCY_FROM = _reverse(PREGNANCY_STATUSES)
_AGENT_FROM = _reverse(AGENTS)
_DECISION_FROM = _reverse(DECISIONS)
_OUTCOME_FROM = _reverse(OUTCOMES)
_URGENCY_FROM = _reverse(URGENCIES)
_ROUTE_FROM = _reverse(ROUTES)
_FREQUENCY_FROM = _reverse(FREQUENCIES)
_DURATION_FROM = _reverse(DURATION_UNITS)


class RegimenError(ValueError):
    """A proto regimen that cannot be read; `field` names the Regimen field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def proto_path(path: str) -> str:
    """Translate an intake path (cases.json names) into a field path of the Intake message."""
    for wrapped in ("history.recent_antibiotics", "history.allergies", "history.medications"):
        if path.startswith(wrapped + "["):
            path = wrapped + ".entries" + path[len(wrapped) :]
    return path


# --- intake -----------------------------------------------------------------------------------


def intake_from_proto(msg: pb.Intake) -> Intake:
    unreadable: list[tuple[str, str]] = []

    def opt(owner: Any, name: str) -> Any:
        return getattr(owner, name) if owner.HasField(name) else None

    def choice(name: str, table: Mapping[Any, _E], enum_name: str) -> _E | None:
        if not msg.HasField(name):  # type: ignore[arg-type]
            return None
        value = table.get(getattr(msg, name))
        if value is None:
            unreadable.append((name, f"must be a {enum_name} other than *_UNSPECIFIED"))
        return value

    def day(text: str, path: str) -> date | None:
        if not text:
            return None
        if _ISO_DATE.match(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        unreadable.append((path, "must be an ISO date (YYYY-MM-DD)"))
        return None

    symptoms = None
    if msg.HasField("symptoms"):
        s = msg.symptoms
        symptoms = Symptoms(
            **{k: opt(s, k) for k in SYMPTOM_FLAGS}, duration_days=opt(s, "duration_days")
        )
    red_flags = None
    if msg.HasField("red_flags"):
        red_flags = RedFlags(**{k: opt(msg.red_flags, k) for k in RED_FLAGS})
    history = None
    if msg.HasField("history"):
        h = msg.history
        history = History(
            **{k: opt(h, k) for k in HISTORY_FLAGS},
            allergies=tuple(h.allergies.entries) if h.HasField("allergies") else None,
            medications=tuple(h.medications.entries) if h.HasField("medications") else None,
            recent_antibiotics=tuple(
                RecentAntibiotic(drug=c.drug or None, days_ago=opt(c, "days_ago"))
                for c in h.recent_antibiotics.entries
            )
            if h.HasField("recent_antibiotics")
            else None,
        )
    episodes = None
    if msg.HasField("recurrence"):
        episodes = tuple(
            PriorEpisode(
                onset_date=day(e.onset_date, f"recurrence.prior_episodes[{i}].onset_date"),
                treated=opt(e, "treated"),
                treatment_end_date=day(
                    e.treatment_end_date, f"recurrence.prior_episodes[{i}].treatment_end_date"
                ),
            )
            for i, e in enumerate(msg.recurrence.prior_episodes)
        )
    follow_up = None
    if msg.HasField("follow_up"):
        fu = msg.follow_up
        follow_up = FollowUpAnswers(
            hours_since_treatment_start=opt(fu, "hours_since_treatment_start"),
            improved=opt(fu, "improved"),
            worsened=opt(fu, "worsened"),
            serious_adverse_effect=opt(fu, "serious_adverse_effect"),
            current_regimen=opt(fu, "current_regimen"),
        )
    return Intake(
        encounter_type=choice("encounter_type", _ENCOUNTER_FROM, "EncounterType"),
        assessment_date=day(msg.assessment_date, "assessment_date"),
        age=opt(msg, "age"),
        sex=choice("sex", _SEX_FROM, "Sex"),
        pregnancy_status=choice("pregnancy_status", _PREGNANCY_FROM, "PregnancyStatus"),
        gestational_weeks=opt(msg, "gestational_weeks"),
        lactating=opt(msg, "lactating"),
        egfr_ml_min=opt(msg, "egfr_ml_min"),
        urine_test_positive=opt(msg, "urine_test_positive"),
        symptoms=symptoms,
        red_flags=red_flags,
        history=history,
        prior_episodes=episodes,
        follow_up=follow_up,
        unreadable=tuple(unreadable),
    )


def _set_flags(target: Any, source: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(source, name)
        if value is not None:
            setattr(target, name, value)


def intake_to_proto(intake: Intake) -> pb.Intake:
    """Domain -> proto. Values that were unreadable in the source are left unset."""
    msg = pb.Intake()
    if intake.encounter_type is not None:
        msg.encounter_type = ENCOUNTER_TYPES[intake.encounter_type]
    if intake.assessment_date is not None:
        msg.assessment_date = intake.assessment_date.isoformat()
    if intake.sex is not None:
        msg.sex = SEXES[intake.sex]
    if intake.pregnancy_status is not None:
        msg.pregnancy_status = PREGNANCY_STATUSES[intake.pregnancy_status]
    _set_flags(
        msg, intake, ("age", "gestational_weeks", "lactating", "egfr_ml_min", "urine_test_positive")
    )
    if intake.symptoms is not None:
        msg.symptoms.SetInParent()
        _set_flags(msg.symptoms, intake.symptoms, (*SYMPTOM_FLAGS, "duration_days"))
    if intake.red_flags is not None:
        msg.red_flags.SetInParent()
        _set_flags(msg.red_flags, intake.red_flags, RED_FLAGS)
    if (h := intake.history) is not None:
        msg.history.SetInParent()
        _set_flags(msg.history, h, HISTORY_FLAGS)
        if h.allergies is not None:
            msg.history.allergies.SetInParent()
            msg.history.allergies.entries.extend(h.allergies)
        if h.medications is not None:
            msg.history.medications.SetInParent()
            msg.history.medications.entries.extend(h.medications)
        if h.recent_antibiotics is not None:
            msg.history.recent_antibiotics.SetInParent()
            for course in h.recent_antibiotics:
                entry = msg.history.recent_antibiotics.entries.add(drug=course.drug or "")
                if course.days_ago is not None:
                    entry.days_ago = course.days_ago
    if intake.prior_episodes is not None:
        msg.recurrence.SetInParent()
        for episode in intake.prior_episodes:
            episode_msg = msg.recurrence.prior_episodes.add(
                onset_date=episode.onset_date.isoformat() if episode.onset_date else "",
                treatment_end_date=episode.treatment_end_date.isoformat()
                if episode.treatment_end_date
                else "",
            )
            if episode.treated is not None:
                episode_msg.treated = episode.treated
    if (fu := intake.follow_up) is not None:
        msg.follow_up.SetInParent()
        _set_flags(
            msg.follow_up,
            fu,
            (
                "hours_since_treatment_start",
                "improved",
                "worsened",
                "serious_adverse_effect",
                "current_regimen",
            ),
        )
    return msg


# --- regimens and results ---------------------------------------------------------------------


def regimen_to_proto(regimen: Regimen) -> pb.Regimen:
    return pb.Regimen(
        agent=AGENTS[regimen.agent],
        drug=regimen.drug,
        dose=[
            pb.DoseComponent(ingredient=d.ingredient, amount=d.amount, unit=d.unit)
            for d in regimen.dose
        ],
        dose_form=regimen.dose_form,
        route=ROUTES[regimen.route],
        frequency=FREQUENCIES[regimen.frequency],
        duration=pb.CourseDuration(
            amount=regimen.duration.amount, unit=DURATION_UNITS[regimen.duration.unit]
        ),
    )


def regimen_from_proto(msg: pb.Regimen) -> Regimen:
    """Raises RegimenError naming the field when an enum is unspecified or unknown."""

    def pick(table: Mapping[Any, Any], value: int, field: str) -> Any:
        if value not in table:
            raise RegimenError(field, f"{field} must be set to a known value")
        return table[value]

    return Regimen(
        agent=pick(_AGENT_FROM, msg.agent, "agent"),
        drug=msg.drug,
        dose=tuple(DoseComponent(d.ingredient, d.amount, d.unit) for d in msg.dose),
        dose_form=msg.dose_form,
        route=pick(_ROUTE_FROM, msg.route, "route"),
        frequency=pick(_FREQUENCY_FROM, msg.frequency, "frequency"),
        duration=CourseDuration(
            msg.duration.amount, pick(_DURATION_FROM, msg.duration.unit, "duration.unit")
        ),
    )


def rule_hit_to_proto(hit: RuleHit) -> pb.RuleHit:
    return pb.RuleHit(
        rule_id=hit.rule_id,
        title=hit.title,
        outcome=OUTCOMES[hit.outcome],
        source_keys=hit.sources,
        detail=hit.detail,
    )


def rule_hit_from_proto(msg: pb.RuleHit) -> RuleHit:
    return RuleHit(
        msg.rule_id, msg.title, _OUTCOME_FROM[msg.outcome], tuple(msg.source_keys), msg.detail
    )


def warning_to_proto(w: Warning) -> pb.Warning:
    return pb.Warning(rule_id=w.rule_id, text=w.text)


def follow_up_to_proto(plan: FollowUpPlan) -> pb.FollowUpPlan:
    return pb.FollowUpPlan(
        notify_primary_care=plan.notify_primary_care,
        reassess_from_hours=plan.reassess_from_hours,
        reassess_by_hours=plan.reassess_by_hours,
        referral_urgency=URGENCIES[plan.referral_urgency]
        if plan.referral_urgency
        else pb.REFERRAL_URGENCY_UNSPECIFIED,
        instructions=plan.instructions,
    )


def follow_up_from_proto(msg: pb.FollowUpPlan) -> FollowUpPlan:
    return FollowUpPlan(
        notify_primary_care=msg.notify_primary_care,
        reassess_from_hours=msg.reassess_from_hours,
        reassess_by_hours=msg.reassess_by_hours,
        referral_urgency=_URGENCY_FROM.get(msg.referral_urgency),
        instructions=tuple(msg.instructions),
    )


def decision_to_proto(decision: Decision) -> pb.Decision.ValueType:
    return DECISIONS[decision]


def decision_from_proto(value: pb.Decision.ValueType) -> Decision:
    return _DECISION_FROM[value]
