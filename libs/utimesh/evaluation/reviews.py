"""The reviewer loop: what clinicians' reviews say (agreement by reviewer role, error
categories over time), which reviews wait for adjudication, and turning an adjudicated review
into a permanent regression case. Pure functions over rows from store.py."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_from_proto, regimen_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evaluation.datasets import Case, Dataset
from utimesh.evaluation.store import Adjudication, ConsultationRow, ReviewRow
from utimesh.evaluation.taxonomy import SAFETY, TAXONOMY
from utimesh.rules.jsonview import intake_to_json, regimen_to_json

DECISIONS = ("recommend_treatment", "no_antibiotics", "refer")
AGENTS = ("NIT", "SXT", "TMP", "FOS")


@dataclass(frozen=True)
class RoleAgreement:
    role: str
    reviews: int
    decision_agreement: float
    plan_agreement: float


def agreement_by_role(rows: Sequence[ReviewRow]) -> list[RoleAgreement]:
    by_role: dict[str, list[ReviewRow]] = defaultdict(list)
    for r in rows:
        by_role[r.reviewer_role].append(r)
    return [
        RoleAgreement(
            role,
            len(rs),
            sum(r.agrees_with_decision for r in rs) / len(rs),
            sum(r.agrees_with_plan for r in rs) / len(rs),
        )
        for role, rs in sorted(by_role.items())
    ]


def categories_by_week(rows: Sequence[ReviewRow]) -> dict[str, Counter[str]]:
    """ISO week ("2026-W48") -> category -> count; unknown categories as "other:<name>"."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        year, week, _ = r.created_at.isocalendar()
        for cat in r.error_categories:
            out[f"{year}-W{week:02d}"][cat if cat in TAXONOMY else f"other:{cat}"] += 1
    return dict(sorted(out.items()))


def adjudication_queue(rows: Sequence[ReviewRow]) -> list[tuple[ReviewRow, str]]:
    """Reviews awaiting adjudication, with why: the reviewer disagreed with the decision or the
    plan, or reviewers of one consultation disagree with each other. Safety categories first,
    then oldest first."""
    by_consultation: dict[str, set[tuple[bool, bool]]] = defaultdict(set)
    for r in rows:
        by_consultation[r.consultation].add((r.agrees_with_decision, r.agrees_with_plan))
    queue = []
    for r in rows:
        if r.verdict:
            continue
        if not r.agrees_with_decision:
            why = "disagrees with the decision"
        elif not r.agrees_with_plan:
            why = "disagrees with the plan"
        elif len(by_consultation[r.consultation]) > 1:
            why = "reviewers of this consultation disagree"
        else:
            continue
        queue.append((r, why))
    return sorted(queue, key=lambda q: (not (set(q[0].error_categories) & SAFETY), q[0].created_at))


def regression_case(
    case_id: str,
    reviewer_role: str,
    consultation: cpb.Consultation,
    adjudication: Adjudication,
) -> Case:
    """The regression case an adjudicated review becomes: the consultation's intake (no
    identifiers: the intake holds none), the outcome the adjudicator says it must have, and
    provenance naming the review, the adjudicator and the date."""
    if adjudication.verdict == "inconclusive":
        raise ValueError("an inconclusive adjudication cannot become a regression case")
    if adjudication.verdict == "system_correct":
        decision = cpb_decision(consultation)
        agent = (
            regimen_to_json(regimen_from_proto(consultation.regimen))["agent"]
            if consultation.HasField("regimen")
            else None
        )
    else:
        decision = adjudication.expected_decision
        agent = adjudication.expected_agent or None
    if decision not in DECISIONS:
        raise ValueError(f"the adjudication names no expected decision ({decision!r})")
    when = adjudication.adjudicated_at
    provenance = {
        "source": "review",
        "review": adjudication.review_name,
        "consultation": consultation.name,
        "reviewer_role": reviewer_role,
        "verdict": adjudication.verdict,
        "adjudicator": adjudication.adjudicator,
        "adjudicated_on": when.date().isoformat() if when else "",
        "error_categories": ",".join(adjudication.error_categories),
        "ruleset_hash": consultation.triage.ruleset_hash,
    }
    patient: dict[str, Any] = intake_to_json(intake_from_proto(consultation.intake))
    expected: dict[str, Any] = {
        "decision": decision,
        "regimen": None,
        "check_regimen": False,
        "regimen_agent": agent if decision == "recommend_treatment" else None,
    }
    if decision != "recommend_treatment":
        expected["rules_that_must_not_fire"] = [f"RX-SEL-{a}" for a in AGENTS]
    return Case.model_validate(
        {
            "id": case_id,
            "version": 1,
            "provenance": provenance,
            "description": f"From review {adjudication.review_name} ({adjudication.verdict})",
            "tags": ["regression", adjudication.verdict, *adjudication.error_categories],
            "profile": consultation.triage.profile,
            "patient": patient,
            "expected": expected,
        }
    )


def cpb_decision(c: cpb.Consultation) -> str:
    return pb.Decision.Name(c.decision).removeprefix("DECISION_").lower()


def next_case_id(dataset: Dataset) -> str:
    numbers = [int(c.id.removeprefix("REG-")) for c in dataset.cases if c.id.startswith("REG-")]
    return f"REG-{max(numbers, default=0) + 1:04d}"


def appended(dataset: Dataset, case: Case) -> Dataset:
    """`dataset` with `case` appended and its version bumped (the file is append-only)."""
    if any(c.provenance.get("review") == case.provenance["review"] for c in dataset.cases):
        raise ValueError(f"review {case.provenance['review']} is already a regression case")
    return dataset.model_copy(
        update={"cases": (*dataset.cases, case), "version": dataset.version + 1}
    )


#: Consultations always sent for review: a human was needed or overrode the system.
ALWAYS_REVIEW_OUTCOMES = frozenset({"OUTCOME_ESCALATED", "OUTCOME_UNREVIEWED"})
ALWAYS_REVIEW_STATUSES = frozenset({"amended", "rejected"})


def sample_for_review(
    rows: Sequence[ConsultationRow], rate: float
) -> list[tuple[ConsultationRow, str]]:
    """Which consultations to send to reviewers, and why: every escalated, degraded, amended or
    rejected one, and a `rate` share of the rest chosen by a hash of the name (deterministic:
    the same consultation is always in or out, whoever runs the sampler). Consultations that
    already have a review are skipped."""
    out = []
    for row in rows:
        if row.reviews:
            continue
        if row.outcome in ALWAYS_REVIEW_OUTCOMES or row.needs_prescriber_review:
            out.append((row, f"outcome {row.outcome.removeprefix('OUTCOME_').lower()}"))
        elif row.status in ALWAYS_REVIEW_STATUSES:
            out.append((row, f"sign-off {row.status.lower()}"))
        elif _unit(row.name) < rate:
            out.append((row, f"random {rate:.0%}"))
    return out


def _unit(name: str) -> float:
    """A stable number in [0, 1) from a consultation's name."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
