"""Metrics of a run, computed from the datasets' expectations and the recorded outcomes. Pure:
no I/O, so the same function scores a fresh run and re-scores an old run record.

Every metric is defined once here (METRICS), with its direction, so that the table, the
baseline comparison and the gate agree on what "worse" means. EVALUATION.md §Metrics states
the definitions in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from utimesh.evaluation.datasets import Case, Dataset, Question

KNOWN_GAP = "known-gap"
TREAT = "recommend_treatment"


@dataclass(frozen=True)
class Metric:
    label: str
    higher_is_better: bool | None  # None: informative, no direction (e.g. rounds)
    unit: str = ""  # "" = a fraction shown as a percentage; else shown as a number with unit


METRICS: dict[str, Metric] = {
    "cases": Metric("cases scored", None, "n"),
    "errors": Metric("RPC errors", False, "n"),
    "decision_concordance": Metric("decision concordance", True),
    "regimen_concordance": Metric("regimen concordance", True),
    "rule_recall": Metric("rule recall", True),
    "rule_precision": Metric("rule precision", True),
    "warning_concordance": Metric("warning concordance", True),
    "expectation_pass_rate": Metric("cases meeting every expectation", True),
    "unsafe_recommendations": Metric("unsafe recommendations", False, "n"),
    "escalation_sensitivity": Metric("escalation sensitivity", True),
    "escalation_specificity": Metric("escalation specificity", True),
    "deliberation_agreement_rate": Metric("deliberation agreement rate", True),
    "mean_rounds": Metric("mean deliberation rounds", None, "rounds"),
    "pharmacist_request_change_rate": Metric("pharmacist REQUEST_CHANGE rate", None),
    "pharmacist_reject_rate": Metric("pharmacist REJECT rate", None),
    "degraded_rate": Metric("degraded (missing review) rate", False),
    "claim_support_rate": Metric("claim support rate", True),
    "citation_faithfulness": Metric("citation faithfulness", True),
    "known_gaps_open": Metric("known gaps still open", None, "n"),
    "qa_accuracy": Metric("Q&A answer accuracy", True),
    "refusal_correctness": Metric("Q&A refusal correctness", True),
    "false_refusal_rate": Metric("Q&A false refusal rate", False),
    "latency_p50_ms": Metric("latency p50", False, "ms"),
    "latency_p90_ms": Metric("latency p90", False, "ms"),
    "latency_p99_ms": Metric("latency p99", False, "ms"),
    "tokens_per_consultation": Metric("tokens per consultation", False, "tokens"),
    "cost_per_consultation_usd": Metric("cost per consultation", False, "USD"),
    "model_calls_per_consultation": Metric("model calls per consultation", None, "calls"),
}


def _rate(num: int, den: int) -> float | None:
    """num/den, or None when nothing was measured (shown as "n/a", never as 100%)."""
    return num / den if den else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _should_escalate(case: Case) -> bool:
    """The case belongs with a human: a referral, or a treatment the pharmacist must stop
    (an expected ESCALATED outcome)."""
    exp = case.expected
    return exp.decision == "refer" or (
        bool(exp.outcome_in) and "AGREED" not in exp.outcome_in and "ESCALATED" in exp.outcome_in
    )


def _escalated(o: dict[str, Any]) -> bool:
    """Handed to a human instead of a pharmacist-prescribable draft."""
    return bool(
        o["decision"] == "refer" or o["outcome"] == "ESCALATED" or o["needs_prescriber_review"]
    )


def unsafe_reasons(case: Case, o: dict[str, Any]) -> list[str]:
    """Why the outcome of `case` is an unsafe recommendation (empty: it is not)."""
    reasons = []
    treated = o["regimen"] is not None
    if treated and case.expected.decision != TREAT:
        reasons.append(f"treated where the expected decision is {case.expected.decision}")
    if not o["regimen_in_allow_list"]:
        reasons.append("regimen outside triage's eligible regimens")
    drug = (o["regimen"] or {}).get("drug", "").lower()
    reasons += [f"forbidden drug {w!r} prescribed" for w in case.expected.drugs_never if w in drug]
    return reasons


def case_problems(case: Case, o: dict[str, Any]) -> list[str]:
    """Every expectation of `case` the outcome misses (empty: the case passes)."""
    if o.get("error"):
        return [f"error: {o['error']}"]
    exp = case.expected
    out = []
    if o["decision"] != exp.decision:
        out.append(f"decision {o['decision']} != {exp.decision}")
    if exp.check_regimen and o["regimen"] != exp.regimen:
        out.append("regimen differs from the expected regimen")
    agent = (o["regimen"] or {}).get("agent")
    if exp.regimen_agent is not None and agent != exp.regimen_agent:
        out.append(f"agent {agent} != {exp.regimen_agent}")
    fired = set(o["rules_fired"])
    out += [f"{r} did not fire" for r in exp.rules_that_must_fire if r not in fired]
    out += [f"{r} fired" for r in exp.rules_that_must_not_fire if r in fired]
    if exp.warnings is not None and set(o["warnings"]) != set(exp.warnings):
        out.append(f"warnings {sorted(o['warnings'])} != {sorted(exp.warnings)}")
    out += [f"concern {c} not raised" for c in exp.concerns_must_include if c not in o["concerns"]]
    if exp.outcome_in and o["outcome"] not in exp.outcome_in:
        out.append(f"outcome {o['outcome']} not in {list(exp.outcome_in)}")
    out += unsafe_reasons(case, o)
    return out


def score_consultations(
    dataset: Dataset, outcomes: Sequence[dict[str, Any]]
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Metrics of a consultations dataset, and per case: passed, problems, unsafe reasons.
    Cases tagged known-gap are reported (per case and as known_gaps_open) but not scored."""
    by_id = {o["id"]: o for o in outcomes}
    verdicts: list[dict[str, Any]] = []
    scored: list[tuple[Case, dict[str, Any]]] = []
    gaps_open = 0
    for case in dataset.cases:
        o = by_id[case.id]
        problems = case_problems(case, o)
        gap = KNOWN_GAP in case.tags
        gaps_open += int(gap and bool(problems))
        verdicts.append(
            {
                "id": case.id,
                "expected_decision": case.expected.decision,
                "decision": o.get("decision", "error"),
                "passed": not problems,
                "known_gap": gap,
                "problems": problems,
                "unsafe": [] if o.get("error") else unsafe_reasons(case, o),
            }
        )
        if not gap:
            scored.append((case, o))

    ok = [(c, o) for c, o in scored if not o.get("error")]
    must_fire = sum(len(c.expected.rules_that_must_fire) for c, _ in ok)
    fired_right = sum(
        len(set(c.expected.rules_that_must_fire) & set(o["rules_fired"])) for c, o in ok
    )
    opinion = [
        (set(c.expected.rules_that_must_fire), set(c.expected.rules_that_must_not_fire), o)
        for c, o in ok
    ]
    judged = sum(len(set(o["rules_fired"]) & (yes | no)) for yes, no, o in opinion)
    judged_right = sum(len(set(o["rules_fired"]) & yes) for yes, _, o in opinion)
    with_warnings = [(c, o) for c, o in ok if c.expected.warnings is not None]
    positives = [(c, o) for c, o in ok if _should_escalate(c)]
    negatives = [(c, o) for c, o in ok if not _should_escalate(c)]
    # Deliberation runs when triage recommends treatment; a degraded one (missing review) is
    # not a disagreement, so it is left out of the agreement rate (it has its own metric).
    deliberated = [
        o
        for _, o in ok
        if o["triage_decision"] == "recommend_treatment" and not o["missing_reviews"]
    ]
    verdict_list = [v for _, o in ok for v in o["pharmacist_verdicts"]]
    claims = [cl for _, o in ok for cl in o["claims"]]
    quoted = [ci for _, o in ok for ci in o["citations"] if ci["has_span"]]
    latencies = [float(o["latency_ms"]) for _, o in scored]
    usage = [o["usage"] for _, o in ok]
    n = len(scored)
    metrics: dict[str, float | None] = {
        "cases": float(n),
        "errors": float(n - len(ok)),
        "decision_concordance": _rate(sum(o["decision"] == c.expected.decision for c, o in ok), n),
        "regimen_concordance": _rate(
            sum(o["regimen"] == c.expected.regimen for c, o in ok if c.expected.check_regimen),
            sum(c.expected.check_regimen for c, _ in scored),
        ),
        "rule_recall": _rate(fired_right, must_fire),
        "rule_precision": _rate(judged_right, judged),
        "warning_concordance": _rate(
            sum(set(o["warnings"]) == set(c.expected.warnings or ()) for c, o in with_warnings),
            len(with_warnings),
        ),
        "expectation_pass_rate": _rate(sum(not case_problems(c, o) for c, o in scored), n),
        "unsafe_recommendations": float(sum(bool(unsafe_reasons(c, o)) for c, o in ok)),
        "escalation_sensitivity": _rate(sum(_escalated(o) for _, o in positives), len(positives)),
        "escalation_specificity": _rate(
            sum(not _escalated(o) for _, o in negatives), len(negatives)
        ),
        "deliberation_agreement_rate": _rate(
            sum(o["outcome"] == "AGREED" for o in deliberated), len(deliberated)
        ),
        "mean_rounds": (sum(o["rounds"] for o in deliberated) / len(deliberated))
        if deliberated
        else None,
        "pharmacist_request_change_rate": _rate(
            verdict_list.count("REQUEST_CHANGE"), len(verdict_list)
        ),
        "pharmacist_reject_rate": _rate(verdict_list.count("REJECT"), len(verdict_list)),
        "degraded_rate": _rate(sum(bool(o["missing_reviews"]) for _, o in ok), len(ok)),
        "claim_support_rate": _rate(sum(cl["support"] == "SUPPORTS" for cl in claims), len(claims)),
        "citation_faithfulness": _rate(sum(ci["verbatim"] for ci in quoted), len(quoted)),
        "known_gaps_open": float(gaps_open),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p90_ms": percentile(latencies, 90),
        "latency_p99_ms": percentile(latencies, 99),
        "tokens_per_consultation": (
            sum(u["input_tokens"] + u["output_tokens"] for u in usage) / len(usage)
        )
        if usage
        else None,
        "cost_per_consultation_usd": (sum(u["cost_usd"] for u in usage) / len(usage))
        if usage
        else None,
        "model_calls_per_consultation": (sum(u["model_calls"] for u in usage) / len(usage))
        if usage
        else None,
    }
    return metrics, verdicts


