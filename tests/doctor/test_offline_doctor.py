"""The offline doctor: explains triage, proposes only triage's regimens, names what claims rest on."""

from __future__ import annotations

from typing import Any

import pytest

from services.doctor.domain import offline
from tests.conftest import case_params
from tests.factories import patient
from utimesh.agents.models import OFFLINE, CaseContext, Concern, Severity
from utimesh.codec.agents import proposed_from_regimen, regimen_from_proposed
from utimesh.rules import Agent, Decision, Knowledge, TriageEngine, parse_intake


def context(engine: TriageEngine, profile: str | None = None, **overrides: Any) -> CaseContext:
    intake = parse_intake(patient(**overrides))
    return CaseContext(intake=intake, triage=engine.assess(intake, profile))


@pytest.mark.parametrize("case", case_params())
def test_offline_assessment_follows_triage(
    engine: TriageEngine, knowledge: Knowledge, case: dict[str, Any]
) -> None:
    intake = parse_intake(case["patient"])
    ctx = CaseContext(intake=intake, triage=engine.assess(intake, case["profile"]))
    a = offline.propose(ctx, knowledge.ruleset(case["profile"]))
    assert a.run.generated_by == OFFLINE
    proposed = regimen_from_proposed(a.proposed_regimen) if a.proposed_regimen else None
    assert proposed == ctx.triage.regimen
    assert a.claims, "every assessment makes claims"
    assert all(c.rule_ids or c.facts for c in a.claims)
    cited = {r for c in a.claims for r in c.rule_ids}
    assert set(ctx.triage.rule_ids) - {"FU-001", "FU-002"} <= cited | {
        h for h in ctx.triage.rule_ids if h.startswith("RX-SEL-")
    }
    if ctx.triage.decision is Decision.RECOMMEND_TREATMENT:
        assert a.rationale and not a.referral_rationale
    else:
        assert a.referral_rationale and a.proposed_regimen is None


def test_summary_has_no_free_text(engine: TriageEngine, knowledge: Knowledge) -> None:
    ctx = context(engine, history__medications=["Jane Doe's lisinopril 10 mg"])
    a = offline.propose(ctx, knowledge.ruleset())
    text = a.model_dump_json()
    assert "Jane" not in text


def test_revise_takes_the_suggested_eligible_agent(
    engine: TriageEngine, knowledge: Knowledge
) -> None:
    ctx = context(engine)
    first = offline.propose(ctx, knowledge.ruleset())
    concern = Concern(
        severity=Severity.MODERATE,
        code="PREFERENCE",
        text="prefer a single dose",
        suggested_agent=Agent.FOS,
    )
    revised = offline.revise(ctx, knowledge.ruleset(), first, [concern])
    assert revised.proposed_regimen is not None and revised.proposed_regimen.agent is Agent.FOS
    assert [r.concern_code for r in revised.concern_responses] == ["PREFERENCE"]


def test_revise_moves_to_the_next_eligible_regimen(
    engine: TriageEngine, knowledge: Knowledge
) -> None:
    ctx = context(engine, history__allergies=["nitrofurantoin"])
    first = offline.propose(ctx, knowledge.ruleset())
    assert first.proposed_regimen is not None and first.proposed_regimen.agent is Agent.SXT
    revised = offline.revise(
        ctx, knowledge.ruleset(), first, [Concern(severity=Severity.HIGH, code="X", text="x")]
    )
    assert revised.proposed_regimen is not None and revised.proposed_regimen.agent is Agent.TMP


def test_revise_after_an_invalid_proposal_returns_to_triage_first_choice(
    engine: TriageEngine, knowledge: Knowledge
) -> None:
    ctx = context(engine)
    wrong = offline.propose(ctx, knowledge.ruleset()).model_copy(update={"proposed_regimen": None})
    revised = offline.revise(
        ctx, knowledge.ruleset(), wrong, [Concern(severity=Severity.HIGH, code="NO_PLAN", text="x")]
    )
    assert revised.proposed_regimen == proposed_from_regimen(ctx.triage.regimen)  # type: ignore[arg-type]


def test_revise_never_prescribes_for_a_referral(engine: TriageEngine, knowledge: Knowledge) -> None:
    ctx = context(engine, red_flags__fever=True)
    first = offline.propose(ctx, knowledge.ruleset())
    revised = offline.revise(
        ctx,
        knowledge.ruleset(),
        first,
        [Concern(severity=Severity.HIGH, code="X", text="treat her")],
    )
    assert revised.proposed_regimen is None
    assert "urgently" in revised.referral_rationale.lower()
