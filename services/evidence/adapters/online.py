"""Online search providers. Only the disabled one exists: this build never searches online.

A future provider implements `services.evidence.domain.ports.OnlineSearch` (an async `search`
with a deadline, no patient data in the query) and is chosen in the composition root; its hits
are uncurated and must never ground a claim as SUPPORTS.
"""

from __future__ import annotations

from services.evidence.domain.ports import OnlineHit


class DisabledOnlineSearch:
    """The default: online search is off and `search` returns nothing, without any I/O."""

    @property
    def enabled(self) -> bool:
        return False

    async def search(self, query: str, *, limit: int, deadline_s: float) -> list[OnlineHit]:
        return []
