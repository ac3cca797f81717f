"""Offline answers to a prescriber's questions about one consultation, from its report and its
evidence only.

Intents are recognised with plain keyword and phrase matching, drug names with the clinical
dictionaries (`Vocabulary`). Every answer says what it rests on: report sections, rule ids and
evidence passages, and `checked()` removes any id the consultation or the report does not
contain, so that a citation can never be invented. A question that changes the facts or asks
for another decision is refused (a new consultation is needed); a question about anything else
is out of scope; a question the report does not answer gets "The report does not say ...".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from services.report.domain.render import (
    ASSESSMENT,
    CONCERNS,
    DECISION,
    DECISION_PATH,
    DEGRADED,
    DELIBERATION,
    DRAFT,
    EVIDENCE,
    EXCLUDED,
    FOLLOW_UP,
    MONITORING,
    PATIENT,
    PLAN,
    VERSIONS,
    WARNINGS,
    Rendered,
)
from services.report.domain.words import (
    AGENT_CODES,
    AGENT_NAMES,
    DECIDING_OUTCOMES,
    DECISIONS,
    ESCALATIONS,
    FREQUENCIES,
    ROUTES,
    SUPPORTING,
    URGENCIES,
    VERDICTS,
    dose_words,
    duration_words,
    name,
    regimen_words,
)
from utimesh.agents.models import OFFLINE
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.rules import Knowledge
from utimesh.rules.matching import TermIndex, tokens
from utimesh.triage.v1 import triage_pb2 as tpb

MAX_PASSAGES = 3


class AnswerKind(StrEnum):
    """What kind of answer was given (report.v1 AnswerKind without the prefix)."""

    ANSWERED = "ANSWERED"
    CANNOT_ANSWER = "CANNOT_ANSWER"
    NEEDS_NEW_CONSULTATION = "NEEDS_NEW_CONSULTATION"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"


@dataclass(frozen=True, slots=True)
class PassageCitation:
    """A passage an answer rests on, with the verbatim words it rests on."""

    passage_id: str
    source_key: str
    title: str
    quoted_span: str


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer and what it rests on: report sections, evidence passages and rule ids."""

    kind: AnswerKind
    text: str
    section_ids: tuple[str, ...] = ()
    passages: tuple[PassageCitation, ...] = ()
    rule_ids: tuple[str, ...] = ()
    generated_by: str = OFFLINE


# --- vocabulary -------------------------------------------------------------------------------

# Which dictionary groups name which agent (the allergy groups are the agents' names and brands).
_AGENT_GROUPS: Mapping[str, int] = {
    "allergy_nitrofurantoin": pb.AGENT_NITROFURANTOIN,
    "allergy_tmp_smx_product": pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE,
    "allergy_sulfonamide_antibiotic": pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE,
    "allergy_trimethoprim": pb.AGENT_TRIMETHOPRIM,
    "allergy_fosfomycin": pb.AGENT_FOSFOMYCIN,
}
_AGENT_ABBREVIATIONS: Mapping[str, int] = {
    "nit": pb.AGENT_NITROFURANTOIN,
    "sxt": pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE,
    "tmp smx": pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE,
    "tmp": pb.AGENT_TRIMETHOPRIM,
    "fos": pb.AGENT_FOSFOMYCIN,
}
# Antibiotics the rules never consider for cystitis: naming one is not asking about an agent of
# this report.
OTHER_ANTIBIOTICS = (
    "amoxicillin",
    "amoxicillin clavulanate",
    "augmentin",
    "ampicillin",
    "azithromycin",
    "cefalexin",
    "cefixime",
    "cefpodoxime",
    "ceftriaxone",
    "cefuroxime",
    "cephalexin",
    "cipro",
    "ciprofloxacin",
    "clarithromycin",
    "doxycycline",
    "keflex",
    "levofloxacin",
    "methenamine",
    "moxifloxacin",
    "norfloxacin",
    "ofloxacin",
    "penicillin",
    "pivmecillinam",
)
# Dictionary groups that are not medications a patient takes.
_NOT_MEDICATIONS = frozenset({*_AGENT_GROUPS, "trimethoprim_class_antibiotics"})


@dataclass(frozen=True)
class Vocabulary:
    """Drug names from the clinical knowledge: agents (with brands and abbreviations), other
    antibiotics, and the medication groups of the interaction table."""

    agent_terms: tuple[
        tuple[tuple[str, ...], int], ...
    ]  # (term tokens, proto Agent), longest first
    other_antibiotics: tuple[tuple[str, ...], ...]
    medications: TermIndex
    medication_titles: Mapping[str, str]
    # Interaction rule id -> the medication groups it needs.
    interaction_groups: Mapping[str, frozenset[str]]

    @classmethod
    def from_knowledge(cls, knowledge: Knowledge) -> Vocabulary:
        ruleset = knowledge.ruleset()  # the dictionaries and the interaction table are shared
        groups = ruleset.dictionaries.groups
        terms: dict[tuple[str, ...], int] = {}
        for group, agent in _AGENT_GROUPS.items():
            for term in groups[group].terms if group in groups else ():
                terms.setdefault(tokens(term), agent)
        for regimen in ruleset.regimens.values():
            terms[tokens(regimen.drug)] = _agent_of(regimen.agent.value)
        for term, agent in _AGENT_ABBREVIATIONS.items():
            terms[tokens(term)] = agent
        ordered = tuple(sorted(terms.items(), key=lambda item: (-len(item[0]), item[0])))
        medication_groups = {
            g: d.terms for g, d in sorted(groups.items()) if g not in _NOT_MEDICATIONS
        }
        return cls(
            agent_terms=ordered,
            other_antibiotics=tuple(
                sorted((tokens(t) for t in OTHER_ANTIBIOTICS), key=lambda t: (-len(t), t))
            ),
            medications=TermIndex(medication_groups),
            medication_titles={g: groups[g].title for g in medication_groups},
            interaction_groups={row.id: frozenset(row.drugs_all) for row in ruleset.interactions},
        )

    def agents_in(self, text: str) -> list[int]:
        """Agents named in `text`, in order of mention, longest term first ("trimethoprim-
        sulfamethoxazole" is TMP-SMX, not trimethoprim)."""
        found: list[tuple[int, int]] = []
        for position, _ in _longest_matches(tokens(text), self.agent_terms):
            found.append(position)
        out: list[int] = []
        for _, agent in sorted(found):
            if agent not in out:
                out.append(agent)
        return out

    def other_antibiotic_in(self, text: str) -> str:
        """The first antibiotic named in `text` that the rules do not consider, or ""."""
        words = tokens(text)
        for term in self.other_antibiotics:
            for i in range(len(words) - len(term) + 1):
                if words[i : i + len(term)] == term:
                    return " ".join(term)
        return ""

    def medication_groups_in(self, text: str) -> list[str]:
        return sorted(self.medications.groups_in(text))


def _agent_of(code: str) -> int:
    return {v: k for k, v in AGENT_CODES.items()}[code]


