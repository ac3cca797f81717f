"""Grounding: labels, verbatim quoted spans, rationales, flags, determinism; over the claims the
offline doctor makes for every development case, and over hand-written claims."""

from __future__ import annotations

from typing import Any

import pytest

from services.doctor.domain import offline
from services.evidence.domain.corpus import Corpus, parse_corpus
from services.evidence.domain.grounding import (
    DEFAULT_MAX_CITATIONS,
    ClaimGrounding,
    SupportLabel,
    ground,
)
from services.evidence.domain.retrieval import Retriever
from tests.conftest import case_params
from tests.evidence.conftest import normaliser
from tests.factories import patient
from utimesh.agents.models import CaseContext, Claim, ClaimKind
from utimesh.rules import Knowledge, Ruleset, TriageEngine, parse_intake


def claim(text: str, *rule_ids: str, kind: ClaimKind = ClaimKind.TREATMENT) -> Claim:
    return Claim(id="C1", text=text, kind=kind, rule_ids=rule_ids)


def one(
    c: Claim, corpus: Corpus, retriever: Retriever, jurisdiction: str = "", n: int = 3
) -> ClaimGrounding:
    [g] = ground([c], corpus, retriever, jurisdiction, n)
    return g


def check_invariants(g: ClaimGrounding, max_citations: int = DEFAULT_MAX_CITATIONS) -> None:
    """What holds for every grounding, whatever the claim."""
    assert g.support in SupportLabel
    assert g.flagged is (g.support is not SupportLabel.SUPPORTS)
    assert bool(g.flag_reason) is g.flagged
    assert len(g.citations) <= max_citations
    assert (g.support is SupportLabel.NOT_FOUND) is (not g.citations)
    if g.citations:
        assert any(c.support is g.support for c in g.citations), "the label is shown"
    for c in g.citations:
        assert c.support is not SupportLabel.NOT_FOUND
        assert c.quoted_span and c.quoted_span in c.passage.text, "spans are verbatim"
        assert c.relevance_rationale.startswith("The passage ")
        assert c.relevance_rationale.endswith(".") and c.relevance_rationale.count("; ") == 1
        assert 0.0 <= c.score <= 1.0
    assert len({c.passage.id for c in g.citations}) == len(g.citations)


# --- the offline doctor's claims over every development case -----------------------------------


@pytest.mark.parametrize("case", case_params())
def test_doctor_claims_are_grounded(
    engine: TriageEngine,
    knowledge: Knowledge,
    corpus: Corpus,
    retriever: Retriever,
    case: dict[str, Any],
) -> None:
    intake = parse_intake(case["patient"])
    ctx = CaseContext(intake=intake, triage=engine.assess(intake, case["profile"]))
    ruleset = knowledge.ruleset(case["profile"])
    claims = offline.propose(ctx, ruleset).claims
    groundings = ground(claims, corpus, retriever, case["profile"])
    assert [g.claim for g in groundings] == list(claims), "every claim, in order, none dropped"
    for g in groundings:
        check_invariants(g)
        for c in g.citations:
            if c.support is SupportLabel.SUPPORTS:
                assert c.passage.text.count(c.quoted_span) >= 1
    sourced = {h.rule_id for h in ctx.triage.rules_fired if ruleset.rules[h.rule_id].sources}
    cited = {
        r
        for g in groundings
        for c in g.citations
        for r in c.passage.rule_ids
        if r in g.claim.rule_ids
    }
    assert sourced <= cited, f"fired rules never cited: {sorted(sourced - cited)}"
    unsupported = [(g.claim.rule_ids, g.support.value) for g in groundings if g.flagged]
    assert unsupported == [], "the rules' own claims are supported by their sources"


# --- hand-written claims on the shipped corpus ------------------------------------------------------


def test_a_wrong_course_length_is_contradicted_and_flagged(
    corpus: Corpus, retriever: Retriever
) -> None:
    g = one(claim("nitrofurantoin 100 mg twice daily for 7 days", "RX-SEL-NIT"), corpus, retriever)
    check_invariants(g)
    assert g.support is SupportLabel.CONTRADICTS and g.flagged
    assert "5 days" in g.flag_reason and "7 days" in g.flag_reason
    first = g.citations[0]
    assert first.support is SupportLabel.CONTRADICTS
    assert "5 days" in first.quoted_span or "5-day" in first.quoted_span
    assert "course length as 5 days where the claim says 7 days" in first.relevance_rationale


