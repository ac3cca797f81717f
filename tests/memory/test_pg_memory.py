"""The PostgreSQL patient store on a real embedded PostgreSQL: a timeline after three visits."""

from __future__ import annotations

import base64
import os
from datetime import date

import asyncpg
import pytest

from services.consult.adapters.pg_memory import PostgresPatientStore
from services.consult.domain.memory import FactKind, update_after
from services.consult.memory_rpcs import timeline_to_proto
from tests.factories import patient
from tests.memory.conftest import open_pool
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import audit
from utimesh.db.crypto import Keyring
from utimesh.rules import TriageEngine, parse_intake

EXTERNAL_ID = "MRN-00042-secret"


def ring(extra: str = "") -> Keyring:
    return Keyring.parse(extra + "k1:" + base64.b64encode(b"k" * 32).decode())


@pytest.mark.asyncio
async def test_timeline_after_three_visits(module_database_url: str, engine: TriageEngine) -> None:
    async with open_pool(module_database_url) as pool:
        store = PostgresPatientStore(pool, ring(), actor="test")
        name = await store.resolve(EXTERNAL_ID)
        assert await store.resolve(EXTERNAL_ID) == name and name.startswith("patients/")
        visits = [
            patient(assessment_date="2026-01-05", history__allergies=["sulfa"]),
            patient(
                assessment_date="2026-02-10", egfr_ml_min=55, history__medications=["ramipril"]
            ),
            patient(assessment_date="2026-03-01", pregnancy_status="pregnant", gestational_weeks=8),
        ]
        for i, p in enumerate(visits):
            intake = parse_intake(p)
            a = engine.assess(intake)
            await store.record(
                name, update_after(intake, a.decision, a.regimen, f"consultations/v{i}")
            )
        memory = await store.load(name, audit_read=True)
        assert memory is not None
        assert [e.onset_date for e in memory.episodes] == [
            date(2026, 1, 3),
            date(2026, 2, 8),
            date(2026, 2, 27),
        ]
        assert memory.episodes[0].regimen is not None
        t = timeline_to_proto(name, memory)
        assert [f.value for f in t.allergies] == ["sulfa"]
        assert [(f.value, f.recorded_on) for f in t.kidney_function] == [("55", "2026-02-10")]
        assert [f.value for f in t.medications] == ["ramipril"]
        assert "pregnant:8" in [f.value for f in t.pregnancy]
        assert t.episodes[0].outcome == cpb.EPISODE_OUTCOME_ONGOING
        assert t.episodes[2].consultation == "consultations/v2"
        assert {f.kind for f in memory.facts} >= {FactKind.ALLERGY, FactKind.LACTATION}

        async with pool.acquire() as conn:
            raw = await conn.fetchrow("SELECT id_lookup, id_ciphertext, key_id FROM patients")
            dump = await conn.fetchval("SELECT string_agg(t::text, '|') FROM patients t")
            events = await audit.list_events(conn, limit=50, resource=name)
            assert (await audit.verify(conn)).ok
        assert raw is not None
        assert EXTERNAL_ID not in dump and EXTERNAL_ID.encode() not in raw["id_ciphertext"]
        assert raw["key_id"] == "k1"
        actions = [e.action for e in events]
        assert "patient.create" in actions and "patient.read" in actions
        assert all(EXTERNAL_ID not in str(e.payload) for e in events)
        assert await store.load("patients/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12) is None
        assert await store.load("nonsense") is None

        rotated = PostgresPatientStore(
            pool, ring(f"k2:{base64.b64encode(os.urandom(32)).decode()},"), actor="test"
        )
        assert await rotated.reseal_all() == 1
        assert await rotated.resolve(EXTERNAL_ID) == name  # blind index survives rotation
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT key_id FROM patients") == "k2"
            assert isinstance(conn, asyncpg.pool.PoolConnectionProxy | asyncpg.Connection)