def _longest_matches(
    words: tuple[str, ...], terms: Sequence[tuple[tuple[str, ...], int]]
) -> list[tuple[tuple[int, int], tuple[str, ...]]]:
    """Non-overlapping matches, longest terms claimed first: ((start, agent), term)."""
    taken = [False] * len(words)
    out: list[tuple[tuple[int, int], tuple[str, ...]]] = []
    for term, agent in terms:
        n = len(term)
        for i in range(len(words) - n + 1):
            if words[i : i + n] == term and not any(taken[i : i + n]):
                taken[i : i + n] = [True] * n
                out.append(((i, agent), term))
    return out


# --- question analysis ------------------------------------------------------------------------


def _has(text: str, *patterns: str) -> bool:
    return any(re.search(p, text) for p in patterns)


_OFF_TOPIC = (
    r"\bweather\b",
    r"\bforecast\b",
    r"\b(rain|snow|sunny)\b",
    r"\bstock(s| market)?\b",
    r"\bbitcoin\b",
    r"\b(football|soccer|hockey|basketball|baseball)\b",
    r"\bscore\b",
    r"\bnews\b",
    r"\bjoke\b",
    r"\bpoem\b",
    r"\brecipe\b",
    r"\bcapital of\b",
    r"\bpresident\b",
    r"\bmovie\b",
    r"\bhow are you\b",
    r"^\s*(hi|hello|hey|thanks|thank you)\b",
    r"\bwho are you\b",
    r"\btell me about yourself\b",
    r"\b(other|another|different|next|previous) (patient|person|case)s?\b",
    r"\bpatients? in (room|bed)\b",
    r"\ball (my|the|of the) patients\b",
    r"\bmeaning of life\b",
    r"\btranslate\b",
)

# Questions that follow a symptom course are safety-netting, not hypotheticals.
_SAFETY_NET_IF = (
    r"\bif (her |his |their |the )?(symptoms?|it|things|she|he|they|the patient)\b[^?]*\b"
    r"(worse|worsen|worsens|don't improve|do not improve|doesn't improve|does not improve|"
    r"not improv|no better|not better|persist|come back|comes back|return|returns)",
)
_HYPOTHETICAL = (
    r"\bwhat if\b",
    r"\bwhat about if\b",
    r"\bsuppose\b",
    r"\bsupposing\b",
    r"\bhypothetical",
    r"\bimagine\b",
    r"\bwhat would (happen|change|you do|the decision|the plan)\b",
    r"\bwould (it|that|this|the decision|the plan|the answer) (change|be different)\b",
    r"\bif (she|he|they|the patient|her|his|their|kidney|the kidney|egfr|crcl)\b.*\b"
    r"(were|was|had|has|is|are|becomes|became|turns|gets|got|drops|fell|falls)\b",
    r"\b(she|he|they|the patient) (is|are) (now|actually|also)\b",
    r"\b(is|are) now (\d+|pregnant|breastfeeding|lactating)\b",
    r"\bnow (she|he|they) (is|are|has|have|takes|take)\b",
    r"\b(she|he|they|the patient) (now )?(has|have) (just )?(started|developed)\b",
    r"\b(she|he|they|the patient) (just )?(started|developed|told me|reports|now has|now takes)\b",
    r"\b(she|he|they|the patient) (is|are) (also )?(taking|on) (a |an )?\w+",
    r"\b(also|now) (taking|on)\b",
    r"\bturns? out\b",
    r"\binstead\b",
    r"\brather than\b",
    r"\bswitch\b",
    r"\bchange (it|this|that|the (drug|plan|antibiotic|dose|regimen|duration|decision)|to)\b",
    r"\b(can|could|may|should|shall) (i|we|you) (double|extend|increase|reduce|shorten|halve|"
    r"stop|skip|override|change|lengthen|add)\b",
)

_IDENTIFIERS = (
    r"\b(name|address|phone|telephone|email|health card|ohip|date of birth|dob|mrn|"
    r"chart number)\b",
)

_NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "fourteen": "14",
    "single": "1",
}
_STOPWORDS = frozenset(
    """a an and any are as at be because been but by can could did do does doing for from had
    has have her here his how i if in into is it its me my of on or our say says said she should
    so that the their them then there these they this those to us was we were what when where
    which who whom whose why will with would you your report source sources evidence guideline
    guidelines cite cites cited citation citations reference references passage passages
    support supports supported study studies literature according based tell show give me
    patient consultation about recommend recommended recommends use used using
    decision plan choice antibiotic treatment regimen drug prescription chosen""".split()  # noqa: SIM905 (a readable word list)
)

_RULE_ID = re.compile(
    r"\b(?:DATA|RF|FU|SX|PREG|CX|REC|RX|W|DDI)-[A-Z0-9]+(?:-[A-Z0-9]+)*\b", re.IGNORECASE
)

_DOMAIN_WORDS = (
    r"\b(uti|urinary|cystitis|bladder|urine|antibiotic|drug|medication|medicine|dose|tablet|"
    r"capsule|prescri\w*|treat\w*|refer\w*|report|rule|plan|decision|symptom|kidney|renal|"
    r"allerg\w*|pregnan\w*|pharmacist|doctor|review\w*|evidence|infection|consult\w*|"
    r"blood|pressure|test|culture|lab|diagnos\w*|fever|pain|patient|profile|order|source|model|"
    r"version|warning|course|regimen|she|he|her|his)\b",
)


@dataclass(frozen=True)
class _Question:
    text: str
    low: str
    agents: list[int]
    other_antibiotic: str
    medication_groups: list[str]
    rule_ids: list[str]


# --- the consultation's facts -----------------------------------------------------------------


@dataclass
class _Facts:
    """What answers draw on, computed once per consultation."""

    c: cpb.Consultation
    rendered: Rendered
    fired: list[pb.RuleHit]
    hits: dict[str, pb.RuleHit]  # every rule hit of the consultation (fired and exclusions)
    known_rules: frozenset[str]
    citations: list[tuple[epb.ClaimGrounding, epb.Citation]]
    evaluations: list[tpb.AgentEvaluation] = field(default_factory=list)

    @classmethod
    def of(cls, c: cpb.Consultation, rendered: Rendered) -> _Facts:
        fired = list(c.triage.rules_fired)
        hits = {h.rule_id: h for h in fired}
        for evaluation in c.triage.agent_evaluations:
            for x in evaluation.exclusions:
                hits.setdefault(x.rule_id, x)
        return cls(
            c=c,
            rendered=rendered,
            fired=fired,
            hits=hits,
            known_rules=known_rule_ids(c),
            citations=[(g, ct) for g in c.groundings for ct in g.citations],
            evaluations=sorted(c.triage.agent_evaluations, key=lambda e: (e.rank, e.agent)),
        )

    @property
    def treated(self) -> bool:
        return self.c.decision == pb.DECISION_RECOMMEND_TREATMENT and self.c.HasField("regimen")

    def chosen(self) -> int | None:
        return self.c.regimen.agent if self.treated else None

    def evaluation(self, agent: int) -> tpb.AgentEvaluation | None:
        return next((e for e in self.evaluations if e.agent == agent), None)

    def order(self) -> str:
        return " > ".join(AGENT_CODES.get(e.agent, "?") for e in self.evaluations)

    def selection(self) -> list[pb.RuleHit]:
        return [h for h in self.fired if h.outcome == pb.RULE_OUTCOME_SELECT_AGENT]

    def deciding(self) -> list[pb.RuleHit]:
        return [h for h in self.fired if h.outcome in DECIDING_OUTCOMES]

    def passages_for_rules(self, rule_ids: Iterable[str]) -> list[PassageCitation]:
        """Supporting passages of the claims (or passages) that rest on these rules."""
        wanted = set(rule_ids)
        out: list[PassageCitation] = []
        for grounding, citation in self.citations:
            if citation.support not in SUPPORTING:
                continue
            if wanted & set(grounding.claim.rule_ids) or wanted & set(citation.passage.rule_ids):
                _add(out, _citation(citation, citation.quoted_span))
        return out[:MAX_PASSAGES]


