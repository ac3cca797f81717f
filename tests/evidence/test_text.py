"""The normaliser (synonyms, brands, drug classes), sentence spans and stated numbers."""

from __future__ import annotations

import pytest

from services.evidence.domain.text import (
    Fact,
    Normaliser,
    describe,
    facts_agree,
    merge_facts,
    sentence_facts,
    sentence_spans,
    strip_rule_ids,
)
from tests.evidence.conftest import normaliser
from utimesh.rules import Ruleset


@pytest.fixture(scope="module")
def norm(ruleset: Ruleset) -> Normaliser:
    return normaliser(ruleset)


SAME_TERMS = [
    ("macrobid", "nitrofurantoin"),
    ("Macrodantin", "nitrofurantoin"),
    ("Septra", "trimethoprim-sulfamethoxazole"),
    ("Bactrim", "trimethoprim sulfamethoxazole"),
    ("TMP-SMX", "trimethoprim/sulfamethoxazole"),
    ("co-trimoxazole", "sulfamethoxazole-trimethoprim"),
    ("Monurol", "fosfomycin"),
    ("kidney function", "eGFR"),
    ("CrCl", "creatinine clearance"),
    ("egfr_ml_min", "mL/min"),
    ("bladder infection", "cystitis"),
    ("urinary tract infection", "UTI"),
    ("pregnant", "pregnancy"),
    ("breastfeeding", "lactating"),
    ("twice daily", "BID"),
    ("twice a day", "bid"),
    ("once daily", "once a day"),
    ("haematuria", "hematuria"),
    ("throwing up", "vomiting"),
    ("burning when peeing", "dysuria urination"),
    ("ACE inhibitor", "ARB"),
    ("diabetic", "diabetes"),
]


@pytest.mark.parametrize(("a", "b"), [pytest.param(a, b, id=f"{a}={b}") for a, b in SAME_TERMS])
def test_synonyms_share_terms(norm: Normaliser, a: str, b: str) -> None:
    assert set(norm.terms(a)) & set(norm.terms(b)), (norm.terms(a), norm.terms(b))


def test_brand_becomes_the_generic_and_class_members_gain_the_class(norm: Normaliser) -> None:
    assert norm.terms("Macrobid") == ["nitrofurantoin"]
    assert norm.terms("lisinopril") == ["lisinopril", "rasinhibitor"]
    assert norm.terms("spironolactone") == ["spironolactone", "potassiumsparing"]
    assert norm.terms("acenocoumarol") == ["acenocoumarol", "warfarin"]


def test_stopwords_generic_words_and_rule_ids_are_dropped(norm: Normaliser) -> None:
    assert norm.terms("The patient should take it with food") == ["food"]
    assert norm.terms("RX-SEL-NIT and PREG-001..004 fired") == ["fired"]
    assert strip_rule_ids("see CX-011 and W-NIT-RENAL.").split() == ["see", "and", "."]


def test_content_terms_drop_numbers_and_units_once_each(norm: Normaliser) -> None:
    terms = norm.content_terms("nitrofurantoin 100 mg BID for 5 days; nitrofurantoin again")
    assert terms == ["nitrofurantoin", "bid", "recurrent"]


def test_sentence_spans_are_verbatim_and_trimmed() -> None:
    text = "Fever (>= 38.0 C): refer. Take 100 mg. BID for 5 days!  Then reassess; Review at 48 h."
    spans = sentence_spans(text)
    pieces = [text[s:e] for s, e in spans]
    assert pieces == [
        "Fever (>= 38.0 C): refer.",
        "Take 100 mg.",
        "BID for 5 days!",
        "Then reassess;",
        "Review at 48 h.",
    ]
    assert all(p in text and p == p.strip() for p in pieces)
    assert sentence_spans("   ") == []


def _facts(sentence: str) -> dict[tuple[str, str, str], str]:
    return {k: describe(f) for k, f in merge_facts(sentence_facts(sentence)).items()}


FACTS = [
    (
        "nitrofurantoin 100 mg twice daily for 5 days",
        {
            ("dose", "NIT", ""): "100 mg",
            ("frequency", "NIT", ""): "twice daily",
            ("duration", "NIT", ""): "5 days",
        },
    ),
    (
        "Fosfomycin 3 g as a single dose.",
        {("dose", "FOS", ""): "3 g", ("frequency", "FOS", ""): "a single dose"},
    ),
    (
        "TMP-SMX DS 160/800 mg BID for three days",
        {
            ("dose", "SXT", ""): "160 mg or 800 mg",
            ("frequency", "SXT", ""): "twice daily",
            ("duration", "SXT", ""): "3 days",
        },
    ),
    (
        "trimethoprim-sulfamethoxazole (trimethoprim 160 mg + sulfamethoxazole 800 mg) PO BID",
        {("dose", "SXT", ""): "160 mg or 800 mg", ("frequency", "SXT", ""): "twice daily"},
    ),
    ("a 7-day course of nitrofurantoin", {("duration", "NIT", ""): "7 days"}),
    (
        "Trimethoprim 200 mg once daily",
        {("dose", "TMP", ""): "200 mg", ("frequency", "TMP", ""): "once daily"},
    ),
    (
        "Avoid nitrofurantoin if CrCl is below 30 mL/min.",
        {("renal", "NIT", "avoid"): "30 mL/min"},
    ),
    (
        "Refer when kidney function is 30-59 mL/min (CX-011).",
        {("renal", "", "refer"): "30-59 mL/min"},
    ),
    # Numbers without a drug, or gestational weeks, are not regimen facts.
    ("7-day courses are usual in pregnancy.", {}),
    ("avoid nitrofurantoin at 38-42 weeks", {}),
    ("check kidney function (age 65)", {}),
]


@pytest.mark.parametrize(("sentence", "expected"), [pytest.param(s, e, id=s) for s, e in FACTS])
def test_sentence_facts(sentence: str, expected: dict[tuple[str, str, str], str]) -> None:
    assert _facts(sentence) == expected


def test_facts_agree_on_overlapping_values_and_codes() -> None:
    five = Fact("duration", "NIT", "", ((5.0, 5.0),))
    seven = Fact("duration", "NIT", "", ((7.0, 7.0),))
    five_to_seven = Fact("duration", "NIT", "", ((5.0, 7.0),))
    assert not facts_agree(five, seven)
    assert facts_agree(seven, five_to_seven) and facts_agree(five_to_seven, five)
    bid = Fact("frequency", "NIT", "", codes=("bid",))
    either = Fact("frequency", "NIT", "", codes=("qid", "bid"))
    assert facts_agree(bid, either)
    assert not facts_agree(bid, Fact("frequency", "NIT", "", codes=("qd",)))
