"""An in-memory PatientStore for when there is no database (tests, a stack without Postgres).
External identifiers are kept only as a keyed digest (the key lives and dies with the process)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import replace

from services.consult.domain.memory import EpisodeOutcome, MemoryUpdate, PatientMemory

_PREFIX = "patients/"


class MemoryPatientStore:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._ids: dict[bytes, str] = {}
        self._memory: dict[str, PatientMemory] = {}
        self._recorded: set[str] = set()  # consultations whose update is in memory

    async def resolve(self, external_id: str) -> str:
        digest = hmac.new(self._key, external_id.encode(), hashlib.sha256).digest()
        name = self._ids.get(digest)
        if name is None:
            name = f"{_PREFIX}{uuid.uuid4()}"
            self._ids[digest] = name
            self._memory[name] = PatientMemory()
        return name

    async def load(self, patient: str, *, audit_read: bool = False) -> PatientMemory | None:
        return self._memory.get(patient)

    async def record(self, patient: str, update: MemoryUpdate) -> bool:
        if update.source_consultation:
            if update.source_consultation in self._recorded:
                return False
            self._recorded.add(update.source_consultation)
        memory = self._memory.get(patient, PatientMemory())
        episodes = (*memory.episodes, update.episode) if update.episode else memory.episodes
        self._memory[patient] = replace(
            memory, episodes=episodes, facts=(*memory.facts, *update.facts)
        )
        return True

    async def set_episode_outcome(
        self,
        patient: str,
        source_consultation: str,
        outcome: EpisodeOutcome,
        *,
        actor: str = "",
    ) -> bool:
        """Nothing is audited here (no audit trail without a database)."""
        memory = self._memory.get(patient)
        if memory is None or not any(
            e.source_consultation == source_consultation for e in memory.episodes
        ):
            return False
        self._memory[patient] = replace(
            memory,
            episodes=tuple(
                replace(e, outcome=outcome) if e.source_consultation == source_consultation else e
                for e in memory.episodes
            ),
        )
        return True