def test_the_right_course_is_supported_with_a_rationale(
    corpus: Corpus, retriever: Retriever
) -> None:
    text = "The proposed regimen is nitrofurantoin (nitrofurantoin 100 mg) PO BID for 5 days."
    g = one(claim(text, "RX-SEL-NIT", "RX-001"), corpus, retriever, "CA-ON")
    check_invariants(g)
    assert g.support is SupportLabel.SUPPORTS and not g.flagged
    best = next(c for c in g.citations if "100 mg" in c.quoted_span)
    linked = " and ".join(r for r in ("RX-SEL-NIT", "RX-001") if r in best.passage.rule_ids)
    assert best.support is SupportLabel.SUPPORTS
    assert best.relevance_rationale == (
        "The passage gives the nitrofurantoin course (100 mg, twice daily, 5 days), which is "
        f"what the claim proposes; it is a source of {linked}."
    )


def test_an_unrelated_claim_is_not_found_and_flagged(corpus: Corpus, retriever: Retriever) -> None:
    g = one(
        claim(
            "She enjoys gardening and painting watercolours on weekends.", kind=ClaimKind.DIAGNOSIS
        ),
        corpus,
        retriever,
    )
    check_invariants(g)
    assert g.support is SupportLabel.NOT_FOUND and g.flagged and g.citations == ()


def test_a_claim_without_rules_is_grounded_by_search(corpus: Corpus, retriever: Retriever) -> None:
    g = one(
        claim(
            "Avoid TMP-SMX with warfarin: the INR rises and bleeding follows.",
            kind=ClaimKind.SAFETY,
        ),
        corpus,
        retriever,
    )
    check_invariants(g)
    assert g.support is SupportLabel.SUPPORTS
    assert any("DDI-005" in c.passage.rule_ids for c in g.citations)
    assert all("found by search" in c.relevance_rationale for c in g.citations)


def test_grounding_is_deterministic(
    engine: TriageEngine, knowledge: Knowledge, corpus: Corpus, retriever: Retriever
) -> None:
    claims: list[Claim] = []
    for overrides in ({}, {"history__allergies": ["nitrofurantoin"]}, {"age": 70}):
        intake = parse_intake(patient(**overrides))
        ctx = CaseContext(intake=intake, triage=engine.assess(intake, "CA-ON"))
        claims += offline.propose(ctx, knowledge.ruleset("CA-ON")).claims
    claims.append(claim("nitrofurantoin 100 mg twice daily for 7 days"))
    assert ground(claims, corpus, retriever, "CA-ON", 5) == ground(
        claims, corpus, retriever, "CA-ON", 5
    )


def test_max_citations(corpus: Corpus, retriever: Retriever) -> None:
    c = claim("Nitrofurantoin 100 mg BID for 5 days", "RX-SEL-NIT", "RX-001")
    assert len(one(c, corpus, retriever, n=1).citations) == 1
    assert len(one(c, corpus, retriever, n=5).citations) == 5
    [default] = ground([c], corpus, retriever, "", 0)
    assert len(default.citations) == DEFAULT_MAX_CITATIONS
    with pytest.raises(ValueError, match="max_citations"):
        ground([c], corpus, retriever, "", 6)


def test_own_sources_come_first(corpus: Corpus, retriever: Retriever) -> None:
    g = one(
        claim("Fever: refer urgently.", "RF-001", kind=ClaimKind.REFERRAL),
        corpus,
        retriever,
        "CA-ON",
    )
    own = corpus.rule_sources("RF-001")
    assert g.citations[0].passage.source_key in own
    assert g.citations[0].passage.jurisdiction == "CA-ON"  # local first among own sources


# --- the fixture corpus: exact expectations ----------------------------------------------------------


def test_linked_passage_supports_with_the_quoted_sentence(
    small_corpus: Corpus, small: Retriever
) -> None:
    g = one(
        claim("Counselling for nitrofurantoin: Take with food.", "RX-SEL-NIT"), small_corpus, small
    )
    check_invariants(g)
    [first, *_] = g.citations
    assert (first.passage.id, first.support) == ("fx-nit-regimen", SupportLabel.SUPPORTS)
    assert first.quoted_span == "Take it with food."
    assert first.relevance_rationale == (
        "The passage names nitrofurantoin and food, which the proposed treatment rests on; "
        "it is a source of RX-SEL-NIT."
    )


