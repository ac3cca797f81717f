"""The offline answerer over a question set: for each question the kind of answer, the facts it
must state and the sections, rules and passages it must rest on; refusals with a reason; and,
for every answer, no passage, section or rule id that the consultation or report lacks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.report.domain.answer import (
    Answer,
    AnswerKind,
    PassageCitation,
    Vocabulary,
    answer,
    checked,
)
from services.report.domain.render import render
from tests.report.support import passage_ids
from utimesh.consult.v1 import consult_pb2 as cpb

ANSWERED = AnswerKind.ANSWERED
CANNOT = AnswerKind.CANNOT_ANSWER
NEW = AnswerKind.NEEDS_NEW_CONSULTATION
OUT = AnswerKind.OUT_OF_SCOPE


@dataclass(frozen=True)
class Q:
    """One question and what its answer must hold."""

    on: str  # consultation key (conftest.QA_PATIENTS)
    question: str
    kind: AnswerKind
    words: tuple[str, ...] = ()  # must appear in the answer text (case-insensitive)
    sections: tuple[str, ...] = ()  # must be among the answer's section ids
    rules: tuple[str, ...] = ()  # must be among the answer's rule ids
    passage_rule: str = ""  # some cited passage grounds a claim resting on this rule
    passage_words: str = ""  # some cited passage's quoted span holds these words
    absent: tuple[str, ...] = ()  # must not appear in the answer text


# fmt: off
QUESTIONS = [
    # --- plain nitrofurantoin treatment (CA-ON) ---
    Q("nit", "Why nitrofurantoin?", ANSWERED, ("first eligible", "NIT > SXT > TMP > FOS"), ("plan",), ("RX-SEL-NIT",), passage_rule="RX-SEL-NIT"),
    Q("nit", "Why this antibiotic?", ANSWERED, ("nitrofurantoin", "first eligible"), ("plan",), ("RX-SEL-NIT",)),
    Q("nit", "Why not trimethoprim?", ANSWERED, ("eligible but ranked lower", "rank 3"), ("excluded-agents", "plan"), ("RX-SEL-NIT",)),
    Q("nit", "Why not Bactrim?", ANSWERED, ("TMP-SMX", "ranked lower", "rank 2"), ("excluded-agents",), ("RX-SEL-NIT",)),
    Q("nit", "Which source says five days?", ANSWERED, ("passage", "5 days"), ("evidence",), ("RX-SEL-NIT",), passage_rule="RX-SEL-NIT", passage_words="5 days"),
    Q("nit", "Which source says seven days?", CANNOT, ("The report does not say", "7"), ("evidence",)),
    Q("nit", "What is the evidence for this decision?", ANSWERED, ("passage",), ("evidence",), passage_rule="RX-SEL-NIT"),
    Q("nit", "What is the dose?", ANSWERED, ("nitrofurantoin 100 mg", "capsule"), ("plan",), ("RX-SEL-NIT",)),
    Q("nit", "How long is the course?", ANSWERED, ("5 days",), ("plan",), passage_words="5 days"),
    Q("nit", "How often should she take it?", ANSWERED, ("twice daily",), ("plan",)),
    Q("nit", "What side effects should I counsel her on?", ANSWERED, ("Take with food", "does not list every side effect"), ("monitoring-counselling",)),
    Q("nit", "What should I monitor?", ANSWERED, ("48-72 h",), ("monitoring-counselling",), ("FU-002",)),
    Q("nit", "When should she come back?", ANSWERED, ("48-72 h", "primary care"), ("follow-up",), ("FU-001", "FU-002"), passage_rule="FU-002"),
    Q("nit", "What should she do if her symptoms get worse?", ANSWERED, ("urgent care",), ("follow-up",)),
    Q("nit", "Are there any red flags?", ANSWERED, ("No red flag",), ("decision",)),
    Q("nit", "Any warnings?", ANSWERED, ("No warning",), ("warnings",)),
    Q("nit", "Does nitrofurantoin interact with warfarin?", CANNOT, ("The report does not say", "vitamin k antagonists", "new consultation")),
    Q("nit", "Which rules fired?", ANSWERED, ("SX-001", "RX-SEL-NIT", "FU-002"), ("decision",), ("SX-001", "RX-SEL-NIT", "FU-001", "FU-002")),
    Q("nit", "What is RX-SEL-NIT?", ANSWERED, ("Select nitrofurantoin", "fired"), ("decision",), ("RX-SEL-NIT",)),
    Q("nit", "What does DDI-005 say?", CANNOT, ("does not mention DDI-005",)),
    Q("nit", "Was this consultation fully reviewed?", ANSWERED, ("All reviews", "approve", "prescriber sign-off"), ("draft-notice", "deliberation")),
    Q("nit", "Who reviewed it, and which model was used?", ANSWERED, ("doctor", "pharmacist", "offline-rules", "No LLM was used"), ("deliberation",)),
    Q("nit", "What version of the rules was used?", ANSWERED, ("CA-ON 1.0.0", "hash"), ("versions",)),
    Q("nit", "Can I prescribe nitrofurantoin?", ANSWERED, ("recommend treatment", "sign-off"), ("decision", "plan")),
    Q("nit", "Why not ciprofloxacin?", CANNOT, ("ciprofloxacin", "not one of them"), ("excluded-agents",)),
    Q("nit", "What is the patient's name?", CANNOT, ("no patient identifiers",), ("patient",)),
    Q("nit", "Does the report say anything about her blood pressure?", CANNOT, ("The report does not say",)),
    Q("nit", "What if she is pregnant?", NEW, ("new consultation", "pregnancy")),
    Q("nit", "She is now 15", NEW, ("new consultation", "age")),
    Q("nit", "What if the kidney function were 30?", NEW, ("new consultation", "kidney")),
    Q("nit", "Can I give ciprofloxacin instead?", NEW, ("new consultation", "ciprofloxacin")),
    Q("nit", "Can I give it for 7 days?", NEW, ("new consultation", "regimen")),
    Q("nit", "Can I double the dose?", NEW, ("new consultation",)),
    Q("nit", "What's the weather tomorrow?", OUT, ("only answer questions",)),
    Q("nit", "What did the patient in room 4 get?", OUT, ("not other patients",)),
    Q("nit", "Tell me a joke", OUT),
    Q("nit", "What is the capital of France?", OUT),
    # --- nitrofurantoin allergy -> TMP-SMX, with lisinopril (DDI-003) ---
    Q("sxt-lisinopril", "Why not nitrofurantoin?", ANSWERED, ("excluded by RX-NIT-01", "allergy"), ("excluded-agents",), ("RX-NIT-01",), passage_rule="RX-NIT-01"),
    Q("sxt-lisinopril", "Why nitrofurantoin?", ANSWERED, ("excluded by RX-NIT-01",), ("excluded-agents",), ("RX-NIT-01",)),
    Q("sxt-lisinopril", "Why TMP-SMX?", ANSWERED, ("first eligible", "NIT by RX-NIT-01"), ("plan", "excluded-agents"), ("RX-SEL-SXT", "RX-NIT-01")),
    Q("sxt-lisinopril", "Does it interact with lisinopril?", ANSWERED, ("DDI-003", "hyperkalemia", "potassium"), ("warnings",), ("DDI-003",), passage_rule="DDI-003"),
    Q("sxt-lisinopril", "Should I check potassium?", ANSWERED, ("potassium", "DDI-003"), ("monitoring-counselling",), ("DDI-003",)),
    Q("sxt-lisinopril", "What warnings are there?", ANSWERED, ("DDI-003", "hyperkalemia"), ("warnings",), ("DDI-003",)),
    Q("sxt-lisinopril", "Why not fosfomycin?", ANSWERED, ("eligible but ranked lower", "rank 4"), ("excluded-agents",), ("RX-SEL-SXT",)),
    Q("sxt-lisinopril", "What is the evidence for the hyperkalemia warning?", ANSWERED, ("hyperkalemia",), ("evidence",), passage_rule="DDI-003", passage_words="hyperkalemia"),
    Q("sxt-lisinopril", "What is the dose and for how many days?", ANSWERED, ("trimethoprim 160 mg", "sulfamethoxazole 800 mg", "3 days"), ("plan",)),
    Q("sxt-lisinopril", "She is also taking spironolactone", NEW, ("new consultation", "medication")),
    Q("sxt-lisinopril", "Can I give nitrofurantoin anyway?", NEW, ("new consultation",)),
    Q("sxt-lisinopril", "Is she allergic to anything?", ANSWERED, ("RX-NIT-01",), ("patient",), ("RX-NIT-01",)),
    # --- fever: urgent referral ---
    Q("fever", "Why was she referred?", ANSWERED, ("refer", "URGENT", "RF-001", "Fever"), ("decision", "plan"), ("RF-001",), passage_rule="RF-001"),
    Q("fever", "Why no antibiotic?", ANSWERED, ("No pharmacist prescription", "RF-001"), ("plan",), ("RF-001",)),
    Q("fever", "Why not nitrofurantoin?", ANSWERED, ("drug selection was not reached",), ("decision", "plan"), ("RF-001",)),
    Q("fever", "What are the red flags?", ANSWERED, ("Fever", "Rigors or chills"), ("decision",), ("RF-001", "RF-002")),
    Q("fever", "What dose should she take?", ANSWERED, ("no dose", "refer"), ("plan",), absent=("mg",)),
    Q("fever", "What if she had no fever?", NEW, ("new consultation",)),
    Q("fever", "Can I prescribe nitrofurantoin?", NEW, ("new consultation",)),
    Q("fever", "Who won the hockey game?", OUT),
    # --- pregnancy: referral with notes for the prescriber ---
    Q("pregnant", "Why refer?", ANSWERED, ("CX-002", "Pregnant", "PREG-001"), ("decision", "plan"), ("CX-002",), passage_rule="CX-002"),
    Q("pregnant", "Why can't she have trimethoprim?", ANSWERED, ("not reached", "first trimester"), ("plan",), ("CX-002", "PREG-002")),
    Q("pregnant", "What notes are there for the prescriber?", ANSWERED, ("PREG-001", "PREG-002"), ("plan",), ("PREG-001", "PREG-002")),
    Q("pregnant", "What does PREG-002 say?", ANSWERED, ("folate antagonists", "13 weeks"), ("decision",), ("PREG-002",), passage_rule="PREG-002"),
    Q("pregnant", "Is she pregnant?", ANSWERED, ("CX-002",), ("patient",), ("CX-002",)),
    Q("pregnant", "What if she were 20 weeks?", NEW, ("new consultation", "pregnancy")),
    # --- the plain case with the doctor down: degraded ---
    Q("degraded:nit", "Was anything missing from the review?", ANSWERED, ("NOT fully reviewed", "doctor"), ("degraded-review", "draft-notice")),
    Q("degraded:nit", "Who reviewed it?", ANSWERED, ("pharmacist", "Missing review(s): doctor"), ("deliberation",)),
    Q("degraded:nit", "What is the plan?", ANSWERED, ("nitrofurantoin", "5 days"), ("plan",)),
    # --- CA-AB: nitrofurantoin and fosfomycin allergy, trimethoprim 91 days ago -> TMP ---
    Q("ab-tmp", "Why trimethoprim?", ANSWERED, ("NIT > FOS > SXT > TMP", "RX-NIT-01", "RX-FOS-01", "RX-SXT-06"), ("plan",), ("RX-SEL-TMP", "RX-SXT-06")),
    Q("ab-tmp", "Why not TMP-SMX?", ANSWERED, ("RX-SXT-06", "180 days"), ("excluded-agents",), ("RX-SXT-06",), passage_rule="RX-SXT-06"),
    Q("ab-tmp", "Why not fosfomycin?", ANSWERED, ("RX-FOS-01", "allergy"), ("excluded-agents",), ("RX-FOS-01",)),
    Q("ab-tmp", "What is the profile order?", ANSWERED, ("NIT > FOS > SXT > TMP",), ("excluded-agents",)),
    Q("ab-tmp", "Which source says three days?", ANSWERED, ("3 days",), ("evidence",), passage_rule="RX-SEL-TMP", passage_words="3 days"),
    Q("ab-tmp", "What ruleset version?", ANSWERED, ("CA-AB",), ("versions",)),
]
# fmt: on


def _id(q: Q) -> str:
    return f"{q.on}: {q.question}"


@pytest.mark.parametrize("q", QUESTIONS, ids=_id)
def test_question_set(q: Q, qa: dict[str, cpb.Consultation], vocabulary: Vocabulary) -> None:
    c = qa[q.on]
    rendered = render(c, c.corpus_version)
    a = answer(c, rendered, q.question, vocabulary=vocabulary)
    assert a.kind is q.kind, a.text
    assert a.generated_by == "offline-rules"
    for word in q.words:
        assert word.lower() in a.text.lower(), (word, a.text)
    for word in q.absent:
        assert word.lower() not in a.text.lower(), (word, a.text)
    assert set(q.sections) <= set(a.section_ids), a.section_ids
    assert set(q.rules) <= set(a.rule_ids), a.rule_ids
    if q.passage_rule:
        rules_of = {
            citation.passage.id: set(citation.passage.rule_ids) | set(g.claim.rule_ids)
            for g in c.groundings
            for citation in g.citations
        }
        assert any(q.passage_rule in rules_of[p.passage_id] for p in a.passages), a.passages
    if q.passage_words:
        assert any(q.passage_words in p.quoted_span for p in a.passages), a.passages
    if q.kind in (AnswerKind.NEEDS_NEW_CONSULTATION, AnswerKind.OUT_OF_SCOPE):
        assert not a.passages and not a.rule_ids, "a refusal cites nothing"
    assert_ids_exist(a, c, {s.id for s in rendered.sections})


def assert_ids_exist(a: Answer, c: cpb.Consultation, sections: set[str]) -> None:
    texts = {cit.passage.id: cit.passage.text for g in c.groundings for cit in g.citations}
    for p in a.passages:
        assert p.passage_id in texts and p.quoted_span in texts[p.passage_id], p
    assert set(a.section_ids) <= sections
    fired = {h.rule_id for h in c.triage.rules_fired}
    fired |= {x.rule_id for e in c.triage.agent_evaluations for x in e.exclusions}
    mentioned = {r for cl in (*c.assessment.claims, *c.review.claims) for r in cl.rule_ids}
    assert set(a.rule_ids) <= fired | mentioned | {w.rule_id for w in c.triage.warnings}


def test_the_question_set_is_large_enough() -> None:
    assert len(QUESTIONS) >= 30
    assert len({q.on for q in QUESTIONS}) >= 3
    kinds = {q.kind for q in QUESTIONS}
    assert kinds == set(AnswerKind)


def test_answers_are_deterministic(qa: dict[str, cpb.Consultation], vocabulary: Vocabulary) -> None:
    c = qa["sxt-lisinopril"]
    rendered = render(c, "")
    for q in QUESTIONS:
        if q.on == "sxt-lisinopril":
            first = answer(c, rendered, q.question, vocabulary=vocabulary)
            assert answer(c, rendered, q.question, vocabulary=vocabulary) == first


def test_without_evidence_no_passage_is_cited(
    mesh_consultations: dict[str, cpb.Consultation], vocabulary: Vocabulary
) -> None:
    c = cpb.Consultation()
    c.CopyFrom(mesh_consultations["qa:nit"])
    del c.groundings[:]
    rendered = render(c, "")
    for q in QUESTIONS:
        if q.on == "nit":
            a = answer(c, rendered, q.question, vocabulary=vocabulary)
            assert not a.passages, q.question
    a = answer(c, rendered, "Which source says five days?", vocabulary=vocabulary)
    assert a.kind is CANNOT and "grounding is unavailable" in a.text


def test_the_check_drops_ids_the_consultation_lacks(qa: dict[str, cpb.Consultation]) -> None:
    c = qa["nit"]
    rendered = render(c, "")
    real = sorted(passage_ids(c))[0]
    real_text = next(
        cit.passage.text for g in c.groundings for cit in g.citations if cit.passage.id == real
    )
    invented = Answer(
        ANSWERED,
        "text",
        section_ids=("plan", "made-up-section"),
        passages=(
            PassageCitation("idsa-invented-5d", "IDSA10", "Invented", "5 days"),
            PassageCitation(real, "X", "T", "words the passage never says"),
            PassageCitation(real, "X", "T", real_text[:20]),
        ),
        rule_ids=("RX-SEL-NIT", "DDI-999"),
    )
    kept = checked(invented, c, rendered)
    assert kept.section_ids == ("plan",)
    assert [p.passage_id for p in kept.passages] == [real]
    assert kept.passages[0].quoted_span == real_text[:20]
    assert kept.rule_ids == ("RX-SEL-NIT",)
