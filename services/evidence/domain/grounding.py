"""Claim grounding, offline and deterministic: for each claim, the passages that bear on it, a
support label, the quoted span and one sentence on why the passage is relevant.

Candidates, in order: the passages linked to the claim's rule ids (for each rule, passages of
the rule's own sources first, local jurisdictions before others), then passages retrieved with
the claim text. Each candidate is judged from matched concepts and stated numbers:

* CONTRADICTS: the passage states a number for the same thing as the claim (the dose, dosing
  frequency or course length of the same drug, or a kidney-function threshold for the same
  action) and none of its values matches the claim's (claim "7 days", passage "5 days").
* SUPPORTS: no contradiction, and one of: the passage is linked to one of the claim's rules and
  shares a concept or a number with it; the passage states every number of the claim (same
  drug, same kind, same value); or the passage covers at least half of the claim's concepts
  (weighted by rarity, two concepts at least) and, when the claim states numbers, states one of
  them too.
* PARTIAL: some overlap (or a link) without the above.
* otherwise the passage is not cited.

The claim's label comes from its rule-linked passages when it has any (a rule's own sources are
the authority for a claim resting on the rule), else from all candidates: CONTRADICTS when a
number of the claim is contradicted and confirmed by no passage, else SUPPORTS when a passage
supports it, else PARTIAL, else NOT_FOUND. A claim is flagged whenever it is not SUPPORTS; it is
never dropped. The quoted span is always a whole sentence taken verbatim from the passage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.evidence.domain.corpus import Corpus, Passage
from services.evidence.domain.retrieval import (
    AnalysedPassage,
    Retriever,
    Sentence,
    jurisdiction_rank,
)
from services.evidence.domain.text import (
    AGENT_NAMES,
    Fact,
    content_of,
    describe,
    display,
    facts_agree,
    merge_facts,
    sentence_facts,
    sentence_spans,
)
from utimesh.agents.models import OFFLINE, Claim, ClaimKind

GENERATED_BY = OFFLINE  # no model judged support
DEFAULT_MAX_CITATIONS = 3
MAX_CITATIONS = 5
RETRIEVAL_DEPTH = 8  # passages retrieved per claim, beyond the linked ones
STRONG_SHARE = 0.5  # weighted share of the claim's concepts for SUPPORTS without a rule link
STRONG_MIN_TERMS = 2
PARTIAL_SHARE = 0.2
RATIONALE_CONCEPTS = 4  # concepts named in a rationale, at most


class SupportLabel(StrEnum):
    SUPPORTS = "supports"
    PARTIAL = "partial"
    CONTRADICTS = "contradicts"
    NOT_FOUND = "not_found"


class GroundingError(RuntimeError):
    """An internal invariant failed (a bug, never bad input)."""


@dataclass(frozen=True, slots=True)
class Citation:
    passage: Passage
    support: SupportLabel
    score: float  # weighted share of the claim's concepts the passage covers, 0..1
    quoted_span: str  # a sentence of passage.text, verbatim
    relevance_rationale: str


@dataclass(frozen=True, slots=True)
class ClaimGrounding:
    claim: Claim
    support: SupportLabel
    citations: tuple[Citation, ...]
    flagged: bool
    flag_reason: str


# --- claims ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ClaimView:
    claim: Claim
    search_terms: tuple[str, ...]  # retrieval terms of the claim text
    terms: tuple[str, ...]  # content terms, first occurrence order
    weights: Mapping[str, float]
    total: float
    facts: Mapping[tuple[str, str, str], Fact]


def _view(claim: Claim, retriever: Retriever) -> _ClaimView:
    search_terms = tuple(retriever.normaliser.terms(claim.text))
    terms = tuple(content_of(search_terms))
    weights = {t: retriever.idf(t) for t in terms}
    facts = merge_facts(
        f for s, e in sentence_spans(claim.text) for f in sentence_facts(claim.text[s:e])
    )
    return _ClaimView(claim, search_terms, terms, weights, sum(weights.values()), facts)


# --- judging one passage -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Judgement:
    analysed: AnalysedPassage
    label: SupportLabel
    share: float
    linked_rules: tuple[str, ...]
    matched: tuple[str, ...]  # claim concepts the passage names, in claim order
    agreements: tuple[tuple[Fact, Fact], ...]  # (claim fact, passage fact)
    conflicts: tuple[tuple[Fact, Fact], ...]
    retrieval_rank: int  # 0 for linked passages

    def citation(self, view: _ClaimView, retriever: Retriever) -> Citation:
        """The citation, with its quoted span and rationale (built only for shown citations)."""
        span = _quote(self.analysed, set(self.matched), self.agreements, self.conflicts, retriever)
        rationale = _rationale(
            view, self.label, self.matched, self.agreements, self.conflicts, self.linked_rules
        )
        return Citation(self.analysed.passage, self.label, round(self.share, 4), span, rationale)


_KIND_NAMES = {
    "dose": "dose",
    "frequency": "dosing frequency",
    "duration": "course length",
    "renal": "kidney-function threshold",
}
_BEARS_ON = {
    ClaimKind.TREATMENT: "the proposed treatment",
    ClaimKind.SAFETY: "the safety point",
    ClaimKind.REFERRAL: "the referral",
    ClaimKind.DIAGNOSIS: "the assessment",
    ClaimKind.FOLLOW_UP: "the follow-up plan",
}


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _subject(fact: Fact) -> str:
    drug = AGENT_NAMES.get(fact.drug, "")
    if fact.kind == "renal":
        return f"the {drug} kidney-function threshold" if drug else "the kidney-function threshold"
    return f"the {drug} {_KIND_NAMES[fact.kind]}" if drug else f"the {_KIND_NAMES[fact.kind]}"


def _stated(agreements: Sequence[tuple[Fact, Fact]]) -> str:
    """ "the nitrofurantoin course (100 mg, twice daily, 5 days)" for agreeing facts."""
    by_drug: dict[str, list[str]] = {}
    order = {"dose": 0, "frequency": 1, "duration": 2, "renal": 3}
    for claim_fact, _ in sorted(agreements, key=lambda a: (a[0].drug, order[a[0].kind])):
        by_drug.setdefault(claim_fact.drug, []).append(describe(claim_fact))
    parts = []
    for drug, values in by_drug.items():
        name = AGENT_NAMES.get(drug, "")
        if all(f.kind == "renal" for f, _ in agreements if f.drug == drug):
            what = (
                f"the {name} kidney-function threshold" if name else "the kidney-function threshold"
            )
        else:
            what = f"the {name} course" if name else "the course"
        parts.append(f"{what} ({', '.join(values)})")
    return _and(parts)


def _rationale(
    view: _ClaimView,
    label: SupportLabel,
    matched: Sequence[str],
    agreements: Sequence[tuple[Fact, Fact]],
    conflicts: Sequence[tuple[Fact, Fact]],
    linked_rules: Sequence[str],
) -> str:
    concepts = _and([display(t) for t in matched[:RATIONALE_CONCEPTS]])
    bears = _BEARS_ON[view.claim.kind]
    verb = "proposes" if view.claim.kind is ClaimKind.TREATMENT else "states"
    if label is SupportLabel.CONTRADICTS:
        claim_fact, passage_fact = conflicts[0]
        head = (
            f"The passage gives {_subject(passage_fact)} as {describe(passage_fact)} "
            f"where the claim says {describe(claim_fact)}"
        )
    elif agreements and label is SupportLabel.SUPPORTS:
        head = f"The passage gives {_stated(agreements)}, which is what the claim {verb}"
    elif label is SupportLabel.SUPPORTS:
        head = f"The passage names {concepts}, which {bears} rests on"
    elif matched:
        missing = (
            f"does not state the claim's {_and(sorted({_KIND_NAMES[f.kind] for f in view.facts.values()}))}"
            if view.facts and not agreements
            else "does not establish the claim as a whole"
        )
        head = f"The passage names {concepts}, which bear on {bears}, but it {missing}"
    else:
        head = "The passage shares no concept with the claim's wording"
    if linked_rules:
        tail = f"it is a source of {_and(list(linked_rules))}"
    else:
        tail = "it was found by search, not through the claim's rules"
    return f"{head}; {tail}."


def _judge(
    view: _ClaimView,
    analysed: AnalysedPassage,
    retriever: Retriever,
    retrieval_rank: int,
) -> _Judgement | None:
    passage = analysed.passage
    linked = tuple(r for r in view.claim.rule_ids if r in passage.rule_ids)
    matched = [t for t in view.terms if t in analysed.content]
    share = sum(view.weights[t] for t in matched) / view.total if view.total else 0.0
    agreements: list[tuple[Fact, Fact]] = []
    conflicts: list[tuple[Fact, Fact]] = []
    for key, claim_fact in view.facts.items():
        passage_fact = analysed.facts.get(key)
        if passage_fact is None:
            continue
        pair = (claim_fact, passage_fact)
        (agreements if facts_agree(claim_fact, passage_fact) else conflicts).append(pair)
    if conflicts:
        label = SupportLabel.CONTRADICTS
    elif (
        (linked and (matched or agreements))
        or (view.facts and len(agreements) == len(view.facts))
        or (
            share >= STRONG_SHARE
            and len(matched) >= STRONG_MIN_TERMS
            and (agreements or not view.facts)
        )
    ):
        label = SupportLabel.SUPPORTS
    elif linked or agreements or (matched and share >= PARTIAL_SHARE):
        label = SupportLabel.PARTIAL
    else:
        return None
    return _Judgement(
        analysed=analysed,
        label=label,
        share=share,
        linked_rules=linked,
        matched=tuple(matched),
        agreements=tuple(agreements),
        conflicts=tuple(conflicts),
        retrieval_rank=retrieval_rank,
    )


def _quote(
    analysed: AnalysedPassage,
    matched: set[str],
    agreements: Sequence[tuple[Fact, Fact]],
    conflicts: Sequence[tuple[Fact, Fact]],
    retriever: Retriever,
) -> str:
    """The sentence that carries the judgement: the one stating a contradicting number, else the
    one with the most matched concepts and agreeing numbers (the rarest concepts break ties,
    then the earliest sentence)."""
    text = analysed.passage.text
    chosen = None
    if conflicts:
        bad = {c[0].key: c[0] for c in conflicts}
        chosen = next(
            (
                s
                for s in analysed.sentences
                if any(f.key in bad and not facts_agree(bad[f.key], f) for f in s.facts)
            ),
            None,
        )
    if chosen is None:
        agreeing = {a[0].key: a[0] for a in agreements}

        def weight(s: Sentence) -> tuple[int, float]:
            hits = s.terms & matched
            facts = sum(1 for f in s.facts if f.key in agreeing and facts_agree(agreeing[f.key], f))
            return (len(hits) + facts, round(sum(retriever.idf(t) for t in hits), 6))

        best = max(weight(s) for s in analysed.sentences)
        chosen = next(s for s in analysed.sentences if weight(s) == best)
    span = text[chosen.start : chosen.end]
    if not span or span not in text:  # the invariant behind every citation
        raise GroundingError(f"quoted span is not verbatim in passage {analysed.passage.id}")
    return span


# --- one claim --------------------------------------------------------------------------------------

_LABEL_STRENGTH = {
    SupportLabel.SUPPORTS: 0,
    SupportLabel.CONTRADICTS: 1,
    SupportLabel.PARTIAL: 2,
}


def _claim_label(judgements: Sequence[_Judgement]) -> SupportLabel:
    if not judgements:
        return SupportLabel.NOT_FOUND
    contradicted = {c[0].key for j in judgements for c in j.conflicts}
    confirmed = {a[0].key for j in judgements for a in j.agreements}
    if contradicted - confirmed:
        return SupportLabel.CONTRADICTS
    if any(j.label is SupportLabel.SUPPORTS for j in judgements):
        return SupportLabel.SUPPORTS
    if any(j.label is SupportLabel.PARTIAL for j in judgements):
        return SupportLabel.PARTIAL
    # Only contradicting passages, each number confirmed by another: mixed evidence, flagged.
    return SupportLabel.CONTRADICTS


def _flag_reason(label: SupportLabel, decisive: Sequence[_Judgement]) -> str:
    if label is SupportLabel.SUPPORTS:
        return ""
    if label is SupportLabel.NOT_FOUND:
        return "No passage of the corpus bears on this claim."
    if label is SupportLabel.CONTRADICTS:
        confirmed = {a[0].key for j in decisive for a in j.agreements}
        # An unconfirmed contradiction when there is one, else the first (mixed evidence).
        j, (claim_fact, passage_fact) = min(
            ((j, c) for j in decisive for c in j.conflicts),
            key=lambda jc: jc[1][0].key in confirmed,
        )
        source = j.analysed.passage.organisation or j.analysed.passage.source_key
        return (
            f"Contradicted by {source} ({j.analysed.passage.id}): it gives {_subject(passage_fact)} "
            f"as {describe(passage_fact)} where the claim says {describe(claim_fact)}."
        )
    return "Only partly supported: no passage of the corpus states the claim as a whole."


def _round_robin(groups: Iterable[Sequence[_Judgement]]) -> list[_Judgement]:
    lists = [list(g) for g in groups]
    out: list[_Judgement] = []
    seen: set[str] = set()
    depth = max((len(g) for g in lists), default=0)
    for i in range(depth):
        for g in lists:
            if i < len(g) and g[i].analysed.passage.id not in seen:
                seen.add(g[i].analysed.passage.id)
                out.append(g[i])
    return out


def ground_claim(
    claim: Claim, retriever: Retriever, jurisdiction: str, max_citations: int
) -> ClaimGrounding:
    """Ground one claim; see the module doc for the rules."""
    view = _view(claim, retriever)

    # Linked passages, per rule of the claim.
    linked_groups: list[list[_Judgement]] = []
    linked_ids: set[str] = set()
    for rule_id in dict.fromkeys(claim.rule_ids):
        own_sources = retriever.corpus.rule_sources(rule_id)
        group = []
        for passage in retriever.corpus.by_rule(rule_id):
            judged = _judge(view, retriever.analysis(passage.id), retriever, 0)
            if judged is not None:
                group.append(judged)
                linked_ids.add(passage.id)
        group.sort(
            key=lambda j: (
                j.analysed.passage.source_key not in own_sources,
                jurisdiction_rank(j.analysed.passage.jurisdiction, jurisdiction),
                own_sources.index(j.analysed.passage.source_key)
                if j.analysed.passage.source_key in own_sources
                else len(own_sources),
                -round(j.share, 6),
                j.analysed.index,
            )
        )
        linked_groups.append(group)
    linked = [j for g in linked_groups for j in g]

    # Retrieved passages, beyond the linked ones.
    retrieved: list[_Judgement] = []
    for hit in retriever.search(
        claim.text, RETRIEVAL_DEPTH + len(linked_ids), terms=view.search_terms
    ):
        if hit.passage.id in linked_ids:
            continue
        judged = _judge(view, retriever.analysis(hit.passage.id), retriever, hit.rank)
        if judged is not None:
            retrieved.append(judged)
        if len(retrieved) >= RETRIEVAL_DEPTH:
            break

    decisive = linked or retrieved
    label = _claim_label(decisive)

    def first_label(j: _Judgement) -> int:
        # The claim's own label first, so that the citations shown carry it.
        return -1 if j.label is label else _LABEL_STRENGTH[j.label]

    for group in linked_groups:
        group.sort(key=first_label)  # stable: keeps the source and jurisdiction order within
    retrieved.sort(
        key=lambda j: (
            first_label(j),
            jurisdiction_rank(j.analysed.passage.jurisdiction, jurisdiction),
            j.retrieval_rank,
            j.analysed.index,
        )
    )
    ordered = _round_robin(linked_groups) + retrieved
    shown = ordered[:max_citations]
    if shown and all(j.label is not label for j in shown):
        carrier = next((j for j in ordered if j.label is label), None)
        if carrier is not None:
            shown[-1] = carrier
    return ClaimGrounding(
        claim=claim,
        support=label,
        citations=tuple(j.citation(view, retriever) for j in shown),
        flagged=label is not SupportLabel.SUPPORTS,
        flag_reason=_flag_reason(label, decisive),
    )


def ground(
    claims: Sequence[Claim],
    corpus: Corpus,
    retriever: Retriever,
    jurisdiction: str = "",
    max_citations: int = DEFAULT_MAX_CITATIONS,
) -> list[ClaimGrounding]:
    """Ground every claim, in order. `max_citations` 0 means the default (3)."""
    if retriever.corpus is not corpus:
        raise ValueError("the retriever was built over another corpus")
    n = max_citations or DEFAULT_MAX_CITATIONS
    if not 1 <= n <= MAX_CITATIONS:
        raise ValueError(f"max_citations must be 0..{MAX_CITATIONS}")
    return [ground_claim(c, retriever, jurisdiction, n) for c in claims]
