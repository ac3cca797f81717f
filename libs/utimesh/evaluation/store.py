"""Postgres side of evaluation: run records (eval_runs), clinicians' reviews
(consultation_reviews, written by consult's SubmitReview) and their adjudications
(eval_adjudications). Tables from migration 0005_evaluation.sql."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import Conn
from utimesh.evaluation.record import RunRecord

VERDICTS = ("system_correct", "system_wrong", "inconclusive")


async def save_run(conn: Conn, record: RunRecord) -> None:
    """Insert (or replace) one run record."""
    gate = None if record.gate is None else bool(record.gate.get("passed"))
    await conn.execute(
        "INSERT INTO eval_runs (run_id, started_at, finished_at, provider, datasets, gate_passed,"
        " summary, record) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)"
        " ON CONFLICT (run_id) DO UPDATE SET gate_passed = EXCLUDED.gate_passed,"
        " summary = EXCLUDED.summary, record = EXCLUDED.record",
        record.run_id,
        datetime.fromisoformat(record.started_at),
        datetime.fromisoformat(record.finished_at),
        record.provider,
        list(record.datasets),
        gate,
        json.dumps(record.summary()),
        record.model_dump_json(),
    )


async def load_run(conn: Conn, run_id: str) -> RunRecord | None:
    text = await conn.fetchval("SELECT record::text FROM eval_runs WHERE run_id = $1", run_id)
    return None if text is None else RunRecord.model_validate_json(text)


async def latest_run(conn: Conn, *, provider: str, exclude: str = "") -> RunRecord | None:
    """The newest stored run of `provider` other than `exclude` (the previous run)."""
    text = await conn.fetchval(
        "SELECT record::text FROM eval_runs WHERE provider = $1 AND run_id <> $2"
        " ORDER BY started_at DESC, run_id DESC LIMIT 1",
        provider,
        exclude,
    )
    return None if text is None else RunRecord.model_validate_json(text)


@dataclass(frozen=True)
class ReviewRow:
    """One clinician review with its adjudication verdict ('' = not adjudicated)."""

    name: str
    consultation: str
    reviewer_role: str
    agrees_with_decision: bool
    agrees_with_plan: bool
    error_categories: tuple[str, ...]
    created_at: datetime
    verdict: str
    promoted_case: str


async def fetch_reviews(conn: Conn, *, since: datetime | None = None) -> list[ReviewRow]:
    """Every review (oldest first), without comments (free text stays in the table)."""
    rows = await conn.fetch(
        "SELECT r.name, c.name AS consultation, r.reviewer_role, r.agrees_with_decision,"
        " r.agrees_with_plan, r.error_categories, r.created_at,"
        " coalesce(a.verdict, '') AS verdict, coalesce(a.regression_case_id, '') AS promoted"
        " FROM consultation_reviews r JOIN consultations c ON c.id = r.consultation_id"
        " LEFT JOIN eval_adjudications a ON a.review_name = r.name"
        " WHERE $1::timestamptz IS NULL OR r.created_at >= $1"
        " ORDER BY r.created_at, r.name",
        since,
    )
    return [
        ReviewRow(
            r["name"],
            r["consultation"],
            r["reviewer_role"],
            r["agrees_with_decision"],
            r["agrees_with_plan"],
            tuple(r["error_categories"]),
            r["created_at"],
            r["verdict"],
            r["promoted"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Adjudication:
    review_name: str
    verdict: str
    expected_decision: str
    expected_agent: str
    error_categories: tuple[str, ...]
    note: str
    adjudicator: str
    adjudicated_at: datetime | None = None
    regression_case_id: str = ""


class NotFound(LookupError):
    """No such review, consultation or adjudication."""


async def adjudicate(conn: Conn, a: Adjudication) -> Adjudication:
    """Record (or replace, until promoted) the adjudication of a review."""
    exists = await conn.fetchval(
        "SELECT 1 FROM consultation_reviews WHERE name = $1", a.review_name
    )
    if exists is None:
        raise NotFound(f"no review {a.review_name}")
    row = await conn.fetchrow(
        "INSERT INTO eval_adjudications (review_name, verdict, expected_decision,"
        " expected_agent, error_categories, note, adjudicator) VALUES ($1,$2,$3,$4,$5,$6,$7)"
        " ON CONFLICT (review_name) DO UPDATE SET verdict = EXCLUDED.verdict,"
        " expected_decision = EXCLUDED.expected_decision,"
        " expected_agent = EXCLUDED.expected_agent,"
        " error_categories = EXCLUDED.error_categories, note = EXCLUDED.note,"
        " adjudicator = EXCLUDED.adjudicator, adjudicated_at = now()"
        " WHERE eval_adjudications.regression_case_id = ''"
        " RETURNING adjudicated_at",
        a.review_name,
        a.verdict,
        a.expected_decision,
        a.expected_agent,
        list(a.error_categories),
        a.note,
        a.adjudicator,
    )
    if row is None:
        raise ValueError(f"{a.review_name} was already promoted to a regression case")
    return Adjudication(**{**a.__dict__, "adjudicated_at": row["adjudicated_at"]})


async def load_adjudication(conn: Conn, review_name: str) -> Adjudication:
    r = await conn.fetchrow("SELECT * FROM eval_adjudications WHERE review_name = $1", review_name)
    if r is None:
        raise NotFound(f"{review_name} is not adjudicated: run `utimesh eval adjudicate` first")
    return Adjudication(
        r["review_name"],
        r["verdict"],
        r["expected_decision"],
        r["expected_agent"],
        tuple(r["error_categories"]),
        r["note"],
        r["adjudicator"],
        r["adjudicated_at"],
        r["regression_case_id"],
    )


async def reviewed_consultation(conn: Conn, review_name: str) -> tuple[str, cpb.Consultation]:
    """The reviewer's role and the consultation a review is about (its stored record)."""
    r = await conn.fetchrow(
        "SELECT r.reviewer_role, c.record FROM consultation_reviews r"
        " JOIN consultations c ON c.id = r.consultation_id WHERE r.name = $1",
        review_name,
    )
    if r is None:
        raise NotFound(f"no review {review_name}")
    return r["reviewer_role"], cpb.Consultation.FromString(r["record"])


async def mark_promoted(conn: Conn, review_name: str, case_id: str) -> None:
    await conn.execute(
        "UPDATE eval_adjudications SET regression_case_id = $2, promoted_at = now()"
        " WHERE review_name = $1",
        review_name,
        case_id,
    )


@dataclass(frozen=True)
class ConsultationRow:
    """What sampling needs to know of a stored consultation (no patient data)."""

    name: str
    profile: str
    decision: str
    outcome: str
    status: str
    needs_prescriber_review: bool
    reviews: int


async def recent_consultations(conn: Conn, since: datetime) -> list[ConsultationRow]:
    rows = await conn.fetch(
        "SELECT c.name, c.profile, c.decision, c.outcome, c.status, c.needs_prescriber_review,"
        " (SELECT count(*) FROM consultation_reviews r WHERE r.consultation_id = c.id) AS n"
        " FROM consultations c WHERE c.created_at >= $1 ORDER BY c.created_at, c.name",
        since,
    )
    return [
        ConsultationRow(
            r["name"],
            r["profile"],
            r["decision"],
            r["outcome"],
            r["status"],
            r["needs_prescriber_review"],
            int(r["n"]),
        )
        for r in rows
    ]