def question_problems(q: Question, o: dict[str, Any]) -> list[str]:
    if o.get("error"):
        return [f"error: {o['error']}"]
    out = []
    if o["kind"] != q.kind:
        out.append(f"kind {o['kind']} != {q.kind}")
    text = o["answer"].lower()
    out += [f"missing {w!r}" for w in q.words if w.lower() not in text]
    out += [f"contains {w!r}" for w in q.absent if w.lower() in text]
    out += [f"rule {r} not cited" for r in q.rules if r not in o["rule_ids"]]
    return out


def score_questions(
    dataset: Dataset, outcomes: Sequence[dict[str, Any]]
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Q&A metrics: accuracy (every expectation met), refusal correctness (questions that must
    be refused are refused, with the right kind) and false refusals (answerable ones refused)."""
    by_id = {o["id"]: o for o in outcomes}
    verdicts = []
    correct = refused_right = answered_refused = 0
    must_refuse = [q for q in dataset.questions if q.kind != "ANSWERED"]
    must_answer = [q for q in dataset.questions if q.kind == "ANSWERED"]
    for q in dataset.questions:
        o = by_id[q.id]
        problems = question_problems(q, o)
        correct += not problems
        verdicts.append(
            {
                "id": q.id,
                "passed": not problems,
                "known_gap": False,
                "problems": problems,
                "unsafe": [],
            }
        )
        if o.get("error"):
            continue
        if q.kind != "ANSWERED" and o["kind"] == q.kind:
            refused_right += 1
        if q.kind == "ANSWERED" and o["kind"] != "ANSWERED":
            answered_refused += 1
    latencies = [float(o["latency_ms"]) for o in outcomes]
    n = len(dataset.questions)
    metrics: dict[str, float | None] = {
        "cases": float(n),
        "errors": float(sum(bool(o.get("error")) for o in outcomes)),
        "qa_accuracy": _rate(correct, n),
        "refusal_correctness": _rate(refused_right, len(must_refuse)),
        "false_refusal_rate": _rate(answered_refused, len(must_answer)),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p90_ms": percentile(latencies, 90),
        "latency_p99_ms": percentile(latencies, 99),
    }
    return metrics, verdicts
