"""RULES.md §2 text matching: contiguous token sequences of dictionary terms."""

from __future__ import annotations

import pytest

from utimesh.rules import Knowledge
from utimesh.rules.matching import TermIndex, edit_distance, near_misses, tokens

CASES = [
    ("Lisinopril 10 mg daily", "ras_inhibitors", True),
    ("LISINOPRIL", "ras_inhibitors", True),
    ("morphine sulfate", "allergy_sulfonamide_antibiotic", False),
    ("Sulfa drugs (hives)", "allergy_sulfonamide_antibiotic", True),
    ("losartan potassium 50 mg daily", "potassium_supplements", False),
    ("losartan potassium 50 mg daily", "ras_inhibitors", True),
    ("K-Dur 20 mEq daily", "potassium_supplements", True),
    ("Slow-K 600 mg", "potassium_supplements", True),
    ("potassium chloride ER", "potassium_supplements", True),
    ("chloride potassium", "potassium_supplements", False),
    ("TMP/SMX", "allergy_tmp_smx_product", True),
    ("Sulfamethoxazole-Trimethoprim", "allergy_tmp_smx_product", True),
    ("co-trimoxazole", "allergy_tmp_smx_product", True),
    ("cotrimoxazole", "allergy_tmp_smx_product", True),
    ("Septra DS", "trimethoprim_class_antibiotics", True),
    ("Keflex (cephalexin)", "trimethoprim_class_antibiotics", False),
    ("nitrofurantoins", "allergy_nitrofurantoin", False),
    ("Macrobid", "allergy_nitrofurantoin", True),
    ("Prograf 1 mg BID", "immunosuppressants", True),
    ("tiaprofenic acid 300 mg BID", "cystitis_causing_drugs", True),
    ("tiaprofenic", "cystitis_causing_drugs", False),
    ("Diamicron MR 30 mg", "sulfonylureas", True),
    ("magnesium trisilicate", "magnesium_trisilicate", True),
    ("magnesium", "magnesium_trisilicate", False),
]


@pytest.mark.parametrize(
    ("entry", "group", "matches"), CASES, ids=[f"{e!r}-{g}" for e, g, _ in CASES]
)
def test_dictionary_matching(knowledge: Knowledge, entry: str, group: str, matches: bool) -> None:
    assert (group in knowledge.ruleset().term_index.groups_in(entry)) is matches


def test_tokens_split_on_anything_but_letters_and_digits() -> None:
    assert tokens("  Sulfamethoxazole/Trimethoprim-DS 800mg ") == (
        "sulfamethoxazole",
        "trimethoprim",
        "ds",
        "800mg",
    )


def test_empty_terms_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty term"):
        TermIndex({"g": ["--"]})


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("nitrofurantion", "nitrofurantoin", 1),  # two neighbours swapped
        ("bactrum", "bactrim", 1),
        ("fosfomicyn", "fosfomycin", 2),
        ("monurol", "monurol", 0),
        ("trimethoprim", "lisinopril", 3),  # beyond the limit: reported as limit + 1
    ],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance


def test_near_misses_find_misspelt_drugs_but_not_exact_or_short_words() -> None:
    terms = ("nitrofurantoin", "macrobid", "sulfa", "tmp smx")
    assert near_misses("Nitrofurantion (hives)", terms) == ("nitrofurantoin",)
    assert near_misses("macrobide", terms) == ("macrobid",)
    assert near_misses("nitrofurantoin", terms) == ()  # an exact match is RULES.md's job
    assert near_misses("sulfur", terms) == ()  # too short to guess at
    assert near_misses("penicillin", terms) == ()
