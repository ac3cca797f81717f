"""Reading an intake from JSON-like data, and finding what in it is missing or impossible.

`parse_intake` never raises on clinical content: a wrong type or unknown enum value is kept as
"unreadable" so that the engine refers with DATA-001 (RULES.md §4), exactly as for a missing
answer. `intake_problems` is the one place that knows which fields are required and which
values are possible; the engine and the gRPC boundary both use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar

from utimesh.rules.model import (
    HISTORY_FLAGS,
    RED_FLAGS,
    SYMPTOM_FLAGS,
    EncounterType,
    FieldProblem,
    FollowUpAnswers,
    History,
    Intake,
    PregnancyStatus,
    PriorEpisode,
    RecentAntibiotic,
    RedFlags,
    Sex,
    Symptoms,
)

MAX_AGE = 120
MAX_GESTATIONAL_WEEKS = 45
# Kidney function above this is not a plausible measurement (mL/min); treated as an error.
MAX_EGFR_ML_MIN = 250.0

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_Report = Callable[..., None]
_E = TypeVar("_E", bound=StrEnum)


class _Reader:
    """Collects unreadable paths while converting loosely typed data."""

    def __init__(self) -> None:
        self.unreadable: list[tuple[str, str]] = []

    def bad(self, path: str, reason: str) -> None:
        self.unreadable.append((path, reason))

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.bad(path, "must be true or false")
        return None

    def integer(self, obj: Mapping[str, Any], key: str, path: str) -> int | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.bad(path, "must be a whole number")
        return None

    def number(self, obj: Mapping[str, Any], key: str, path: str) -> float | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        self.bad(path, "must be a number")
        return None

    def text(self, obj: Mapping[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if value is None or isinstance(value, str):
            return value
        self.bad(path, "must be text")
        return None

    def day(self, obj: Mapping[str, Any], key: str, path: str) -> date | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, str) and _ISO_DATE.match(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.bad(path, "must be an ISO date (YYYY-MM-DD)")
        return None

    def choice(self, obj: Mapping[str, Any], key: str, path: str, enum: type[_E]) -> _E | None:
        value = obj.get(key)
        if value is None:
            return None
        try:
            return enum(value)
        except ValueError:
            self.bad(path, "must be one of " + ", ".join(e.value for e in enum))
            return None

    def mapping(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = obj.get(key)
        if value is None or isinstance(value, Mapping):
            return value
        self.bad(path, "must be an object")
        return None

    def items(self, obj: Mapping[str, Any], key: str, path: str) -> list[Any] | None:
        value = obj.get(key)
        if value is None or isinstance(value, list):
            return value
        self.bad(path, "must be a list")
        return None


def parse_intake(obj: Mapping[str, Any]) -> Intake:
    """Read one patient in the format of shared/clinical/cases.json (`patient`)."""
    r = _Reader()

    symptoms = None
    if (s := r.mapping(obj, "symptoms", "symptoms")) is not None:
        symptoms = Symptoms(
            **{k: r.boolean(s, k, f"symptoms.{k}") for k in SYMPTOM_FLAGS},
            duration_days=r.integer(s, "duration_days", "symptoms.duration_days"),
        )
    red_flags = None
    if (f := r.mapping(obj, "red_flags", "red_flags")) is not None:
        red_flags = RedFlags(**{k: r.boolean(f, k, f"red_flags.{k}") for k in RED_FLAGS})
    history = None
    if (h := r.mapping(obj, "history", "history")) is not None:
        history = History(
            **{k: r.boolean(h, k, f"history.{k}") for k in HISTORY_FLAGS},
            allergies=_texts(r, h, "allergies", "history.allergies"),
            medications=_texts(r, h, "medications", "history.medications"),
            recent_antibiotics=_antibiotics(r, h),
        )
    prior_episodes = None
    if (rec := r.mapping(obj, "recurrence", "recurrence")) is not None:
        prior_episodes = _episodes(r, rec)
    follow_up = None
    if (fu := r.mapping(obj, "follow_up", "follow_up")) is not None:
        follow_up = FollowUpAnswers(
            hours_since_treatment_start=r.number(
                fu, "hours_since_treatment_start", "follow_up.hours_since_treatment_start"
            ),
            improved=r.boolean(fu, "improved", "follow_up.improved"),
            worsened=r.boolean(fu, "worsened", "follow_up.worsened"),
            serious_adverse_effect=r.boolean(
                fu, "serious_adverse_effect", "follow_up.serious_adverse_effect"
            ),
            current_regimen=r.text(fu, "current_regimen", "follow_up.current_regimen"),
        )
    return Intake(
        encounter_type=r.choice(obj, "encounter_type", "encounter_type", EncounterType),
        assessment_date=r.day(obj, "assessment_date", "assessment_date"),
        age=r.integer(obj, "age", "age"),
        sex=r.choice(obj, "sex", "sex", Sex),
        pregnancy_status=r.choice(obj, "pregnancy_status", "pregnancy_status", PregnancyStatus),
        gestational_weeks=r.integer(obj, "gestational_weeks", "gestational_weeks"),
        lactating=r.boolean(obj, "lactating", "lactating"),
        egfr_ml_min=r.number(obj, "egfr_ml_min", "egfr_ml_min"),
        urine_test_positive=r.boolean(obj, "urine_test_positive", "urine_test_positive"),
        symptoms=symptoms,
        red_flags=red_flags,
        history=history,
        prior_episodes=prior_episodes,
        follow_up=follow_up,
        unreadable=tuple(r.unreadable),
    )


def _texts(r: _Reader, h: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    entries = r.items(h, key, path)
    if entries is None:
        return None
    out: list[str] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            out.append(entry)
        else:
            r.bad(f"{path}[{i}]", "must be text")
    return tuple(out)


def _antibiotics(r: _Reader, h: Mapping[str, Any]) -> tuple[RecentAntibiotic, ...] | None:
    entries = r.items(h, "recent_antibiotics", "history.recent_antibiotics")
    if entries is None:
        return None
    out: list[RecentAntibiotic] = []
    for i, entry in enumerate(entries):
        path = f"history.recent_antibiotics[{i}]"
        if not isinstance(entry, Mapping):
            r.bad(path, "must be an object")
            out.append(RecentAntibiotic())
            continue
        out.append(
            RecentAntibiotic(
                r.text(entry, "drug", f"{path}.drug"),
                r.integer(entry, "days_ago", f"{path}.days_ago"),
            )
        )
    return tuple(out)


def _episodes(r: _Reader, rec: Mapping[str, Any]) -> tuple[PriorEpisode, ...] | None:
    entries = r.items(rec, "prior_episodes", "recurrence.prior_episodes")
    if entries is None:
        return None
    out: list[PriorEpisode] = []
    for i, entry in enumerate(entries):
        path = f"recurrence.prior_episodes[{i}]"
        if not isinstance(entry, Mapping):
            r.bad(path, "must be an object")
            out.append(PriorEpisode())
            continue
        out.append(
            PriorEpisode(
                onset_date=r.day(entry, "onset_date", f"{path}.onset_date"),
                treated=r.boolean(entry, "treated", f"{path}.treated"),
                treatment_end_date=r.day(entry, "treatment_end_date", f"{path}.treatment_end_date"),
            )
        )
    return tuple(out)


def intake_problems(intake: Intake) -> list[FieldProblem]:
    """Every missing answer and impossible value, in intake order (RULES.md §4)."""
    out = [FieldProblem(path, "invalid", reason) for path, reason in intake.unreadable]
    unreadable = {path for path, _ in intake.unreadable}

    def missing(path: str, what: str = "not answered") -> None:
        if path not in unreadable:
            out.append(FieldProblem(path, "missing", what))

    def invalid(path: str, why: str) -> None:
        out.append(FieldProblem(path, "invalid", why))

    if intake.encounter_type is None:
        missing("encounter_type")
    if intake.assessment_date is None:
        missing("assessment_date")
    if intake.age is None:
        missing("age")
    elif not 0 <= intake.age <= MAX_AGE:
        invalid("age", f"must be between 0 and {MAX_AGE} years")
    if intake.sex is None:
        missing("sex")
    if intake.pregnancy_status is None and intake.sex is Sex.FEMALE:
        missing("pregnancy_status", "required for a female patient")
    if (
        intake.gestational_weeks is not None
        and not 0 <= intake.gestational_weeks <= MAX_GESTATIONAL_WEEKS
    ):
        invalid("gestational_weeks", f"must be between 0 and {MAX_GESTATIONAL_WEEKS} weeks")
    if intake.lactating is None:
        missing("lactating")
    if intake.egfr_ml_min is not None and not 0 <= intake.egfr_ml_min <= MAX_EGFR_ML_MIN:
        invalid("egfr_ml_min", f"must be between 0 and {MAX_EGFR_ML_MIN:g} mL/min")

    if intake.symptoms is None:
        missing("symptoms")
    else:
        for name in SYMPTOM_FLAGS:
            if getattr(intake.symptoms, name) is None:
                missing(f"symptoms.{name}")
        if intake.symptoms.duration_days is not None and intake.symptoms.duration_days < 0:
            invalid("symptoms.duration_days", "must be 0 or more days")

    if intake.red_flags is None:
        missing("red_flags")
    else:
        for name in RED_FLAGS:
            if getattr(intake.red_flags, name) is None:
                missing(f"red_flags.{name}")

    if intake.history is None:
        missing("history")
    else:
        _history_problems(intake.history, missing, invalid)

    if intake.prior_episodes is None:
        missing("recurrence.prior_episodes")
    else:
        for i, episode in enumerate(intake.prior_episodes):
            path = f"recurrence.prior_episodes[{i}]"
            if episode.onset_date is None:
                missing(f"{path}.onset_date")
            elif intake.assessment_date is not None and episode.onset_date > intake.assessment_date:
                invalid(f"{path}.onset_date", "is after the assessment date")
            if (
                episode.onset_date is not None
                and episode.treatment_end_date is not None
                and episode.treatment_end_date < episode.onset_date
            ):
                invalid(f"{path}.treatment_end_date", "is before the onset date")

    if intake.encounter_type is EncounterType.FOLLOW_UP:
        fu = intake.follow_up
        if fu is None:
            missing("follow_up", "required at a follow-up visit")
        else:
            hours = fu.hours_since_treatment_start
            if hours is None:
                missing("follow_up.hours_since_treatment_start")
            elif hours < 0:
                invalid("follow_up.hours_since_treatment_start", "must be 0 or more hours")
            for name in ("improved", "worsened", "serious_adverse_effect"):
                if getattr(fu, name) is None:
                    missing(f"follow_up.{name}")
    return out


def _history_problems(history: History, missing: _Report, invalid: _Report) -> None:
    for name in HISTORY_FLAGS:
        if getattr(history, name) is None:
            missing(f"history.{name}")
    for name in ("allergies", "medications"):
        if getattr(history, name) is None:
            missing(f"history.{name}", "not recorded ([] means none known)")
    if history.recent_antibiotics is None:
        missing("history.recent_antibiotics", "not recorded ([] means none)")
        return
    for i, course in enumerate(history.recent_antibiotics):
        path = f"history.recent_antibiotics[{i}]"
        if not course.drug or not course.drug.strip():
            missing(f"{path}.drug")
        if course.days_ago is None:
            missing(f"{path}.days_ago")
        elif course.days_ago < 0:
            invalid(f"{path}.days_ago", "must be 0 or more days")
