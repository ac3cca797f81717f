"""The Redis stream that delivers queued consultations to workers (a consumer group).

A message carries an operation name and nothing else: no request, no patient data (those stay
sealed in PostgreSQL). Delivery is at least once: a message is acknowledged (and deleted) only
after the worker has committed the outcome in PostgreSQL; one left pending by a dead worker is
taken over with XAUTOCLAIM once it has been idle for longer than a lease."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM = "utimesh:jobs:consultations"
DEAD_LETTERS = "utimesh:jobs:consultations:dead"
GROUP = "workers"
MAX_LENGTH = 100_000  # approximate trim: a guard against a runaway producer, not a queue limit


@dataclass(frozen=True)
class Message:
    id: str
    operation: str


def _messages(entries: list[tuple[bytes, dict[bytes, bytes]]] | None) -> list[Message]:
    out = []
    for entry_id, fields in entries or ():
        if fields:  # XAUTOCLAIM can return deleted entries with no fields
            out.append(Message(entry_id.decode(), fields.get(b"op", b"").decode()))
    return out


class JobStream:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str = STREAM,
        group: str = GROUP,
        dead_letters: str = DEAD_LETTERS,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.dead_letters = dead_letters

    async def ensure_group(self) -> None:
        """Create the stream and its group when missing (after a Redis that lost its data)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def send(self, operation: str) -> None:
        await self.redis.xadd(self.stream, {"op": operation}, maxlen=MAX_LENGTH, approximate=True)

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Message]:
        """New messages for `consumer`; recreates the group when Redis lost it."""
        try:
            reply = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        streams: Any = reply or []  # [[stream, [(id, fields), ...]], ...] in RESP2
        return [m for _, entries in streams for m in _messages(entries)]

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Message]:
        """Messages another consumer left pending for at least `min_idle_ms` (it died)."""
        try:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_time=min_idle_ms, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        claimed: Any = reply  # [next cursor, [(id, fields), ...], [deleted ids]]
        return _messages(claimed[1])

    async def touch(self, consumer: str, message: Message) -> None:
        """Reset the message's idle time (we are still working on it): not reclaimed."""
        await self.redis.xclaim(self.stream, self.group, consumer, 0, [message.id], justid=True)

    async def ack(self, message: Message) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, message.id)
            pipe.xdel(self.stream, message.id)
            await pipe.execute()

    async def dead_letter(self, operation: str, reason: str, attempts: int) -> None:
        """Keep a trace for operators (`XRANGE utimesh:jobs:consultations:dead - +`); the
        operation in PostgreSQL is the record that matters."""
        await self.redis.xadd(
            self.dead_letters,
            {"op": operation, "reason": reason, "attempts": str(attempts)},
            maxlen=10_000,
            approximate=True,
        )
