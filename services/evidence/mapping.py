"""Evidence domain types -> utimesh.evidence.v1 messages (the servicer's only mapping)."""

from __future__ import annotations

from services.evidence.domain.corpus import Passage
from services.evidence.domain.grounding import Citation, ClaimGrounding, SupportLabel
from services.evidence.domain.retrieval import Hit
from utimesh.codec.agents import claim_to_proto
from utimesh.evidence.v1 import evidence_pb2 as epb

SUPPORT_LABELS = {
    SupportLabel.SUPPORTS: epb.SUPPORT_LABEL_SUPPORTS,
    SupportLabel.PARTIAL: epb.SUPPORT_LABEL_PARTIAL,
    SupportLabel.CONTRADICTS: epb.SUPPORT_LABEL_CONTRADICTS,
    SupportLabel.NOT_FOUND: epb.SUPPORT_LABEL_NOT_FOUND,
}


def passage_to_proto(p: Passage) -> epb.Passage:
    return epb.Passage(
        id=p.id,
        source_key=p.source_key,
        organisation=p.organisation,
        title=p.title,
        year=p.year,
        section=p.section,
        url=p.url,
        doi=p.doi,
        jurisdiction=p.jurisdiction,
        evidence_type=p.evidence_type,
        date_reviewed=p.date_reviewed,
        text=p.text,
        rule_ids=p.rule_ids,
    )


def hit_to_proto(h: Hit) -> epb.SearchHit:
    return epb.SearchHit(passage=passage_to_proto(h.passage), score=h.score, rank=h.rank)


def citation_to_proto(c: Citation) -> epb.Citation:
    return epb.Citation(
        passage=passage_to_proto(c.passage),
        support=SUPPORT_LABELS[c.support],
        score=c.score,
        quoted_span=c.quoted_span,
        relevance_rationale=c.relevance_rationale,
    )


def grounding_to_proto(g: ClaimGrounding) -> epb.ClaimGrounding:
    return epb.ClaimGrounding(
        claim=claim_to_proto(g.claim),
        support=SUPPORT_LABELS[g.support],
        citations=[citation_to_proto(c) for c in g.citations],
        flagged=g.flagged,
        flag_reason=g.flag_reason,
    )
