"""Patient memory (pure): what is remembered about a patient, how it is merged into a new intake
before triage, and what a finished consultation adds to it.

Merge policy (conservative: add and flag, never silently resolve):
- Episodes: a remembered episode becomes a `recurrence.prior_episodes` entry when its visit
  was before today's assessment date (never the current one), its decision was treatment or
  referral (a "no antibiotics" visit, e.g. no UTI, is not an episode), and no episode with the
  same onset date is already in today's list or was already added (dedupe by onset date).
  `treated` = a regimen was given; `treatment_end_date` as remembered (visit date + course days).
- Allergies: every allergy ever recorded (an allergy does not lapse) that today's list does not
  match is appended and flagged "on record since ..., not reported today".
- Medications: the same, for medications recorded within the last 365 days.
  Matching is case- and spacing-insensitive, and either text containing the other matches.
- Kidney function: when today's eGFR is unknown, the latest measurement of at most 90 days is
  filled in and flagged (an unknown eGFR would otherwise hide a kidney threshold). A known
  value today is kept as is.
- Pregnancy: "pregnant" on record and still plausible today (recorded gestational weeks plus
  weeks since, or weeks since alone, at most 42) while today says not_pregnant/not_applicable/
  unknown → CONTRADICTION; today's answer is kept. Lactating on record within 180 days, today
  not lactating → CONTRADICTION, today's answer kept.

Update policy (`update_after`): what was REPORTED today (not what memory added) is recorded,
so a fact nobody confirms ages out of the windows above; an episode is recorded at initial
visits only (a follow-up visit belongs to its episode), outcome ONGOING until a recorded
follow-up of that consultation says otherwise (`PatientStore.set_episode_outcome`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Protocol

from utimesh.rules.model import (
    Decision,
    EncounterType,
    History,
    Intake,
    PregnancyStatus,
    PriorEpisode,
    Regimen,
)

MEDICATION_WINDOW = timedelta(days=365)
KIDNEY_WINDOW = timedelta(days=90)
LACTATION_WINDOW = timedelta(days=180)
PREGNANCY_MAX_WEEKS = 42


class FactKind(StrEnum):
    ALLERGY = "allergy"
    MEDICATION = "medication"
    KIDNEY = "kidney"  # value: eGFR mL/min as text
    PREGNANCY = "pregnancy"  # value: pregnancy_status, "pregnant:<weeks>" when weeks known
    LACTATION = "lactation"  # value: "true" / "false"


class EpisodeOutcome(StrEnum):
    ONGOING = "ongoing"
    IMPROVING = "improving"
    FAILED = "failed"
    ADVERSE_EFFECT = "adverse_effect"


class NoteKind(StrEnum):
    ADDED_FROM_RECORD = "added_from_record"
    CONTRADICTION = "contradiction"
    EPISODE_FROM_RECORD = "episode_from_record"


@dataclass(frozen=True, slots=True)
class RecordedFact:
    kind: FactKind
    value: str
    recorded_on: date
    source_consultation: str


@dataclass(frozen=True, slots=True)
class RecordedEpisode:
    onset_date: date
    treatment_end_date: date | None
    regimen: Regimen | None
    decision: Decision | None
    outcome: EpisodeOutcome
    recorded_on: date  # the visit date
    source_consultation: str


@dataclass(frozen=True, slots=True)
class PatientMemory:
    episodes: tuple[RecordedEpisode, ...] = ()
    facts: tuple[RecordedFact, ...] = ()

    def of(self, kind: FactKind) -> tuple[RecordedFact, ...]:
        return tuple(f for f in self.facts if f.kind == kind)


@dataclass(frozen=True, slots=True)
class MemoryNote:
    kind: NoteKind
    field: str
    text: str
    source_consultation: str


@dataclass(frozen=True, slots=True)
class MemoryUpdate:
    """What one consultation adds to a patient's memory; recorded at most once per
    `source_consultation`, however often the consultation's job is retried."""

    episode: RecordedEpisode | None
    facts: tuple[RecordedFact, ...]
    source_consultation: str = ""


