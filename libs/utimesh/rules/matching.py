"""Dictionary matching of free text (RULES.md §2): contiguous token sequences, no substrings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_SPLIT = re.compile(r"[^a-z0-9]+")


def tokens(text: str) -> tuple[str, ...]:
    """Lower-case `text` and split it on every run of characters other than a-z and 0-9."""
    return tuple(t for t in _SPLIT.split(text.lower()) if t)


class TermIndex:
    """Finds which dictionary groups a free-text entry mentions.

    A term matches an entry when the term's tokens occur contiguously in the entry's tokens:
    "Lisinopril 10 mg daily" matches `lisinopril`; "morphine sulfate" does not match `sulfa`;
    "losartan potassium" does not match `potassium chloride`.
    """

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for group, terms in groups.items():
            for term in terms:
                term_tokens = tokens(term)
                if not term_tokens:
                    raise ValueError(f"dictionary group {group!r} has an empty term {term!r}")
                index.setdefault(term_tokens[0], []).append((term_tokens, group))
        self._index = index

    def groups_in(self, entry: str) -> frozenset[str]:
        """Groups whose terms occur in one entry."""
        entry_tokens = tokens(entry)
        found: set[str] = set()
        for i, token in enumerate(entry_tokens):
            for term_tokens, group in self._index.get(token, ()):
                if entry_tokens[i : i + len(term_tokens)] == term_tokens:
                    found.add(group)
        return frozenset(found)

    def groups_in_any(self, entries: Iterable[str]) -> frozenset[str]:
        """Groups mentioned by at least one of the entries."""
        found: set[str] = set()
        for entry in entries:
            found |= self.groups_in(entry)
        return frozenset(found)


#: Shortest token a near miss is looked for in: shorter words are too often one edit apart.
NEAR_MISS_MIN_LEN = 6
NEAR_MISS_MAX_EDITS = 2


def edit_distance(a: str, b: str, limit: int = NEAR_MISS_MAX_EDITS) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap two neighbours),
    or `limit + 1` as soon as it must exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        prev2, prev = prev, row
    return prev[-1]


def near_misses(entry: str, terms: Iterable[str]) -> tuple[str, ...]:
    """The one-word `terms` an entry's words almost spell (1-2 edits away, not equal): a
    misspelt drug ("nitrofurantion", "bactrum"). Not part of RULES.md matching: a near miss
    never changes triage; the pharmacist uses it to stop and ask a person."""
    words = [t for t in tokens(entry) if len(t) >= NEAR_MISS_MIN_LEN]
    found: list[str] = []
    for term in terms:
        term_tokens = tokens(term)
        if len(term_tokens) != 1 or len(term_tokens[0]) < NEAR_MISS_MIN_LEN:
            continue
        target = term_tokens[0]
        if any(0 < edit_distance(w, target) <= NEAR_MISS_MAX_EDITS for w in words):
            found.append(term)
    return tuple(dict.fromkeys(found))
