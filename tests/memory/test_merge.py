"""Pure merge/update of patient memory, checked through the real rules engine."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from services.consult.domain.memory import (
    EpisodeOutcome,
    FactKind,
    NoteKind,
    PatientMemory,
    RecordedEpisode,
    RecordedFact,
    merge,
    update_after,
)
from tests.factories import patient
from utimesh.rules import TriageEngine, parse_intake
from utimesh.rules.model import Agent, Decision, Intake, PregnancyStatus, PriorEpisode

TODAY = date(2026, 3, 1)
SRC = "consultations/earlier"


def intake(**overrides: Any) -> Intake:
    return parse_intake(patient(**overrides))


def episode(
    days_ago: int, *, treated: bool = True, decision: Decision | None = None
) -> RecordedEpisode:
    engine_regimen = None
    visit = TODAY - timedelta(days=days_ago)
    if treated:
        from utimesh.rules import load_knowledge

        engine_regimen = TriageEngine(load_knowledge()).assess(intake()).regimen
    return RecordedEpisode(
        onset_date=visit - timedelta(days=2),
        treatment_end_date=visit + timedelta(days=4) if treated else None,
        regimen=engine_regimen,
        decision=decision or (Decision.RECOMMEND_TREATMENT if treated else Decision.REFER),
        outcome=EpisodeOutcome.ONGOING,
        recorded_on=visit,
        source_consultation=SRC,
    )


def fact(kind: FactKind, value: str, days_ago: int) -> RecordedFact:
    return RecordedFact(kind, value, TODAY - timedelta(days=days_ago), SRC)


def test_relapse_from_a_stored_episode_fires_rec_001(engine: TriageEngine) -> None:
    assert engine.assess(intake()).decision == Decision.RECOMMEND_TREATMENT
    merged, notes = merge(intake(), PatientMemory(episodes=(episode(20),)), TODAY)
    assert merged.prior_episodes == (
        PriorEpisode(TODAY - timedelta(days=22), True, TODAY - timedelta(days=16)),
    )
    assert [n.kind for n in notes] == [NoteKind.EPISODE_FROM_RECORD]
    assert notes[0].source_consultation == SRC
    a = engine.assess(merged)
    assert a.decision == Decision.REFER and "REC-001" in a.rule_ids


def test_episodes_deduped_and_only_before_today() -> None:
    today_says = [
        {"onset_date": str(TODAY - timedelta(days=42)), "treated": True, "treatment_end_date": None}
    ]
    same_onset = episode(40)  # onset 42 days ago: already reported today
    current = episode(0)  # today's own visit is not a previous episode
    no_uti = episode(100, treated=False, decision=Decision.NO_ANTIBIOTICS)
    merged, notes = merge(
        intake(recurrence__prior_episodes=today_says),
        PatientMemory(episodes=(same_onset, same_onset, current, no_uti, episode(200))),
        TODAY,
    )
    assert merged.prior_episodes is not None
    assert [e.onset_date for e in merged.prior_episodes] == [
        TODAY - timedelta(days=42),
        TODAY - timedelta(days=202),
    ]
    assert len(notes) == 1


def test_allergy_on_record_is_added_flagged_and_excludes_the_agent(engine: TriageEngine) -> None:
    memory = PatientMemory(facts=(fact(FactKind.ALLERGY, "Nitrofurantoin", 700),))
    merged, notes = merge(intake(history__allergies=["penicillin"]), memory, TODAY)
    assert merged.history is not None
    assert merged.history.allergies == ("penicillin", "Nitrofurantoin")
    (note,) = notes
    assert note.kind == NoteKind.ADDED_FROM_RECORD and note.field == "history.allergies"
    assert "not reported today" in note.text and str(TODAY - timedelta(days=700)) in note.text
    a = engine.assess(merged)
    nit = next(e for e in a.agent_evaluations if e.agent == Agent.NIT)
    assert not nit.eligible and a.regimen is not None and a.regimen.agent != Agent.NIT


def test_reported_today_is_not_duplicated_and_old_medications_lapse() -> None:
    memory = PatientMemory(
        facts=(
            fact(FactKind.ALLERGY, "sulfa", 30),
            fact(FactKind.MEDICATION, "methotrexate", 400),
            fact(FactKind.MEDICATION, "warfarin 5 mg", 10),
        )
    )
    merged, notes = merge(
        intake(history__allergies=["SULFA  drugs"], history__medications=[]), memory, TODAY
    )
    assert merged.history is not None
    assert merged.history.allergies == ("SULFA  drugs",)
    assert merged.history.medications == ("warfarin 5 mg",)
    assert [n.field for n in notes] == ["history.medications"]


def test_pregnancy_contradiction_is_flagged_and_today_kept() -> None:
    memory = PatientMemory(facts=(fact(FactKind.PREGNANCY, "pregnant:10", 21),))
    merged, notes = merge(intake(pregnancy_status="not_pregnant"), memory, TODAY)
    assert merged.pregnancy_status == PregnancyStatus.NOT_PREGNANT
    (note,) = notes
    assert note.kind == NoteKind.CONTRADICTION and note.field == "pregnancy_status"
    # a pregnancy long over is no contradiction
    old = PatientMemory(facts=(fact(FactKind.PREGNANCY, "pregnant:30", 21 * 7),))
    assert merge(intake(pregnancy_status="not_pregnant"), old, TODAY)[1] == []


def test_recent_kidney_measurement_fills_unknown_egfr_flagged() -> None:
    memory = PatientMemory(facts=(fact(FactKind.KIDNEY, "28", 30),))
    merged, notes = merge(intake(egfr_ml_min=None), memory, TODAY)
    assert merged.egfr_ml_min == 28.0 and notes[0].field == "egfr_ml_min"
    assert merge(intake(egfr_ml_min=70), memory, TODAY)[0].egfr_ml_min == 70
    stale = PatientMemory(facts=(fact(FactKind.KIDNEY, "28", 120),))
    assert merge(intake(egfr_ml_min=None), stale, TODAY)[0].egfr_ml_min is None


def test_update_after_records_reported_facts_and_the_episode(engine: TriageEngine) -> None:
    reported = intake(history__allergies=["sulfa"], egfr_ml_min=80, lactating=True)
    a = engine.assess(reported)
    update = update_after(reported, a.decision, a.regimen, "consultations/x")
    assert update.episode is not None
    assert update.episode.onset_date == TODAY - timedelta(days=2)
    assert update.episode.treatment_end_date == TODAY + timedelta(days=4)  # 5-day course
    kinds = {(f.kind, f.value) for f in update.facts}
    assert {
        (FactKind.ALLERGY, "sulfa"),
        (FactKind.KIDNEY, "80"),
        (FactKind.PREGNANCY, "not_pregnant"),
        (FactKind.LACTATION, "true"),
    } <= kinds
    follow = update_after(intake(encounter_type="follow_up"), None, None, "consultations/y")
    assert follow.episode is None
