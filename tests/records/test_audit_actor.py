"""The audit trail names the caller (the JWT subject the edge forwards), not the service, for
consultation creates and reads: in-process mesh (memory store) and the Postgres store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.consult.adapters.pg_store import PostgresConsultationStore
from tests.consult.mesh import Mesh, running_mesh
from tests.data.test_pg_store import make_consultation
from tests.records.support import AUDITOR, as_user, create
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db.pool import Pool
from utimesh.rules import Knowledge, TriageEngine

ALICE = as_user("dr-alice", "clinician")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


async def events_of(mesh: Mesh, name: str) -> list[tuple[str, str]]:
    listed = await mesh.consult.ListAuditEvents(
        cpb.ListAuditEventsRequest(resource=name), metadata=AUDITOR, timeout=5
    )
    return [(e.action, e.actor) for e in listed.events]


@pytest.mark.asyncio(loop_scope="module")
async def test_create_is_audited_as_the_caller(mesh: Mesh) -> None:
    c = (await mesh.consult.CreateConsultation(create(), metadata=ALICE, timeout=20)).consultation
    assert await events_of(mesh, c.name) == [("consultation.create", "dr-alice")]


@pytest.mark.asyncio(loop_scope="module")
async def test_create_without_identity_is_audited_as_the_service(mesh: Mesh) -> None:
    c = (await mesh.consult.CreateConsultation(create(), timeout=20)).consultation
    assert await events_of(mesh, c.name) == [("consultation.create", "consult")]


@pytest.mark.asyncio
async def test_postgres_store_audits_create_and_read_as_the_actor(
    pool: Pool, engine: TriageEngine
) -> None:
    store = PostgresConsultationStore(pool)
    c = make_consultation(engine, request_id="req-audit-actor")
    await store.put(c, actor="dr-alice")
    assert await store.get(c.name, actor="dr-bob") == c
    assert await store.get(c.name) == c
    assert await store.get_by_request_id(c.request_id, actor="dr-carol") == c
    events = await store.list_audit_events(limit=10, resource=c.name)
    assert [(e.action, e.actor) for e in events] == [
        ("consultation.read", "dr-carol"),
        ("consultation.read", "consult"),
        ("consultation.read", "dr-bob"),
        ("consultation.create", "dr-alice"),
    ]
