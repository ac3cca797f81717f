"""The worker: runs queued consultations, each exactly once in effect.

Three loops share one process: read new messages from the consumer group, reclaim messages a
dead worker left pending (XAUTOCLAIM), and sweep PostgreSQL for jobs that are due but not on the
stream (retries whose time has come, messages Redis lost). A job is:

    lease (PostgreSQL, one holder) -> run the consultation (stored under a name derived from the
    operation, so every attempt writes the same row; memory updated once per consultation)
    -> mark the operation done -> XACK

A crash anywhere before XACK leaves the message pending and the lease running out: another
worker takes it, and the stored consultation or the memory ledger turns the repeated steps into
no-ops. Errors a retry cannot mend (bad input, an unreadable request) dead-letter at once; others
retry with exponential backoff until `max_attempts`, then dead-letter. Nothing here logs patient
data: operation names, codes and reasons only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import grpc

from services.consult.app import ConsultationApp
from services.consult.domain.deliberation import Progress
from services.consult.jobs.store import Lease, OperationStore, operation_uuid
from services.consult.jobs.stream import JobStream, Message
from utimesh.codec.clinical import intake_from_proto
from utimesh.kit.errors import UtimeshError

log = logging.getLogger("utimesh.worker")

DEAD_LETTERED = "DEAD_LETTERED"


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 4
    lease_s: float = 30.0  # renewed every lease_s / 3 while a job runs
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    block_ms: int = 1000
    reclaim_every_s: float = 5.0
    sweep_every_s: float = 2.0
    idle_pause_s: float = 1.0  # after an error talking to Redis or PostgreSQL
    progress_every_s: float = 0.2  # at most one stage write per job per this


class Handled(Enum):
    """What became of one delivery of a job."""

    ENDED = "ended"  # succeeded or dead-lettered here
    RETRY_LATER = "retry_later"  # this attempt failed; the sweep sends it again when due
    NOT_OURS = "not_ours"  # done already, cancelled, or another worker holds it


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str
    message: str
    permanent: bool


def classify(exc: BaseException) -> Failure:
    """What a failed attempt means: a UtimeshError that is not retryable (bad input, unknown
    profile, ...) fails for good; anything else (a service or a store unreachable, a
    deadline, a bug that may be transient) is worth another attempt."""
    if isinstance(exc, UtimeshError):
        return Failure(exc.code, exc.reason, exc.message, permanent=not exc.retryable)
    if isinstance(exc, TimeoutError):
        return Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT", "the attempt timed out", False)
    return Failure(grpc.StatusCode.UNAVAILABLE, "ATTEMPT_FAILED", type(exc).__name__, False)


def backoff_s(attempt: int, config: WorkerConfig, rng: random.Random | None = None) -> float:
    """Exponential backoff with +-20% jitter: base, 2 base, 4 base, ... capped."""
    raw = min(config.backoff_max_s, config.backoff_base_s * float(2 ** max(0, attempt - 1)))
    jitter: float = (rng or random).uniform(0.8, 1.2)
    return raw * jitter


def consultation_name(operation: str) -> str:
    """The consultation a job writes: "consultations/{id}" with the operation's id."""
    op_id = operation_uuid(operation)
    return f"consultations/{op_id or uuid.uuid5(uuid.NAMESPACE_URL, operation)}"


