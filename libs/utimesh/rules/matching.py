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