class PatientStore(Protocol):
    """Where patients and their memory live. Patients are named "patients/{uuid}"."""

    async def resolve(self, external_id: str) -> str:
        """The patient's name for `external_id`, created when new."""
        ...

    async def load(self, patient: str, *, audit_read: bool = False) -> PatientMemory | None:
        """The patient's memory; None when no such patient."""
        ...

    async def record(self, patient: str, update: MemoryUpdate) -> bool:
        """Add `update` to the patient's memory; False (and nothing added) when the update of
        `update.source_consultation` was recorded before (a retried job)."""
        ...

    async def set_episode_outcome(
        self,
        patient: str,
        source_consultation: str,
        outcome: EpisodeOutcome,
        *,
        actor: str = "",
    ) -> bool:
        """Set the outcome of the episode `source_consultation` recorded for `patient` (a
        follow-up's verdict) and audit `patient.memory.update` as `actor` (empty: the store's
        own actor). False when the patient has no such episode."""
        ...


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _matches(recorded: str, today: tuple[str, ...]) -> bool:
    r = _norm(recorded)
    return any(r == t or (r and t and (r in t or t in r)) for t in map(_norm, today))


def _merge_episodes(
    intake: Intake, memory: PatientMemory, notes: list[MemoryNote]
) -> tuple[PriorEpisode, ...] | None:
    today = intake.assessment_date
    current = intake.prior_episodes
    if today is None or current is None:  # DATA-001 fires anyway; leave the answer as given
        return current
    seen = {e.onset_date for e in current}
    added: list[PriorEpisode] = []
    for ep in sorted(memory.episodes, key=lambda e: (e.onset_date, e.recorded_on)):
        if ep.recorded_on >= today or ep.onset_date > today or ep.onset_date in seen:
            continue
        if ep.decision not in (Decision.RECOMMEND_TREATMENT, Decision.REFER):
            continue
        end = ep.treatment_end_date if ep.regimen is not None else None
        if end is not None and end < ep.onset_date:
            end = None
        seen.add(ep.onset_date)
        added.append(
            PriorEpisode(
                onset_date=ep.onset_date,
                treated=True if ep.regimen is not None else None,
                treatment_end_date=end,
            )
        )
        given = (
            f"treated with {ep.regimen.drug} until {end}"
            if ep.regimen and end
            else ("treated" if ep.regimen else f"decision {ep.decision}")
        )
        notes.append(
            MemoryNote(
                NoteKind.EPISODE_FROM_RECORD,
                "recurrence.prior_episodes",
                f"episode with onset {ep.onset_date} on record (visit {ep.recorded_on}, {given})",
                ep.source_consultation,
            )
        )
    return (*current, *added)


def _merge_list(
    today_list: tuple[str, ...] | None,
    facts: tuple[RecordedFact, ...],
    field: str,
    since: date | None,
    notes: list[MemoryNote],
) -> tuple[str, ...] | None:
    if today_list is None:  # not asked: DATA-001 stays visible, nothing is filled in
        return None
    first: dict[str, RecordedFact] = {}
    last: dict[str, RecordedFact] = {}
    for f in sorted(facts, key=lambda f: f.recorded_on):
        key = _norm(f.value)
        if not key:
            continue
        first.setdefault(key, f)
        last[key] = f
    out = list(today_list)
    for key, f in first.items():
        if since is not None and last[key].recorded_on < since:
            continue
        if _matches(f.value, tuple(out)):
            continue
        out.append(f.value)
        notes.append(
            MemoryNote(
                NoteKind.ADDED_FROM_RECORD,
                field,
                f"'{f.value}' on record since {f.recorded_on}, not reported today",
                f.source_consultation,
            )
        )
    return tuple(out)


def _latest(facts: tuple[RecordedFact, ...]) -> RecordedFact | None:
    return max(facts, key=lambda f: f.recorded_on, default=None)