class Worker:
    def __init__(
        self,
        app: ConsultationApp,
        store: OperationStore,
        stream: JobStream,
        config: WorkerConfig = WorkerConfig(),
        consumer: str = "",
    ) -> None:
        self.app = app
        self.store = store
        self.stream = stream
        self.config = config
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.slot_freed = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.completed = 0  # jobs this process finished (succeeded or dead-lettered)

    # --- the loops ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until `stop()`; then waits for jobs in flight (their messages stay pending if cut)."""
        loops = [
            asyncio.create_task(self._read_loop(), name="read"),
            asyncio.create_task(
                self._every(self.config.reclaim_every_s, self._reclaim), name="reclaim"
            ),
            asyncio.create_task(self._every(self.config.sweep_every_s, self._sweep), name="sweep"),
        ]
        try:
            await self.stopping.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def stop(self) -> None:
        self.stopping.set()

    async def drain(self, grace_s: float) -> None:
        """Wait up to `grace_s` for jobs in flight, then cancel them (left pending: reclaimed)."""
        if self.inflight:
            _, late = await asyncio.wait(set(self.inflight), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _read_loop(self) -> None:
        while not self.stopping.is_set():
            free = self._free()
            if free <= 0:  # read only what we can start now
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            try:
                messages = await self.stream.read(self.consumer, free, self.config.block_ms)
            except Exception as exc:  # Redis down: wait and try again
                log.warning("cannot read the job stream", extra={"fields": {"error": repr(exc)}})
                await self._pause()
                continue
            self._spawn(messages)

    def _free(self) -> int:
        return self.config.concurrency - len(self.inflight)

    def _spawn(self, messages: list[Message]) -> None:
        for message in messages:
            task = asyncio.create_task(self._job(message))
            self.inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self.slot_freed.set()

    async def _every(self, period_s: float, step: Callable[[], Awaitable[None]]) -> None:
        while not self.stopping.is_set():
            try:
                await step()
            except Exception as exc:
                log.warning(
                    "job upkeep failed",
                    extra={"fields": {"step": step.__name__, "error": repr(exc)}},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), period_s)

    async def _reclaim(self) -> None:
        free = self._free()
        if free <= 0:
            return
        messages = await self.stream.reclaim(self.consumer, int(self.config.lease_s * 1000), free)
        if messages:
            log.info("reclaimed jobs", extra={"fields": {"count": len(messages)}})
        self._spawn(messages)

    async def _sweep(self) -> None:
        sent = await self.store.sweep(self.stream.send)
        if sent:
            log.info("jobs sent again", extra={"fields": {"count": sent}})

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.config.idle_pause_s)

    # --- one job ------------------------------------------------------------------------------

    async def _job(self, message: Message) -> None:
        """Run one message to a committed outcome, then acknowledge it. Any failure to reach
        PostgreSQL or Redis leaves it pending: it is reclaimed later."""
        op = message.operation
        try:
            outcome = await self.handle(op, message)
            if outcome is Handled.ENDED:
                self.completed += 1
            elif outcome is Handled.NOT_OURS and not await self.store.settled(op):
                return  # another worker holds it: leave the message pending (reclaimed later)
            # ENDED, or RETRY_LATER (the sweep sends the job again when its time comes).
            await self.stream.ack(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("job left pending", extra={"fields": {"operation": op, "error": repr(exc)}})

    async def handle(self, op: str, message: Message | None = None) -> Handled:
        """Take, run and settle operation `op` (delivered as `message`)."""
        lease = await self.store.lease(op, self.consumer, self.config.lease_s)
        if lease is None:
            return Handled.NOT_OURS  # done, cancelled or held by a live worker: a duplicate
        fields = {"operation": op, "attempt": lease.attempts}
        if lease.attempts > lease.max_attempts:  # earlier attempts died with their worker
            why = f"gave up after {lease.max_attempts} attempts (each ended with its worker)"
            if lease.last_error:
                why += f"; last error {lease.last_error}"
            await self._dead_letter(lease, grpc.StatusCode.ABORTED, why)
            return Handled.ENDED
        if lease.request is None:
            await self._dead_letter(
                lease,
                grpc.StatusCode.DATA_LOSS,
                f"the queued request cannot be read ({lease.unreadable})",
            )
            return Handled.ENDED
        log.info("job started", extra={"fields": fields})
        started = time.monotonic()
        heartbeat = asyncio.create_task(self._heartbeat(op, message))
        try:
            consultation = await self._run(lease)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure.permanent or lease.attempts >= lease.max_attempts:
                why = f"{failure.reason}: {failure.message}"
                if not failure.permanent:
                    why = f"gave up after {lease.attempts} attempts; last error {why}"
                await self._dead_letter(lease, failure.code, why)
                return Handled.ENDED
            delay = backoff_s(lease.attempts, self.config)
            await self.store.retry(
                op,
                self.consumer,
                code=failure.code.value[0],
                reason=failure.reason,
                message=failure.message,
                delay_s=delay,
            )
            log.warning(
                "job attempt failed; will retry",
                extra={
                    "fields": {**fields, "reason": failure.reason, "retry_in_s": round(delay, 2)}
                },
            )
            return Handled.RETRY_LATER
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self.store.succeed(op, consultation)
        log.info(
            "job done",
            extra={"fields": {**fields, "ms": round((time.monotonic() - started) * 1000, 1)}},
        )
        return Handled.ENDED

    async def _run(self, lease: Lease) -> str:
        request = lease.request
        assert request is not None
        progress = _Progress(
            lambda stage: self.store.progress(lease.name, self.consumer, stage),
            self.config.progress_every_s,
        )

        async def emit(p: Progress) -> None:
            progress.report(p.step if p.round == 0 else f"{p.step} (round {p.round})")

        limits = self.app.limits
        try:
            consultation = await self.app.run(
                intake_from_proto(request.intake),
                request.profile,
                rounds=request.max_rounds or limits.default_rounds,
                request_id=request.request_id or lease.name,
                budget_s=limits.budget_s,
                emit=emit,
                patient_id=request.patient_id,
                actor=lease.created_by,
                name=consultation_name(lease.name),
                memory_must_update=True,
            )
        finally:
            progress.close()
        return consultation.name

    async def _heartbeat(self, op: str, message: Message | None) -> None:
        """Keep the lease and the message ours while the attempt runs."""
        period = self.config.lease_s / 3
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(Exception):
                await self.store.heartbeat(op, self.consumer, self.config.lease_s)
            if message is not None:
                with contextlib.suppress(Exception):
                    await self.stream.touch(self.consumer, message)

    async def _dead_letter(self, lease: Lease, code: grpc.StatusCode, message: str) -> None:
        if await self.store.dead_letter(
            lease.name, code=code.value[0], reason=DEAD_LETTERED, message=message
        ):
            with contextlib.suppress(Exception):  # the operation row is the record
                await self.stream.dead_letter(lease.name, message, lease.attempts)
            log.error(
                "job dead-lettered",
                extra={
                    "fields": {
                        "operation": lease.name,
                        "attempts": lease.attempts,
                        "code": code.name,
                    }
                },
            )


class _Progress:
    """The stage a job is at, written for GetOperation at most once per `every_s`: a fast
    consultation costs one write, a slow one shows where it waits. The latest stage is written
    late rather than lost; writes are best effort and never slow the job down."""

    def __init__(self, write: Callable[[str], Awaitable[None]], every_s: float) -> None:
        self.write = write
        self.every_s = every_s
        self.latest = self.written = ""
        self.last_write = float("-inf")
        self.pending: asyncio.Task[None] | None = None

    def report(self, stage: str) -> None:
        self.latest = stage
        if self.pending is None or self.pending.done():
            delay = max(0.0, self.last_write + self.every_s - time.monotonic())
            self.pending = asyncio.create_task(self._flush(delay))

    async def _flush(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while self.latest != self.written:
            stage = self.latest
            self.written, self.last_write = stage, time.monotonic()
            with contextlib.suppress(Exception):
                await self.write(stage)
            if self.latest != self.written:  # moved on while we wrote
                await asyncio.sleep(self.every_s)

    def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