def known_rule_ids(c: cpb.Consultation) -> frozenset[str]:
    """Every rule id the consultation mentions: fired, exclusions, warnings, claims, concerns,
    plan violations and passages."""
    ids: set[str] = {h.rule_id for h in c.triage.rules_fired}
    ids |= {w.rule_id for w in c.triage.warnings}
    for e in c.triage.agent_evaluations:
        ids |= {x.rule_id for x in e.exclusions}
        ids |= {w.rule_id for w in e.agent_warnings}
    for claim in (*c.assessment.claims, *c.review.claims):
        ids |= set(claim.rule_ids)
    for concern in c.review.concerns:
        ids |= set(concern.rule_ids)
    for entry in c.transcript:
        for v in entry.violations:
            ids |= set(v.rule_ids)
        for concern in entry.concerns:
            ids |= set(concern.rule_ids)
    for g in c.groundings:
        for citation in g.citations:
            ids |= set(citation.passage.rule_ids)
    ids.discard("")
    return frozenset(ids)


def _citation(citation: epb.Citation, span: str) -> PassageCitation:
    p = citation.passage
    return PassageCitation(p.id, p.source_key, p.title, span)


def _add(out: list[PassageCitation], item: PassageCitation) -> None:
    if item.passage_id and all(x.passage_id != item.passage_id for x in out):
        out.append(item)


def _hit_words(h: pb.RuleHit) -> str:
    return f"{h.rule_id} ({h.title}" + (f": {h.detail})" if h.detail else ")")


def _agent_words(agent: int) -> str:
    return AGENT_NAMES.get(agent, "an unknown agent")


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentences(items: Iterable[str]) -> str:
    """Items joined as sentences, each ending with one full stop."""
    return " ".join(
        i.strip() if i.strip().endswith((".", "!", "?")) else f"{i.strip()}."
        for i in items
        if i.strip()
    )


def _join(items: Sequence[str]) -> str:
    return "; ".join(items)


# --- the answerer -----------------------------------------------------------------------------


def answer(
    consultation: cpb.Consultation, rendered: Rendered, question: str, *, vocabulary: Vocabulary
) -> Answer:
    """Answer `question` from the consultation, its rendered report and its evidence. Pure and
    deterministic; every id in the answer is checked against the consultation and report."""
    facts = _Facts.of(consultation, rendered)
    q = _analyse(question, vocabulary)
    return checked(_route(q, facts, vocabulary), consultation, rendered, facts.known_rules)


def _analyse(question: str, vocabulary: Vocabulary) -> _Question:
    text = " ".join(question.split())
    return _Question(
        text=text,
        low=text.lower(),
        agents=vocabulary.agents_in(text),
        other_antibiotic=vocabulary.other_antibiotic_in(text),
        medication_groups=vocabulary.medication_groups_in(text),
        rule_ids=sorted({m.upper() for m in _RULE_ID.findall(text)}),
    )


def checked(
    a: Answer,
    c: cpb.Consultation,
    rendered: Rendered,
    known_rules: frozenset[str] | None = None,
) -> Answer:
    """`a` without any passage, section or rule id that the consultation or report lacks. A
    passage is kept only if the consultation's groundings cite it and its span is verbatim.
    `known_rules` is `known_rule_ids(c)` when the caller has it already."""
    texts: dict[str, set[str]] = {}
    for g in c.groundings:
        for citation in g.citations:
            texts.setdefault(citation.passage.id, set()).update(
                {citation.passage.text, citation.quoted_span}
            )
    passages = tuple(
        p
        for p in a.passages
        if p.passage_id in texts
        and (not p.quoted_span or any(p.quoted_span in t for t in texts[p.passage_id]))
    )
    sections = rendered.section_ids()
    known = known_rules if known_rules is not None else known_rule_ids(c)
    return replace(
        a,
        passages=passages,
        section_ids=tuple(dict.fromkeys(s for s in a.section_ids if s in sections)),
        rule_ids=tuple(dict.fromkeys(r for r in a.rule_ids if r in known)),
    )


_Handler = Callable[[_Question, _Facts, Vocabulary], Answer | None]


def _route(q: _Question, f: _Facts, v: Vocabulary) -> Answer:
    for handler in _HANDLERS:
        result = handler(q, f, v)
        if result is not None:
            return result
    if _has(q.low, *_DOMAIN_WORDS) or q.agents or q.medication_groups:
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            f'The report does not say: "{q.text}" is not answered by this consultation\'s '
            "report or its evidence. Ask about the decision, the plan, excluded agents, "
            "warnings, interactions, monitoring, counselling, follow-up, the evidence or the "
            "review.",
        )
    return Answer(
        AnswerKind.OUT_OF_SCOPE,
        "This question is not about this consultation; I only answer questions about its "
        "report and evidence.",
    )


# Each handler returns an answer when the question is its kind, else None. Order matters.