def merge(
    intake: Intake, memory: PatientMemory, today: date | None = None
) -> tuple[Intake, list[MemoryNote]]:
    """Today's intake with the memory merged in, and what changed or needs a look."""
    ref = intake.assessment_date or today or date.today()
    notes: list[MemoryNote] = []
    merged = replace(intake, prior_episodes=_merge_episodes(intake, memory, notes))

    h = intake.history
    if h is not None:
        allergies = _merge_list(
            h.allergies, memory.of(FactKind.ALLERGY), "history.allergies", None, notes
        )
        medications = _merge_list(
            h.medications,
            memory.of(FactKind.MEDICATION),
            "history.medications",
            ref - MEDICATION_WINDOW,
            notes,
        )
        merged = replace(merged, history=replace(h, allergies=allergies, medications=medications))

    kidney = _latest(tuple(f for f in memory.of(FactKind.KIDNEY) if f.recorded_on <= ref))
    if intake.egfr_ml_min is None and kidney and kidney.recorded_on >= ref - KIDNEY_WINDOW:
        try:
            egfr = float(kidney.value)
        except ValueError:
            egfr = None
        if egfr is not None:
            merged = replace(merged, egfr_ml_min=egfr)
            notes.append(
                MemoryNote(
                    NoteKind.ADDED_FROM_RECORD,
                    "egfr_ml_min",
                    f"eGFR {kidney.value} mL/min measured {kidney.recorded_on} (on record); "
                    "not reported today",
                    kidney.source_consultation,
                )
            )

    preg = _latest(tuple(f for f in memory.of(FactKind.PREGNANCY) if f.recorded_on <= ref))
    if preg is not None and preg.value.startswith(PregnancyStatus.PREGNANT.value):
        weeks_since = (ref - preg.recorded_on).days // 7
        _, _, w = preg.value.partition(":")
        weeks_then = int(w) if w.isdigit() else 0
        now_says = intake.pregnancy_status
        if weeks_then + weeks_since <= PREGNANCY_MAX_WEEKS and now_says in (
            PregnancyStatus.NOT_PREGNANT,
            PregnancyStatus.NOT_APPLICABLE,
            PregnancyStatus.UNKNOWN,
        ):
            assert now_says is not None
            notes.append(
                MemoryNote(
                    NoteKind.CONTRADICTION,
                    "pregnancy_status",
                    f"pregnant on record {preg.recorded_on}"
                    + (f" ({weeks_then} weeks)" if w.isdigit() else "")
                    + f", today '{now_says.value}': kept as answered today; please confirm",
                    preg.source_consultation,
                )
            )

    lact = _latest(tuple(f for f in memory.of(FactKind.LACTATION) if f.recorded_on <= ref))
    if (
        lact is not None
        and lact.value == "true"
        and lact.recorded_on >= ref - LACTATION_WINDOW
        and intake.lactating is False
    ):
        notes.append(
            MemoryNote(
                NoteKind.CONTRADICTION,
                "lactating",
                f"lactating on record {lact.recorded_on}, today not lactating: kept as answered "
                "today; please confirm",
                lact.source_consultation,
            )
        )
    return merged, notes


def _course_end(visit: date, regimen: Regimen) -> date:
    days = regimen.duration.amount if regimen.duration.unit == "days" else 1
    return visit + timedelta(days=max(days, 1) - 1)


def update_after(
    reported: Intake,
    decision: Decision | None,
    regimen: Regimen | None,
    source_consultation: str,
    today: date | None = None,
) -> MemoryUpdate:
    """What a consultation adds to memory: today's REPORTED facts and, at an initial visit, the
    episode (onset = visit date - symptom days when known)."""
    visit = reported.assessment_date or today or date.today()
    facts: list[RecordedFact] = []

    def add(kind: FactKind, value: str) -> None:
        facts.append(RecordedFact(kind, value, visit, source_consultation))

    h: History | None = reported.history
    for a in h.allergies if h and h.allergies else ():
        if a.strip():
            add(FactKind.ALLERGY, a.strip())
    for m in h.medications if h and h.medications else ():
        if m.strip():
            add(FactKind.MEDICATION, m.strip())
    if reported.egfr_ml_min is not None:
        add(FactKind.KIDNEY, f"{reported.egfr_ml_min:g}")
    if reported.pregnancy_status is not None:
        value = reported.pregnancy_status.value
        if reported.pregnancy_status is PregnancyStatus.PREGNANT and (
            reported.gestational_weeks is not None
        ):
            value = f"{value}:{reported.gestational_weeks}"
        add(FactKind.PREGNANCY, value)
    if reported.lactating is not None:
        add(FactKind.LACTATION, "true" if reported.lactating else "false")

    episode = None
    if reported.encounter_type is not EncounterType.FOLLOW_UP and reported.assessment_date:
        days = reported.symptoms.duration_days if reported.symptoms else None
        onset = visit - timedelta(days=days) if days is not None and days >= 0 else visit
        treated = regimen if decision is Decision.RECOMMEND_TREATMENT else None
        episode = RecordedEpisode(
            onset_date=onset,
            treatment_end_date=_course_end(visit, treated) if treated else None,
            regimen=treated,
            decision=decision,
            outcome=EpisodeOutcome.ONGOING,
            recorded_on=visit,
            source_consultation=source_consultation,
        )
    return MemoryUpdate(episode, tuple(facts), source_consultation)
