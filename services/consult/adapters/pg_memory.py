"""The PostgreSQL PatientStore (tables of migration 0002).

Patients are found by the blind index of their external identifier and created on first use,
with the identifier sealed by the key ring (utimesh.db.crypto); the identifier itself is never
stored in clear, logged, or put in an audit payload. Writes of memory and reads of a timeline
append audit events (`patient.create`, `patient.memory.update`, `patient.read`) in the same
transaction; their payloads are ids and counts only."""

from __future__ import annotations

import uuid

from services.consult.domain.memory import (
    EpisodeOutcome,
    FactKind,
    MemoryUpdate,
    PatientMemory,
    RecordedEpisode,
    RecordedFact,
)
from utimesh.clinical.v1 import clinical_pb2
from utimesh.codec.clinical import regimen_from_proto, regimen_to_proto
from utimesh.db import audit
from utimesh.db.crypto import Keyring
from utimesh.db.pool import Pool
from utimesh.rules.model import Decision

_PREFIX = "patients/"


def patient_uuid(name: str) -> uuid.UUID | None:
    """The UUID of "patients/{uuid}", or None for any other text."""
    if not name.startswith(_PREFIX):
        return None
    try:
        return uuid.UUID(name.removeprefix(_PREFIX))
    except ValueError:
        return None


def _decision(text: str | None) -> Decision | None:
    try:
        return Decision(text) if text else None
    except ValueError:
        return None


class PostgresPatientStore:
    def __init__(self, pool: Pool, keyring: Keyring, *, actor: str = "consult") -> None:
        self.pool = pool
        self.keyring = keyring
        self.actor = actor

    async def resolve(self, external_id: str) -> str:
        lookup = self.keyring.blind_index(external_id)
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval("SELECT id FROM patients WHERE id_lookup = $1", lookup)
            if found is not None:
                return f"{_PREFIX}{found}"
            sealed = self.keyring.seal(external_id)
            new_id = uuid.uuid4()
            got = await conn.fetchval(
                "INSERT INTO patients (id, id_lookup, id_ciphertext, key_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (id_lookup) DO NOTHING RETURNING id",
                new_id,
                lookup,
                sealed.blob,
                sealed.key_id,
            )
            if got is None:  # created concurrently by another consultation
                got = await conn.fetchval("SELECT id FROM patients WHERE id_lookup = $1", lookup)
            else:
                await audit.append(
                    conn,
                    self.actor,
                    "patient.create",
                    f"{_PREFIX}{got}",
                    payload={"key_id": sealed.key_id},
                )
            return f"{_PREFIX}{got}"

    async def load(self, patient: str, *, audit_read: bool = False) -> PatientMemory | None:
        pid = patient_uuid(patient)
        if pid is None:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM patients WHERE id = $1", pid) is None:
                return None
            eps = await conn.fetch(
                "SELECT onset_date, treatment_end_date, regimen, decision, outcome, recorded_on,"
                " source_consultation FROM memory_episodes WHERE patient_id = $1"
                " ORDER BY onset_date, id",
                pid,
            )
            facts = await conn.fetch(
                "SELECT kind, value, recorded_on, source_consultation FROM memory_facts"
                " WHERE patient_id = $1 ORDER BY recorded_on, id",
                pid,
            )
            if audit_read:
                await audit.append(
                    conn,
                    self.actor,
                    "patient.read",
                    patient,
                    payload={"episodes": len(eps), "facts": len(facts)},
                )
        return PatientMemory(
            episodes=tuple(
                RecordedEpisode(
                    onset_date=r["onset_date"],
                    treatment_end_date=r["treatment_end_date"],
                    regimen=(
                        regimen_from_proto(clinical_pb2.Regimen.FromString(r["regimen"]))
                        if r["regimen"] is not None
                        else None
                    ),
                    decision=_decision(r["decision"]),
                    outcome=EpisodeOutcome(r["outcome"]),
                    recorded_on=r["recorded_on"],
                    source_consultation=r["source_consultation"],
                )
                for r in eps
            ),
            facts=tuple(
                RecordedFact(
                    FactKind(r["kind"]), r["value"], r["recorded_on"], r["source_consultation"]
                )
                for r in facts
            ),
        )

    async def record(self, patient: str, update: MemoryUpdate) -> bool:
        pid = patient_uuid(patient)
        if pid is None:
            raise ValueError("not a patient name")
        async with self.pool.acquire() as conn, conn.transaction():
            if update.source_consultation and not await conn.fetchval(
                "INSERT INTO memory_updates (source_consultation, patient_id) VALUES ($1, $2)"
                " ON CONFLICT (source_consultation) DO NOTHING RETURNING true",
                update.source_consultation,
                pid,
            ):
                return False  # recorded by an earlier attempt of the same consultation
            ep = update.episode
            if ep is not None:
                await conn.execute(
                    "INSERT INTO memory_episodes (patient_id, onset_date, treatment_end_date,"
                    " regimen, decision, outcome, recorded_on, source_consultation)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    pid,
                    ep.onset_date,
                    ep.treatment_end_date,
                    (
                        regimen_to_proto(ep.regimen).SerializeToString(deterministic=True)
                        if ep.regimen
                        else None
                    ),
                    ep.decision.value if ep.decision else None,
                    ep.outcome.value,
                    ep.recorded_on,
                    ep.source_consultation,
                )
            if update.facts:
                await conn.executemany(
                    "INSERT INTO memory_facts (patient_id, kind, value, recorded_on,"
                    " source_consultation) VALUES ($1, $2, $3, $4, $5)",
                    [
                        (pid, f.kind.value, f.value, f.recorded_on, f.source_consultation)
                        for f in update.facts
                    ],
                )
            await audit.append(
                conn,
                self.actor,
                "patient.memory.update",
                patient,
                payload={
                    "episode": ep is not None,
                    "facts": len(update.facts),
                    "source_consultation": update.source_consultation,
                },
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
        """Set the outcome of the patient's episode(s) from `source_consultation` and audit
        `patient.memory.update` (ids, the outcome and a count) in one transaction; False, and
        nothing audited, when there is no such episode."""
        pid = patient_uuid(patient)
        if pid is None:
            return False
        async with self.pool.acquire() as conn, conn.transaction():
            updated = await conn.fetch(
                "UPDATE memory_episodes SET outcome = $3"
                " WHERE patient_id = $1 AND source_consultation = $2 RETURNING id",
                pid,
                source_consultation,
                outcome.value,
            )
            if not updated:
                return False
            await audit.append(
                conn,
                actor or self.actor,
                "patient.memory.update",
                patient,
                payload={
                    "episode_outcome": outcome.value,
                    "episodes": len(updated),
                    "source_consultation": source_consultation,
                },
            )
        return True

    async def reseal_all(self) -> int:
        """Re-seal every identifier not sealed with the current key; returns how many."""
        done = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, id_ciphertext FROM patients WHERE key_id <> $1 FOR UPDATE",
                self.keyring.current,
            )
            for r in rows:
                sealed = self.keyring.reseal(r["id_ciphertext"])
                await conn.execute(
                    "UPDATE patients SET id_ciphertext = $2, key_id = $3 WHERE id = $1",
                    r["id"],
                    sealed.blob,
                    sealed.key_id,
                )
                done += 1
        return done


__all__ = ["PostgresPatientStore", "patient_uuid"]
