"""The hash-chained audit log against a real PostgreSQL: appends chain strictly in order (also
under concurrency), the chain verifies, and any tampering is caught AT the tampered event."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from utimesh.db import audit
from utimesh.db.audit import GENESIS_HASH, AuditEvent
from utimesh.db.pool import Pool

N = 5


@pytest.fixture
async def fresh_pool(pool: Pool) -> Pool:
    """The module database's pool with an empty audit chain: these tests break it on purpose."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # past the triggers
        await conn.execute("TRUNCATE audit_events")
        await conn.execute(
            "UPDATE audit_chain_head SET seq = 0, hash = $1 WHERE singleton", GENESIS_HASH
        )
    return pool


async def _append_n(pool: Pool, n: int = N) -> list[AuditEvent]:
    events = []
    async with pool.acquire() as conn:
        for i in range(n):
            events.append(
                await audit.append(
                    conn,
                    actor="consult",
                    action="consultation.read",
                    resource=f"consultations/{i}",
                    request_id=f"req-{i}",
                    payload={"consultation_id": str(uuid.uuid4()), "n": i},
                )
            )
    return events


async def _verify(pool: Pool) -> audit.VerifyResult:
    async with pool.acquire() as conn:
        return await audit.verify(conn)


async def _as_superuser_bypassing_triggers(pool: Pool, sql: str, *args: object) -> None:
    """Tamper like a privileged attacker: the append-only triggers do not fire in replica mode."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


def test_canonical_form_and_hash_are_stable() -> None:
    event = AuditEvent(
        seq=1,
        id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        at=datetime(2026, 3, 1, 10, 15, 30, 123456, tzinfo=UTC),
        actor="consult",
        action="consultation.create",
        resource="consultations/x",
        request_id="r-1",
        payload={"consultation_id": "abc", "n": 3, "ok": True, "none": None, "ids": ["a", "é"]},
        prev_hash=GENESIS_HASH,
        hash="",
    )
    canonical = (
        '{"action":"consultation.create","actor":"consult","at":"2026-03-01T10:15:30.123456+00:00",'
        '"id":"00000000-0000-4000-8000-000000000001","payload":{"consultation_id":"abc",'
        '"ids":["a","é"],"n":3,"none":null,"ok":true},"request_id":"r-1",'
        '"resource":"consultations/x","seq":1,"v":1}'
    )
    assert event.canonical() == canonical
    digest = hashlib.sha256((GENESIS_HASH + canonical).encode()).hexdigest()
    assert event.expected_hash() == digest
    # Pinned: changing the canonical form silently would invalidate every stored chain.
    assert digest == "4e2094d63efea6630a706e2d22fe0027a1c0a97fd3ad6d02c2acf81bbbe7d87f"


async def test_empty_chain_verifies(fresh_pool: Pool) -> None:
    result = await _verify(fresh_pool)
    assert result == audit.VerifyResult(ok=True, checked=0, head_seq=0)


async def test_appends_chain_in_order_and_verify(fresh_pool: Pool) -> None:
    events = await _append_n(fresh_pool)
    assert [e.seq for e in events] == list(range(1, N + 1))
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
        assert after.at >= before.at
    assert all(e.hash == e.expected_hash() for e in events)
    async with fresh_pool.acquire() as conn:
        stored = list(reversed(await audit.list_events(conn, limit=N)))
    assert stored == events
    result = await _verify(fresh_pool)
    assert result.ok, result.reason
    assert (result.checked, result.head_seq) == (N, N)


async def test_concurrent_appends_stay_one_gapless_chain(fresh_pool: Pool) -> None:
    async def one(i: int) -> AuditEvent:
        async with fresh_pool.acquire() as conn:
            return await audit.append(conn, "consult", "consultation.read", f"consultations/{i}")

    events = await asyncio.gather(*(one(i) for i in range(30)))
    assert sorted(e.seq for e in events) == list(range(1, 31))
    result = await _verify(fresh_pool)
    assert result.ok, result.reason
    assert result.checked == 30


async def test_a_rolled_back_append_leaves_no_trace(fresh_pool: Pool) -> None:
    await _append_n(fresh_pool, 2)
    async with fresh_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await audit.append(conn, "consult", "consultation.create", "consultations/x")
        await tx.rollback()  # the caller's work failed
        event = await audit.append(conn, "consult", "consultation.create", "consultations/y")
    assert event.seq == 3
    assert (await _verify(fresh_pool)).ok


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_events SET payload = '{}'::jsonb WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 1",
        "TRUNCATE audit_events",
    ],
)
async def test_the_table_is_append_only(fresh_pool: Pool, sql: str) -> None:
    await _append_n(fresh_pool, 1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await fresh_pool.execute(sql)
    assert (await _verify(fresh_pool)).ok


TAMPERING: dict[str, Callable[[Pool, int], Awaitable[None]]] = {
    "payload changed": lambda pool, seq: _as_superuser_bypassing_triggers(
        pool,
        "UPDATE audit_events SET payload = jsonb_set(payload, '{n}', '99') WHERE seq = $1",
        seq,
    ),
    "actor changed": lambda pool, seq: _as_superuser_bypassing_triggers(
        pool, "UPDATE audit_events SET actor = 'someone-else' WHERE seq = $1", seq
    ),
    "time changed": lambda pool, seq: _as_superuser_bypassing_triggers(
        pool, "UPDATE audit_events SET at = at - interval '1 day' WHERE seq = $1", seq
    ),
    "row deleted": lambda pool, seq: _as_superuser_bypassing_triggers(
        pool, "DELETE FROM audit_events WHERE seq = $1", seq
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
@pytest.mark.parametrize("seq", [1, 3, N])
async def test_tampering_is_caught_at_that_event(fresh_pool: Pool, kind: str, seq: int) -> None:
    await _append_n(fresh_pool)
    await TAMPERING[kind](fresh_pool, seq)
    result = await _verify(fresh_pool)
    assert not result.ok
    assert result.first_broken_seq == seq, result.reason
    assert result.checked == seq - 1
    expected = "missing" if kind == "row deleted" else "altered"
    assert expected in result.reason


async def test_a_rehashed_event_breaks_the_next_link(fresh_pool: Pool) -> None:
    events = await _append_n(fresh_pool)
    # The attacker alters event 2 and recomputes its own hash consistently ...
    forged = replace(events[1], actor="someone-else", hash="")
    await _as_superuser_bypassing_triggers(
        fresh_pool,
        "UPDATE audit_events SET actor = $1, hash = $2 WHERE seq = 2",
        forged.actor,
        forged.expected_hash(),
    )
    # ... but event 3 still points at the old hash.
    result = await _verify(fresh_pool)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "prev_hash" in result.reason


async def test_an_event_inserted_behind_the_logs_back_is_caught(fresh_pool: Pool) -> None:
    events = await _append_n(fresh_pool, 2)
    last = events[-1]
    forged = replace(last, seq=3, id=uuid.uuid4(), prev_hash=last.hash, hash="")
    await fresh_pool.execute(
        "INSERT INTO audit_events (seq, id, at, actor, action, resource, request_id, payload,"
        " prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)",
        forged.seq,
        forged.id,
        forged.at,
        forged.actor,
        forged.action,
        forged.resource,
        forged.request_id,
        audit.canonical_json(forged.payload),
        forged.prev_hash,
        forged.expected_hash(),
    )
    result = await _verify(fresh_pool)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "beyond the chain head" in result.reason


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"ratio": 0.5}, "float is not allowed"),
        ({"bad": "a\x00b"}, "NUL"),
        ({"ids": ["x" * 5000]}, "larger than"),
        ({"nested": {1: "x"}}, "keys must be strings"),
    ],
)
async def test_payloads_hold_ids_only(
    fresh_pool: Pool, payload: dict[str, object], message: str
) -> None:
    async with fresh_pool.acquire() as conn:
        with pytest.raises(ValueError, match=message):
            await audit.append(conn, "consult", "x", "r", payload=payload)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="actor must not be empty"):
            await audit.append(conn, "", "x", "r")
    assert (await _verify(fresh_pool)).checked == 0


async def test_list_filters_by_resource(fresh_pool: Pool) -> None:
    await _append_n(fresh_pool, 3)
    async with fresh_pool.acquire() as conn:
        only = await audit.list_events(conn, limit=10, resource="consultations/1")
        latest = await audit.list_events(conn, limit=2)
    assert [e.resource for e in only] == ["consultations/1"]
    assert [e.seq for e in latest] == [3, 2]


async def test_verify_inside_a_callers_transaction(fresh_pool: Pool) -> None:
    await _append_n(fresh_pool, 2)
    async with fresh_pool.acquire() as conn, conn.transaction():
        await audit.append(conn, "consult", "consultation.read", "consultations/z")
        result = await audit.verify(conn)  # sees the caller's uncommitted event
    assert (result.ok, result.checked) == (True, 3)