def test_rule_sources_decide_over_search(small_corpus: Corpus, small: Retriever) -> None:
    """A 7-day claim resting on RX-SEL-NIT is contradicted by the rule's own 5-day source even
    though an unlinked pregnancy passage says 7 days; without the rule the 7-day passage
    confirms the number and the claim is supported."""
    text = "nitrofurantoin 100 mg twice daily for 7 days"
    linked = one(claim(text, "RX-SEL-NIT"), small_corpus, small)
    assert linked.support is SupportLabel.CONTRADICTS
    assert linked.citations[0].passage.id == "fx-nit-regimen"
    assert linked.citations[0].quoted_span.startswith("Nitrofurantoin (Macrobid) 100 mg")
    free = one(claim(text), small_corpus, small)
    check_invariants(free)
    assert free.support is SupportLabel.SUPPORTS
    labels = {c.passage.id: c.support for c in free.citations}
    assert labels["fx-nit-pregnancy"] is SupportLabel.SUPPORTS
    assert labels["fx-nit-regimen"] is SupportLabel.CONTRADICTS


def test_kidney_threshold_contradiction(small_corpus: Corpus, small: Retriever) -> None:
    g = one(
        claim(
            "Avoid nitrofurantoin below a creatinine clearance of 45 mL/min.", kind=ClaimKind.SAFETY
        ),
        small_corpus,
        small,
    )
    assert g.support is SupportLabel.CONTRADICTS
    assert "30 mL/min where the claim says 45 mL/min" in g.flag_reason


def test_a_claim_stating_numbers_needs_a_passage_stating_them(
    small_corpus: Corpus, small: Retriever
) -> None:
    g = one(claim("Fosfomycin is an alternative: a single 3 g dose."), small_corpus, small)
    assert g.support is SupportLabel.SUPPORTS
    assert g.citations[0].relevance_rationale.startswith(
        "The passage gives the fosfomycin course (3 g, a single dose)"
    )
    partial = one(claim("Fosfomycin 3 g twice daily for 3 days."), small_corpus, small)
    assert partial.support is SupportLabel.CONTRADICTS  # frequency: single dose, not twice daily


def test_partial_support_is_flagged(small_corpus: Corpus, small: Retriever) -> None:
    g = one(
        claim(
            "Fever with cystitis in an older adult may be a sign of sepsis",
            kind=ClaimKind.DIAGNOSIS,
        ),
        small_corpus,
        small,
    )
    check_invariants(g)
    assert g.support is SupportLabel.PARTIAL and g.flagged
    assert g.flag_reason.startswith("Only partly supported")


def test_empty_claim_list(small_corpus: Corpus, small: Retriever) -> None:
    assert ground([], small_corpus, small) == []


def test_retriever_of_another_corpus_is_refused(corpus: Corpus, small: Retriever) -> None:
    with pytest.raises(ValueError, match="another corpus"):
        ground([claim("x")], corpus, small)


def test_mixed_numbers_across_sources_are_flagged(ruleset: Ruleset) -> None:
    """Each number is confirmed by one source and contradicted by the other: no passage states
    the claim, so it is flagged as contradicted, with both passages shown."""
    base = {
        "section": "Treatment",
        "jurisdiction": "CA",
        "evidence_type": "guideline",
        "date_reviewed": "2026-01-01",
    }
    doc = {
        "version": "mixed",
        "reviewed": "2026-01-01",
        "passage": [
            {**base, "id": "pa", "source_key": "BD", "text": "Nitrofurantoin 100 mg for 7 days."},
            {**base, "id": "pb", "source_key": "SK", "text": "Nitrofurantoin 50 mg for 5 days."},
        ],
    }
    corpus = parse_corpus(doc, ruleset)
    retriever = Retriever(corpus, normaliser(ruleset))
    g = one(claim("Nitrofurantoin 100 mg for 5 days"), corpus, retriever)
    check_invariants(g)
    assert g.support is SupportLabel.CONTRADICTS and g.flagged
    assert {c.passage.id: c.support for c in g.citations} == {
        "pa": SupportLabel.CONTRADICTS,
        "pb": SupportLabel.CONTRADICTS,
    }