def _off_topic(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if _has(q.low, *_OFF_TOPIC):
        return Answer(
            AnswerKind.OUT_OF_SCOPE,
            "Out of scope: I only answer questions about this consultation's report and its "
            "evidence, not other patients or general topics.",
        )
    return None


def _identifiers(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if _has(q.low, *_IDENTIFIERS) and not _has(q.low, r"\b(drug|product|brand) name\b"):
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            "The report does not say: it holds no patient identifiers (no name, contact "
            "details, dates of birth or record numbers).",
            section_ids=(PATIENT.id,),
        )
    return None


def _new_facts(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if _has(q.low, *_SAFETY_NET_IF):
        return None
    asks_to_give = _has(
        q.low, r"\b(can|could|may|should) (i|we) (give|prescribe|use|dispense|try)\b"
    )
    asks_other_agent = asks_to_give and bool(
        q.other_antibiotic or any(a != f.chosen() for a in q.agents)
    )
    if not (_has(q.low, *_HYPOTHETICAL) or asks_other_agent or _other_length(q, f)):
        return None
    topic = _change_topic(q)
    return Answer(
        AnswerKind.NEEDS_NEW_CONSULTATION,
        f"This needs a new consultation: the question {topic}. The decision in this report "
        "was made by the rules for the facts as recorded and cannot be changed by an answer. "
        "Run a new consultation with the updated intake (or the prescriber decides).",
        section_ids=(DECISION.id,),
    )


_COURSE_LENGTH = re.compile(
    r"\bfor (\d+|one|two|three|five|seven|ten|fourteen) (day|days|dose|doses|week|weeks)\b"
)


def _other_length(q: _Question, f: _Facts) -> bool:
    """True when the question asks to give the drug for a course the plan does not have."""
    if not _has(q.low, r"\b(can|could|may|should) (i|we|she|he|they) (give|prescribe|use|take)\b"):
        return False
    match = _COURSE_LENGTH.search(q.low)
    if match is None:
        return False
    n = int(_NUMBER_WORDS.get(match.group(1), match.group(1)))
    unit = match.group(2)
    if not f.treated:
        return True
    r = f.c.regimen
    if unit.startswith("week"):
        return True
    days = r.duration.unit == pb.DURATION_UNIT_DAYS
    return n != r.duration.amount or days != unit.startswith("day")


def _change_topic(q: _Question) -> str:
    low = q.low
    if _has(low, r"pregnan", r"\b(weeks?|gestation\w*|trimester)\b"):
        return "changes the pregnancy status"
    if _has(low, r"\b(age|aged|old|years?)\b", r"\bnow \d+", r"\bturns? \d+"):
        return "changes the patient's age"
    if _has(low, r"\b(kidney|renal|egfr|crcl|creatinine)\b"):
        return "changes the kidney function"
    if _has(low, r"\b(allerg\w*)\b"):
        return "adds or changes an allergy"
    if q.other_antibiotic or q.agents:
        drug = q.other_antibiotic or ", ".join(AGENT_NAMES[a] for a in q.agents)
        return f"asks for a different prescription ({drug}) than the one the rules allowed"
    if _has(low, r"\b(dose|days?|duration|longer|shorter|double|extend)\b"):
        return "asks to change the regimen, which only the rules' allow-list can permit"
    if q.medication_groups or _has(low, r"\b(taking|started|medication|drug)\b"):
        return "adds a medication the consultation did not have"
    if _has(low, r"\b(fever|pain|vomit\w*|symptom\w*|bleeding|chills)\b"):
        return "adds a symptom the consultation did not have"
    return "asks about facts or a decision other than the ones recorded"


def _named_rule(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not q.rule_ids:
        return None
    parts: list[str] = []
    found: list[str] = []
    for rule_id in q.rule_ids:
        hit = f.hits.get(rule_id)
        if hit is not None:
            fired = any(h.rule_id == rule_id for h in f.fired)
            how = "fired" if fired else "excluded an agent in the drug evaluation"
            parts.append(f"{_hit_words(hit)} {how}; sources: {', '.join(hit.source_keys)}.")
            found.append(rule_id)
        elif rule_id in f.known_rules:
            parts.append(
                f"{rule_id} is cited by the agents' claims but did not fire for this patient."
            )
            found.append(rule_id)
        else:
            parts.append(f"The report does not mention {rule_id}.")
    if not found:
        return Answer(AnswerKind.CANNOT_ANSWER, " ".join(parts), section_ids=(DECISION.id,))
    sections = [DECISION.id]
    if any(r.startswith(("RX-", "DDI-")) for r in found):
        sections.append(EXCLUDED.id)
    if any(w.rule_id in found for w in f.c.triage.warnings):
        sections.append(WARNINGS.id)
    return Answer(
        AnswerKind.ANSWERED,
        " ".join(parts),
        section_ids=tuple(sections),
        rule_ids=tuple(found),
        passages=tuple(f.passages_for_rules(found)),
    )


_WHY_NOT = (
    r"\bwhy (not|no|wasn'?t|was not|isn'?t|is not|didn'?t|did not|weren'?t|were not)\b",
    r"\b(excluded|ruled out|not chosen|not selected|not used|not prescribed|not given|"
    r"not recommended|not an option|not eligible)\b",
    r"\bwhat about\b",
    r"\bwhy (can'?t|cannot|can not|shouldn'?t|should not|couldn'?t|could not)\b",
    r"\bwhy (was|were) \w+[^?]* (excluded|rejected|avoided)\b",
)


def _why_not(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    asks_why_not = _has(q.low, *_WHY_NOT)
    chosen = f.chosen()
    others = [a for a in q.agents if a != chosen]
    if not asks_why_not:
        return None
    if q.other_antibiotic and not others:
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            f"The report does not say anything about {q.other_antibiotic}: the rules consider "
            "only nitrofurantoin, TMP-SMX, trimethoprim and fosfomycin for acute uncomplicated "
            "cystitis, and it is not one of them. Prescribing it would be a new decision.",
            section_ids=(EXCLUDED.id,),
        )
    if not others:
        return None  # "why no antibiotic?" or "why not <the chosen agent>?": later handlers
    return _not_chosen(others[0], f, v)


def _not_chosen(agent: int, f: _Facts, v: Vocabulary) -> Answer:
    """Why `agent` is not the plan: not reached, excluded (by which rules), or ranked lower."""
    chosen = f.chosen()
    evaluation = f.evaluation(agent)
    if evaluation is None:
        deciding = f.deciding()
        # Notes for the receiving prescriber that name this agent (e.g. PREG-002).
        notes = [
            line
            for line in f.c.triage.follow_up.instructions
            if agent in v.agents_in(line) and _RULE_ID.match(line)
        ]
        note_rules = [m.group(0).upper() for line in notes if (m := _RULE_ID.match(line))]
        rules = [h.rule_id for h in deciding] + note_rules
        return Answer(
            AnswerKind.ANSWERED,
            f"{_upper_first(_agent_words(agent))} was not considered because no antibiotic is "
            f"prescribed: triage decided {name(DECISIONS, f.c.decision)}"
            + (f" ({_join([_hit_words(h) for h in deciding])})" if deciding else "")
            + ", so drug selection was not reached."
            + (" Note for the receiving prescriber: " + " ".join(notes) if notes else ""),
            section_ids=(DECISION.id, PLAN.id, EXCLUDED.id, FOLLOW_UP.id),
            rule_ids=tuple(rules),
            passages=tuple(f.passages_for_rules(rules)),
        )
    if not evaluation.eligible:
        exclusions = list(evaluation.exclusions)
        text = (
            f"{_upper_first(_agent_words(agent))} was excluded by "
            f"{_join([_hit_words(x) for x in exclusions])}."
        )
        if chosen is not None:
            text += f" The plan uses {_agent_words(chosen)} instead."
        return Answer(
            AnswerKind.ANSWERED,
            text,
            section_ids=(EXCLUDED.id, PLAN.id),
            rule_ids=tuple(x.rule_id for x in exclusions),
            passages=tuple(f.passages_for_rules(x.rule_id for x in exclusions)),
        )
    selection = f.selection()
    if chosen is None:
        return Answer(
            AnswerKind.ANSWERED,
            f"{_upper_first(_agent_words(agent))} is eligible (no exclusion rule fired), but no "
            f"regimen was agreed: the outcome is {name(DECISIONS, f.c.decision)} and a "
            "prescriber must decide.",
            section_ids=(EXCLUDED.id, PLAN.id, DECISION.id),
        )
    chosen_eval = f.evaluation(chosen)
    rank = f" (rank {evaluation.rank} vs {chosen_eval.rank})" if chosen_eval else ""
    return Answer(
        AnswerKind.ANSWERED,
        f"{_upper_first(_agent_words(agent))} is eligible but ranked lower in the profile's "
        f"order ({f.order()}){rank}: the first eligible agent, {_agent_words(chosen)}, was "
        "selected" + (f" ({_join([_hit_words(h) for h in selection])})" if selection else "") + ".",
        section_ids=(EXCLUDED.id, PLAN.id),
        rule_ids=tuple(h.rule_id for h in selection),
        passages=tuple(f.passages_for_rules(h.rule_id for h in selection)),
    )


_EVIDENCE = (
    r"\b(source|sources|evidence|guideline|guidelines|cite|cites|citation|citations|reference|"
    r"references|study|studies|literature|passage|passages)\b",
    r"\bwhere does it say\b",
    r"\bwho says\b",
    r"\baccording to\b",
    r"\bbased on what\b",
)


def _evidence(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(q.low, *_EVIDENCE):
        return None
    if not f.citations:
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            "The report does not say: evidence grounding is unavailable for this consultation, "
            "so it cites no passage. The rules' own source keys are in the decision table.",
            section_ids=(EVIDENCE.id, DECISION.id),
            rule_ids=tuple(h.rule_id for h in f.fired),
        )
    concepts, numbers = _concepts(q)
    if not concepts and not numbers:
        rules = [h.rule_id for h in (f.selection() if f.treated else f.deciding())]
        for_decision = f.passages_for_rules(rules)
        if for_decision:
            return Answer(
                AnswerKind.ANSWERED,
                "The evidence for the decision: " + _quote(for_decision),
                section_ids=(EVIDENCE.id, DECISION.id),
                passages=tuple(for_decision),
                rule_ids=tuple(rules),
            )
    scored: list[tuple[int, int, PassageCitation, str]] = []
    for index, (grounding, citation) in enumerate(f.citations):
        passage = citation.passage
        haystack = set(tokens(f"{passage.text} {citation.quoted_span} {grounding.claim.text}"))
        haystack |= {_stem(w) for w in haystack}
        if any(n not in haystack for n in numbers):
            continue
        score = sum(1 for w in concepts if w in haystack)
        if numbers:
            score += 2 * len(numbers)
        if score == 0:
            continue
        span = _verbatim_span(passage.text, citation.quoted_span, numbers or concepts)
        scored.append((-score, index, _citation(citation, span), grounding.claim.id))
    if not scored:
        what = " ".join(sorted(numbers | concepts)) or "that"
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            f'The report does not say: no passage of its evidence mentions "{what}".',
            section_ids=(EVIDENCE.id,),
        )
    scored.sort(key=lambda item: (item[0], item[1]))
    passages: list[PassageCitation] = []
    claims: list[str] = []
    for _, _, found, claim_id in scored:
        before = len(passages)
        _add(passages, found)
        if len(passages) > before and claim_id not in claims:
            claims.append(claim_id)
        if len(passages) == MAX_PASSAGES:
            break
    rules = [
        r for g, _ in f.citations if g.claim.id in claims for r in g.claim.rule_ids if r in f.hits
    ]
    text = "The evidence says: " + _quote(passages)
    return Answer(
        AnswerKind.ANSWERED,
        text + f" (cited for claim(s) {', '.join(claims)}).",
        section_ids=(EVIDENCE.id,),
        passages=tuple(passages),
        rule_ids=tuple(dict.fromkeys(rules)),
    )


def _quote(passages: Sequence[PassageCitation]) -> str:
    return " ".join(
        f'passage {p.passage_id} ({p.title}, {p.source_key}): "{p.quoted_span}"' for p in passages
    )


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _concepts(q: _Question) -> tuple[set[str], set[str]]:
    """(content words, numbers) of a question, number words written as digits."""
    words = [_NUMBER_WORDS.get(w, w) for w in tokens(q.text)]
    numbers = {w for w in words if w.isdigit()}
    concepts = {_stem(w) for w in words if not w.isdigit() and w not in _STOPWORDS and len(w) > 2}
    return concepts, numbers


_SENTENCE = re.compile(r"[^.;]+[.;]?")


def _verbatim_span(text: str, quoted: str, needles: set[str]) -> str:
    """The citation's quoted span if it holds the needles, else the first sentence of the
    passage that does (always a verbatim substring of the passage or the quoted span)."""
    if quoted and all(
        n in set(tokens(quoted)) | {_stem(t) for t in tokens(quoted)} for n in needles
    ):
        return quoted
    best = ""
    best_score = 0
    for match in _SENTENCE.finditer(text):
        sentence = match.group(0).strip()
        words = set(tokens(sentence)) | {_stem(t) for t in tokens(sentence)}
        score = sum(1 for n in needles if n in words)
        if score > best_score:
            best, best_score = sentence, score
    return best or quoted


_WHY_THIS = (
    r"\bwhy\b[^?]*\b(this|that|the) (antibiotic|drug|regimen|medication|medicine|choice|agent|"
    r"prescription|plan)\b",
    r"\bwhy\b[^?]*\b(chosen|selected|picked|prescribed|recommended|first[- ]line|preferred)\b",
    r"\b(rationale|reasoning|reason for)\b",
    r"\bwhy\b",
)


def _why_this(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    chosen = f.chosen()
    if chosen is None or not _has(q.low, *_WHY_THIS):
        return None
    if q.agents and chosen not in q.agents:
        # "Why nitrofurantoin?" when the plan is another agent: say why it is not.
        return _not_chosen(q.agents[0], f, v)
    if not q.agents and not _has(q.low, *_WHY_THIS[:3]):
        return None
    selection = f.selection()
    excluded = [e for e in f.evaluations if not e.eligible and e.rank < _rank(f, chosen)]
    text = (
        f"{_upper_first(_agent_words(chosen))} was chosen because it is the first eligible agent "
        f"in the profile's order ({f.order()})"
        + (f" ({_join([_hit_words(h) for h in selection])})" if selection else "")
        + "."
    )
    if excluded:
        text += (
            " Agents ranked higher were excluded: "
            + _join(
                [
                    f"{AGENT_CODES.get(e.agent, '?')} by {', '.join(x.rule_id for x in e.exclusions)}"
                    for e in excluded
                ]
            )
            + "."
        )
    if f.c.assessment.rationale:
        text += f" The doctor's rationale: {f.c.assessment.rationale}"
    rules = [h.rule_id for h in selection] + [x.rule_id for e in excluded for x in e.exclusions]
    return Answer(
        AnswerKind.ANSWERED,
        text,
        section_ids=(PLAN.id, EXCLUDED.id, ASSESSMENT.id),
        rule_ids=tuple(rules),
        passages=tuple(f.passages_for_rules(rules)),
    )


def _rank(f: _Facts, agent: int) -> int:
    e = f.evaluation(agent)
    return e.rank if e is not None else 0


def _referral(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    asks = _has(
        q.low,
        r"\bred flags?\b",
        r"\brefer\w*\b",
        r"\burgent\w*\b",
        r"\bwhy (no|not|wasn'?t|isn'?t|was not|is not)\b[^?]*\b(antibiotic|prescri\w*|treat\w*)",
        r"\b(no|not) (antibiotic|prescription|treatment)\b",
        r"\bwhy\b[^?]*\b(not treated|no antibiotics?)\b",
        r"\bpyelonephritis\b",
        r"\bnotes?\b",
    )
    if not asks:
        return None
    red_flags = [h for h in f.fired if h.rule_id.startswith("RF-")]
    deciding = f.deciding()
    if f.c.decision == pb.DECISION_RECOMMEND_TREATMENT:
        if _has(q.low, r"\bred flags?\b", r"\bpyelonephritis\b", r"\burgent\w*\b"):
            no_flag = [
                cl for cl in f.c.assessment.claims if any(r.startswith("RF-") for r in cl.rule_ids)
            ]
            rules = [r for cl in no_flag for r in cl.rule_ids]
            return Answer(
                AnswerKind.ANSWERED,
                "No red flag rule fired (RF-001..RF-006): no fever, rigors, flank pain, vomiting, "
                "systemic illness or confusion was recorded, so treatment in the pharmacy is "
                "within the rules.",
                section_ids=(DECISION.id, PATIENT.id),
                rule_ids=tuple(rules),
                passages=tuple(f.passages_for_rules(rules)),
            )
        return Answer(
            AnswerKind.ANSWERED,
            f"The patient is not referred: triage decided {name(DECISIONS, f.c.decision)}.",
            section_ids=(DECISION.id, PLAN.id),
        )
    urgency = name(URGENCIES, f.c.triage.follow_up.referral_urgency)
    what = (
        f"Triage decided {name(DECISIONS, f.c.decision)}"
        + (f" ({urgency})" if urgency else "")
        + " because "
        + (_join([_hit_words(h) for h in deciding]) or "of the rules that fired")
        + ". No pharmacist prescription is made."
    )
    if red_flags:
        what += f" Red flags: {', '.join(h.title for h in red_flags)}."
    rationale = f.c.assessment.referral_rationale
    if rationale:
        what += f" The doctor's rationale: {rationale}"
    notes = [h for h in f.fired if h.outcome == pb.RULE_OUTCOME_NOTE]
    if notes:
        what += (
            " Notes for the receiving prescriber: " + _join([_hit_words(h) for h in notes]) + "."
        )
    rules = [h.rule_id for h in (*deciding, *notes)]
    return Answer(
        AnswerKind.ANSWERED,
        what,
        section_ids=(DECISION.id, PLAN.id, FOLLOW_UP.id),
        rule_ids=tuple(rules),
        passages=tuple(f.passages_for_rules(rules)),
    )


def _interactions(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    asks = _has(q.low, r"\binteract\w*\b", r"\bddi\b", r"\btogether with\b", r"\bcombin\w*\b")
    if not (asks or q.medication_groups):
        return None
    interaction_hits = [h for h in f.hits.values() if h.rule_id.startswith("DDI-")]
    if q.medication_groups:
        wanted = set(q.medication_groups)
        relevant = [
            h for h in interaction_hits if wanted & v.interaction_groups.get(h.rule_id, frozenset())
        ]
        named = ", ".join(v.medication_titles[g].lower() for g in q.medication_groups)
        if not relevant:
            return Answer(
                AnswerKind.CANNOT_ANSWER,
                f"The report does not say: no interaction rule involving {named} fired for this "
                "patient's recorded medications. If the patient takes it, that is a new fact: "
                "run a new consultation.",
                section_ids=(WARNINGS.id, EXCLUDED.id),
            )
    else:
        relevant = interaction_hits
        named = "the recorded medications"
    if not relevant:
        return Answer(
            AnswerKind.ANSWERED,
            "No interaction rule fired for the recorded medications"
            + (f" with {_agent_words(f.c.regimen.agent)}" if f.treated else "")
            + ".",
            section_ids=(WARNINGS.id, EXCLUDED.id),
        )
    excluded = {x.rule_id for e in f.evaluations for x in e.exclusions}
    warning_text = {w.rule_id: w.text for w in f.c.triage.warnings}
    for e in f.evaluations:
        for w in e.agent_warnings:
            warning_text.setdefault(w.rule_id, w.text)
    parts = []
    for h in relevant:
        line = _hit_words(h)
        if h.rule_id in excluded:
            agents = [
                AGENT_CODES.get(e.agent, "?")
                for e in f.evaluations
                if any(x.rule_id == h.rule_id for x in e.exclusions)
            ]
            line += f" excludes {', '.join(agents)} (avoid)"
        elif h.rule_id in warning_text:
            line += f": {warning_text[h.rule_id]}"
        parts.append(line)
    return Answer(
        AnswerKind.ANSWERED,
        f"Interactions with {named}: " + _sentences(parts),
        section_ids=(WARNINGS.id, EXCLUDED.id, CONCERNS.id),
        rule_ids=tuple(h.rule_id for h in relevant),
        passages=tuple(f.passages_for_rules(h.rule_id for h in relevant)),
    )


def _regimen(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    dose = _has(
        q.low,
        r"\bdos(e|es|age|ing)\b",
        r"\bhow much\b",
        r"\bmg\b",
        r"\bstrength\b",
        r"\bhow many (tablets?|capsules?|pills?|sachets?)\b",
    )
    duration = _has(
        q.low,
        r"\bhow long\b",
        r"\bhow many days\b",
        r"\bduration\b",
        r"\blength of\b",
        r"\bcourse\b",
        r"\bdays?\b",
    )
    frequency = _has(
        q.low,
        r"\bhow often\b",
        r"\btimes (a|per) day\b",
        r"\bfrequency\b",
        r"\bbid\b",
        r"\btwice\b",
        r"\bonce\b",
        r"\bdaily\b",
    )
    route = _has(q.low, r"\broute\b", r"\bby mouth\b", r"\boral\b", r"\bform\b")
    if not (dose or duration or frequency or route):
        return None
    if not f.treated:
        return Answer(
            AnswerKind.ANSWERED,
            f"There is no dose: no antibiotic is prescribed (triage decided "
            f"{name(DECISIONS, f.c.decision)}).",
            section_ids=(PLAN.id, DECISION.id),
            rule_ids=tuple(h.rule_id for h in f.deciding()),
        )
    r = f.c.regimen
    parts = []
    if dose or route:
        parts.append(f"Dose: {dose_words(r)} per dose, {r.dose_form}")
    if frequency or route:
        parts.append(f"{name(ROUTES, r.route)}, {name(FREQUENCIES, r.frequency)}")
    if duration:
        parts.append(f"Duration: {duration_words(r)}")
    selection = [h.rule_id for h in f.selection()]
    passages: list[PassageCitation] = []
    if duration:
        # Passages that state the course length, if the evidence has any.
        n = str(r.duration.amount)
        for _, citation in f.citations:
            if citation.support in SUPPORTING and n in tokens(citation.passage.text):
                span = _verbatim_span(citation.passage.text, citation.quoted_span, {n})
                if n in tokens(span):
                    _add(passages, _citation(citation, span))
    for selected in f.passages_for_rules(selection):
        _add(passages, selected)
    return Answer(
        AnswerKind.ANSWERED,
        ". ".join(parts) + f". Full regimen: {regimen_words(r)}.",
        section_ids=(PLAN.id,),
        rule_ids=tuple(selection),
        passages=tuple(passages[:MAX_PASSAGES]),
    )


def _warnings(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(q.low, r"\bwarn\w*\b", r"\bcaution\w*\b", r"\bprecaution\w*\b", r"\bcareful\b"):
        return None
    warnings = list(f.c.triage.warnings)
    if not warnings:
        return Answer(
            AnswerKind.ANSWERED,
            "No warning applies: the triage result lists none"
            + ("" if f.treated else " (warnings only accompany a recommended treatment)")
            + ".",
            section_ids=(WARNINGS.id,),
        )
    return Answer(
        AnswerKind.ANSWERED,
        "Warnings: " + _sentences(f"{w.rule_id}: {w.text}" for w in warnings),
        section_ids=(WARNINGS.id,),
        rule_ids=tuple(w.rule_id for w in warnings),
        passages=tuple(f.passages_for_rules(w.rule_id for w in warnings)),
    )


def _monitoring(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\bmonitor\w*\b",
        r"\bpotassium\b",
        r"\binr\b",
        r"\blabs?\b",
        r"\bblood (test|work)\b",
        r"\bwhat should (i|we) check\b",
    ):
        return None
    monitoring = list(f.c.review.monitoring)
    if not monitoring:
        return Answer(
            AnswerKind.ANSWERED,
            "The pharmacist recorded no monitoring for this consultation.",
            section_ids=(MONITORING.id,),
        )
    rules = re.findall(r"\(((?:DDI|FU|W|RX)-[A-Z0-9-]+)\)", " ".join(monitoring))
    return Answer(
        AnswerKind.ANSWERED,
        "Monitoring: " + _sentences(monitoring),
        section_ids=(MONITORING.id, CONCERNS.id),
        rule_ids=tuple(dict.fromkeys(rules)),
        passages=tuple(f.passages_for_rules(rules)),
    )


def _counselling(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\bside[- ]?effects?\b",
        r"\badverse\b",
        r"\bcounsel\w*\b",
        r"\badvice\b",
        r"\badvise\b",
        r"\btell (the patient|her|him|them)\b",
        r"\bwhat should (she|he|they|the patient) know\b",
        r"\bhow (should|do|does|to) (she|he|they|i|the patient)? ?take\b",
        r"\bwith food\b",
        r"\burine colou?r\b",
        r"\brash\b",
    ):
        return None
    counselling = list(f.c.review.counselling)
    if f.treated:
        chosen = f.evaluation(f.c.regimen.agent)
        if chosen is not None:
            counselling += [x for x in chosen.counselling if x not in counselling]
    if not counselling:
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            "The report does not say: no counselling was recorded.",
            section_ids=(MONITORING.id,),
        )
    text = "Counselling in the report: " + _sentences(counselling)
    if _has(q.low, r"\bside[- ]?effects?\b", r"\badverse\b"):
        text += (
            " The report gives these counselling points; it does not list every side effect "
            "of the drug (see the product monograph)."
        )
    rules = [h.rule_id for h in f.selection()]
    return Answer(
        AnswerKind.ANSWERED,
        text,
        section_ids=(MONITORING.id,),
        rule_ids=tuple(rules),
        passages=tuple(f.passages_for_rules(rules)),
    )


def _follow_up(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\bfollow[- ]?up\b",
        r"\bcome back\b",
        r"\breturn\b",
        r"\breassess\w*\b",
        r"\bsafety[- ]?net\w*\b",
        r"\bprimary care\b",
        r"\bnotify\b",
        r"\bwhen should (she|he|they|the patient|i|we) (come back|return|be seen|be reassessed|"
        r"seek|call|follow)",
        r"\bworse\b",
        r"\bnot (get|getting) better\b",
        r"\bimprove\w*\b",
        r"\bnext steps?\b",
    ):
        return None
    fu = f.c.triage.follow_up
    parts = []
    if fu.reassess_by_hours:
        parts.append(
            f"Reassess at {fu.reassess_from_hours}-{fu.reassess_by_hours} h for response and "
            "adverse effects"
        )
    if fu.notify_primary_care:
        parts.append("notify the patient's primary care provider")
    if fu.referral_urgency != pb.REFERRAL_URGENCY_UNSPECIFIED:
        parts.append(f"referral: {name(URGENCIES, fu.referral_urgency)}")
    netting = list(f.c.assessment.safety_netting)
    text = ("; ".join(parts) + ". " if parts else "") + (
        "Safety-netting: " + " ".join(netting) if netting else ""
    )
    if not text.strip():
        text = "The report records no follow-up plan. " + " ".join(fu.instructions)
    rules = [h.rule_id for h in f.fired if h.rule_id.startswith("FU-")]
    return Answer(
        AnswerKind.ANSWERED,
        text.strip(),
        section_ids=(FOLLOW_UP.id,),
        rule_ids=tuple(rules),
        passages=tuple(f.passages_for_rules(rules)),
    )


def _reviewers(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\bwho\b[^?]*\b(review\w*|check\w*|wrote|write|written|generat\w*|made|approv\w*)\b",
        r"\b(which|what) (model|llm|ai)\b",
        r"\b(llm|gpt|language model|ai)\b",
        r"\bmodel\b",
        r"\bgenerated\b",
    ):
        return None
    runs: list[str] = []
    for e in f.c.transcript:
        if e.HasField("run"):
            line = f"{e.actor} ({e.action}, round {e.round}): {e.run.model or e.run.generated_by}"
            if e.run.prompt_version:
                line += f", prompt {e.run.prompt_version}"
            if line not in runs:
                runs.append(line)
    offline = all(e.run.generated_by == OFFLINE for e in f.c.transcript if e.HasField("run"))
    text = "Reviewed by: " + (_join(runs) if runs else "no agent (no agent run was recorded)")
    text += "."
    if runs and offline:
        text += " No LLM was used: the agents' text was generated offline from the rules."
    if f.c.missing_reviews:
        text += f" Missing review(s): {', '.join(f.c.missing_reviews)}."
    sections = [DELIBERATION.id, VERSIONS.id]
    return Answer(AnswerKind.ANSWERED, text, section_ids=tuple(sections))


def _review_status(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\breview\w*\b",
        r"\bmissing\b",
        r"\bdegraded\b",
        r"\bincomplete\b",
        r"\bcomplete\b",
        r"\bverdict\b",
        r"\bapprov\w*\b",
        r"\bsigned?\b",
        r"\bescalat\w*\b",
        r"\bagree\w*\b",
        r"\bdraft\b",
    ):
        return None
    c = f.c
    parts = []
    if c.missing_reviews:
        parts.append(
            f"NOT fully reviewed: missing review(s) {', '.join(c.missing_reviews)}; the "
            "deterministic triage decision stands unreviewed by them"
        )
    else:
        parts.append("All reviews were had (doctor and pharmacist)")
    if c.HasField("review"):
        parts.append(f"pharmacist verdict: {name(VERDICTS, c.review.verdict)}")
    if c.escalation_reason != cpb.ESCALATION_REASON_UNSPECIFIED:
        parts.append(f"escalated: {name(ESCALATIONS, c.escalation_reason)}")
    parts.append(
        "a prescriber must review it first"
        if c.needs_prescriber_review
        else "it is a draft awaiting prescriber sign-off"
    )
    sections = [DRAFT.id]
    if c.missing_reviews:
        sections.insert(0, DEGRADED.id)
    sections += [DELIBERATION.id, CONCERNS.id]
    return Answer(AnswerKind.ANSWERED, "; ".join(parts) + ".", section_ids=tuple(sections))


def _rules_fired(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(q.low, r"\brules?\b"):
        return None
    if not f.fired:
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            "The report does not say: no rule is recorded as fired.",
            section_ids=(DECISION.id,),
        )
    return Answer(
        AnswerKind.ANSWERED,
        "Rules fired, in order: " + _join([_hit_words(h) for h in f.fired]) + ".",
        section_ids=(DECISION.id, DECISION_PATH.id),
        rule_ids=tuple(h.rule_id for h in f.fired),
    )


def _versions(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(q.low, r"\bversions?\b", r"\bruleset\b", r"\bcorpus\b", r"\bhash\b"):
        return None
    t = f.c.triage
    corpus = f.c.corpus_version or "none (grounding unavailable)"
    return Answer(
        AnswerKind.ANSWERED,
        f"Ruleset {t.profile} {t.profile_version} (hash {t.ruleset_hash}); evidence corpus "
        f"{corpus}.",
        section_ids=(VERSIONS.id,),
    )


def _alternatives(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\balternatives?\b",
        r"\bother (options?|antibiotics?|drugs?|agents?)\b",
        r"\beligible\b",
        r"\bexclu\w*\b",
        r"\bsecond[- ]line\b",
        r"\b(profile|drug) order\b",
        r"\border of\b",
        r"\branke?d?\b",
    ):
        return None
    if not f.evaluations:
        return Answer(
            AnswerKind.ANSWERED,
            f"No antibiotic was evaluated: triage decided {name(DECISIONS, f.c.decision)} "
            "before drug selection.",
            section_ids=(EXCLUDED.id, DECISION.id),
            rule_ids=tuple(h.rule_id for h in f.deciding()),
        )
    parts = []
    rules: list[str] = []
    for e in f.evaluations:
        code = AGENT_CODES.get(e.agent, "?")
        if e.eligible:
            parts.append(f"{code} eligible (rank {e.rank})")
        else:
            ids = [x.rule_id for x in e.exclusions]
            rules += ids
            parts.append(f"{code} excluded by {', '.join(ids)}")
    return Answer(
        AnswerKind.ANSWERED,
        f"Profile order {f.order()}: " + _join(parts) + ". Another eligible regimen would be a "
        "new decision for the prescriber.",
        section_ids=(EXCLUDED.id, PLAN.id),
        rule_ids=tuple(rules),
    )


def _decision(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\bdecision\b",
        r"\bdecided\b",
        r"\boutcome\b",
        r"\brecommend\w*\b",
        r"\bplan\b",
        r"\bwhat should (i|we) do\b",
        r"\bwhat (antibiotic|drug|medication)\b",
        r"\bwhich (antibiotic|drug|medication)\b",
        r"\bprescri\w*\b",
        r"\btreat\w*\b",
        r"\b(can|could|may|should) (i|we) (give|dispense|use)\b",
    ):
        return None
    text = f"Decision: {name(DECISIONS, f.c.decision)}."
    rules = [h.rule_id for h in f.selection()] if f.treated else [h.rule_id for h in f.deciding()]
    if f.treated:
        text += f" Plan (draft for prescriber sign-off): {regimen_words(f.c.regimen)}."
    else:
        text += " No pharmacist prescription." + (
            f" Deciding rules: {_join([_hit_words(h) for h in f.deciding()])}."
            if f.deciding()
            else ""
        )
    return Answer(
        AnswerKind.ANSWERED,
        text,
        section_ids=(DECISION.id, PLAN.id),
        rule_ids=tuple(rules),
        passages=tuple(f.passages_for_rules(rules)),
    )


def _patient_facts(q: _Question, f: _Facts, v: Vocabulary) -> Answer | None:
    if not _has(
        q.low,
        r"\ballerg\w*\b",
        r"\bpregnan\w*\b",
        r"\bkidney\b",
        r"\brenal\b",
        r"\begfr\b",
        r"\bhow old\b",
        r"\bage\b",
        r"\bmedications?\b",
        r"\bsymptoms?\b",
    ):
        return None
    groups = {
        "allerg": ("RX-NIT-01", "RX-SXT-01", "RX-TMP-01", "RX-FOS-01", "W-SULFA-NONABX"),
        "pregnan": (
            "CX-002",
            "CX-003",
            "PREG-001",
            "PREG-002",
            "PREG-003",
            "PREG-004",
            "PREG-005",
            "SX-006",
        ),
        "kidney|renal|egfr": (
            "CX-011",
            "RX-NIT-02",
            "RX-SXT-02",
            "RX-TMP-02",
            "W-NIT-RENAL",
            "W-RENAL-UNKNOWN",
        ),
        "how old|age": ("CX-004", "W-AGE65", "W-ADOLESCENT", "RX-FOS-02"),
        "medication": (*(r for r in f.hits if r.startswith("DDI-")), "CX-013", "CX-015"),
        "symptom": tuple(r for r in f.hits if r.startswith("SX-")),
    }
    for pattern, ids in groups.items():
        if not re.search(pattern, q.low):
            continue
        hits = [f.hits[r] for r in ids if r in f.hits]
        summary = f.c.assessment.summary
        if hits:
            return Answer(
                AnswerKind.ANSWERED,
                "The rules recorded: " + _join([_hit_words(h) for h in hits]) + ".",
                section_ids=(PATIENT.id, DECISION.id),
                rule_ids=tuple(h.rule_id for h in hits),
                passages=tuple(f.passages_for_rules(h.rule_id for h in hits)),
            )
        if pattern == "how old|age" and (m := re.search(r"\b(\d+)-year-old\b", summary)):
            return Answer(
                AnswerKind.ANSWERED,
                f"The doctor's summary records a {m.group(1)}-year-old patient.",
                section_ids=(PATIENT.id,),
            )
        if pattern == "symptom" and "symptom" in summary.lower():
            return Answer(
                AnswerKind.ANSWERED,
                f"The doctor's summary: {summary}",
                section_ids=(PATIENT.id, ASSESSMENT.id),
            )
        return Answer(
            AnswerKind.CANNOT_ANSWER,
            "The report does not say: no rule about this fired, and the intake itself is not "
            "part of the consultation record.",
            section_ids=(PATIENT.id,),
        )
    return None


_HANDLERS: tuple[_Handler, ...] = (
    _off_topic,
    _identifiers,
    _new_facts,
    _named_rule,
    _evidence,
    _why_not,
    _why_this,
    _referral,
    _interactions,
    _warnings,
    _monitoring,
    _counselling,
    _follow_up,
    _regimen,
    _reviewers,
    _review_status,
    _versions,
    _rules_fired,
    _alternatives,
    _patient_facts,
    _decision,
)
