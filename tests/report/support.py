"""Test support for the report service: plausible evidence groundings for a consultation (so
that report tests do not depend on the evidence service), and the invariants every answer must
keep (no id that the consultation or the report lacks)."""

from __future__ import annotations

from services.report.domain.answer import known_rule_ids
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.report.v1 import report_pb2 as rpb

TEST_CORPUS = "test-corpus-2026.1"
FLAGGED_CLAIM_TEXT = "Test claim that no passage supports."


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + (dot.strip() if dot else "")


def _passage(c: cpb.Consultation, claim: apb.Claim) -> epb.Passage:
    rule_id = claim.rule_ids[0] if claim.rule_ids else "NONE"
    hit = next((h for h in c.triage.rules_fired if h.rule_id == rule_id), None)
    return epb.Passage(
        id=f"test-{claim.id.lower()}-{rule_id.lower()}",
        source_key=hit.source_keys[0] if hit is not None and hit.source_keys else "TEST",
        organisation="Test Guideline Group",
        title=f"Test guideline for {rule_id}",
        year=2024,
        section=f"§{claim.id}",
        url="https://example.org/test-guideline",
        jurisdiction=c.triage.profile or "CA-ON",
        evidence_type="guideline",
        date_reviewed="2026-01-01",
        # The passage contains the quoted span verbatim, plus words of its own.
        text=f"{claim.text} Test passage for the report service only.",
        rule_ids=list(claim.rule_ids),
    )


def with_groundings(
    consultation: cpb.Consultation, *, replace: bool = False, flag_one: bool = True
) -> cpb.Consultation:
    """A copy of `consultation` whose every claim is grounded: one citation per claim whose
    passage text contains the quoted span. When the consultation already has groundings (the
    evidence service ran) they are kept, unless `replace`. With `flag_one`, one extra claim is
    flagged as unsupported, so that reports must show it."""
    c = cpb.Consultation()
    c.CopyFrom(consultation)
    if replace:
        del c.groundings[:]
        c.corpus_version = ""
    if c.groundings:
        return c
    for claim in (*c.assessment.claims, *c.review.claims):
        passage = _passage(c, claim)
        span = _first_sentence(claim.text)
        c.groundings.add(
            claim=claim,
            support=epb.SUPPORT_LABEL_SUPPORTS,
            citations=[
                epb.Citation(
                    passage=passage,
                    support=epb.SUPPORT_LABEL_SUPPORTS,
                    score=0.9,
                    quoted_span=span,
                    relevance_rationale=f"The passage states what claim {claim.id} says.",
                )
            ],
        )
    if flag_one:
        c.groundings.add(
            claim=apb.Claim(id="D99", text=FLAGGED_CLAIM_TEXT, kind=apb.CLAIM_KIND_SAFETY),
            support=epb.SUPPORT_LABEL_NOT_FOUND,
            flagged=True,
            flag_reason="no passage supports this claim",
        )
    if not c.corpus_version:
        c.corpus_version = TEST_CORPUS
    return c


def passage_ids(c: cpb.Consultation) -> set[str]:
    return {citation.passage.id for g in c.groundings for citation in g.citations}


def assert_answer_ids_exist(
    response: rpb.AnswerQuestionResponse, c: cpb.Consultation, section_ids: set[str]
) -> None:
    """No passage, section or rule id absent from the consultation or its report; every
    quoted span verbatim in its passage."""
    passages = {
        citation.passage.id: citation.passage.text for g in c.groundings for citation in g.citations
    }
    for p in response.passages:
        assert p.passage_id in passages, f"invented passage {p.passage_id}"
        assert p.quoted_span and p.quoted_span in passages[p.passage_id], p.quoted_span
    for s in response.sections:
        assert s.id in section_ids, f"unknown section {s.id}"
    known = known_rule_ids(c)
    for r in response.rule_ids:
        assert r in known, f"rule {r} is not in the consultation"
