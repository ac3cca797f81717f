"""The human-readable side of a run: a rich table for the terminal and a markdown report with
matplotlib PNG plots where a picture reads faster than numbers (metric bars against the
baseline, the decision confusion matrix, latency distribution).

Plotting is synchronous and CPU-bound: the CLI calls it after the event loop has finished.
Without matplotlib the report is written without plots and says so."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from utimesh.evaluation.record import Delta, RunRecord
from utimesh.evaluation.scoring import METRICS

DECISIONS = ("recommend_treatment", "no_antibiotics", "refer")
BAR_METRICS = (
    "decision_concordance",
    "regimen_concordance",
    "rule_recall",
    "rule_precision",
    "escalation_sensitivity",
    "escalation_specificity",
    "deliberation_agreement_rate",
    "claim_support_rate",
    "citation_faithfulness",
    "qa_accuracy",
    "refusal_correctness",
)


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    unit = METRICS[metric].unit
    if unit == "":
        return f"{value * 100:.1f}%"
    if unit == "n":
        return f"{value:.0f}"
    if unit == "USD":
        return f"${value:.4f}"
    return f"{value:.1f} {unit}" if unit != "tokens" else f"{value:.0f}"


def _change(d: Delta) -> str:
    if d.change is None or d.change == 0:
        return ""
    unit = METRICS[d.metric].unit
    text = f"{d.change * 100:+.1f} pt" if unit == "" else f"{d.change:+.4g}"
    return f"{text} {'(worse)' if d.worse else ''}".strip()


def table(record: RunRecord, deltas: Sequence[Delta] = ()) -> Table:
    """One row per metric, one column per dataset (with the change against the baseline)."""
    t = Table(title=f"utimesh eval {record.run_id} ({record.provider})")
    t.add_column("metric")
    changes = {(d.dataset, d.metric): d for d in deltas}
    for name in record.datasets:
        t.add_column(name, justify="right")
    names = [m for m in METRICS if any(m in d.metrics for d in record.datasets.values())]
    for metric in names:
        cells = []
        for name, result in record.datasets.items():
            if metric not in result.metrics:
                cells.append("")
                continue
            cell = fmt(metric, result.metrics[metric])
            delta = changes.get((name, metric))
            if delta is not None and (extra := _change(delta)):
                cell += f" [{'red' if delta.worse else 'green'}]{extra}[/]"
            cells.append(cell)
        t.add_row(METRICS[metric].label, *cells)
    return t


def _plots(record: RunRecord, baseline: RunRecord | None, out: Path) -> list[tuple[str, str]]:
    """Write the PNGs; returns (title, file name) pairs. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []
    # 1. headline fractions per dataset, against the baseline
    for name, result in record.datasets.items():
        metrics = [m for m in BAR_METRICS if result.metrics.get(m) is not None]
        if not metrics:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(metrics) + 1))
        ys = range(len(metrics))
        ax.barh(
            [y + 0.2 for y in ys], [result.metrics[m] or 0 for m in metrics], 0.4, label="this run"
        )
        before = baseline.datasets.get(name) if baseline else None
        if before is not None:
            ax.barh(
                [y - 0.2 for y in ys],
                [before.metrics.get(m) or 0 for m in metrics],
                0.4,
                label=f"baseline {baseline.run_id if baseline else ''}",
                alpha=0.6,
            )
        ax.set_yticks(list(ys), [METRICS[m].label for m in metrics])
        ax.set_xlim(0, 1.05)
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{name}: quality metrics")
        fig.tight_layout()
        file = f"metrics-{name}.png"
        fig.savefig(out / file, dpi=100)
        plt.close(fig)
        made.append((f"{name}: quality metrics against the baseline", file))
    # 2. decision confusion matrix of each consultations dataset
    for name, result in record.datasets.items():
        if result.kind != "consultations" or not result.verdicts:
            continue
        counts: Counter[tuple[str, str]] = Counter(
            (str(v["expected_decision"]), str(v["decision"]))
            for v in result.verdicts
            if "expected_decision" in v
        )
        got_labels = [*DECISIONS, "error"]
        grid = [[counts[(e, g)] for g in got_labels] for e in DECISIONS]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.imshow(grid, cmap="Blues")
        for i, row in enumerate(grid):
            for j, n in enumerate(row):
                ax.text(j, i, str(n), ha="center", va="center")
        ax.set_xticks(range(len(got_labels)), got_labels, rotation=20, fontsize=8)
        ax.set_yticks(range(len(DECISIONS)), DECISIONS, fontsize=8)
        ax.set_xlabel("system decision")
        ax.set_ylabel("expected decision")
        ax.set_title(f"{name}: decisions")
        fig.tight_layout()
        file = f"decisions-{name}.png"
        fig.savefig(out / file, dpi=100)
        plt.close(fig)
        made.append((f"{name}: expected vs system decision", file))
    # 3. latency distribution
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, result in record.datasets.items():
        values = sorted(float(o["latency_ms"]) for o in result.outcomes if "latency_ms" in o)
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=name)
    ax.set_xlabel("latency per call (ms)")
    ax.set_ylabel("fraction of calls")
    ax.legend(fontsize=8)
    ax.set_title(f"latency (concurrency {record.concurrency})")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
    made.append(("latency, cumulative", "latency.png"))
    return made


def markdown(
    record: RunRecord,
    deltas: Sequence[Delta],
    baseline: RunRecord | None,
    out: Path,
    *,
    plots: bool = True,
) -> Path:
    """Write report.md (and its PNGs) into `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# utimesh evaluation {record.run_id}",
        "",
        f"- provider: **{record.provider}**; models: "
        + ", ".join(f"{a} `{m}`" for a, m in record.models.items()),
        "- rulesets: " + ", ".join(f"{p} `{h[:12]}`" for p, h in record.rulesets.items()),
        f"- evidence corpus: `{record.corpus_version}`; concurrency {record.concurrency}; "
        f"{record.duration_s:.1f} s",
        f"- baseline: {record.baseline or 'none'}",
        "",
    ]
    if record.gate is not None:
        verdict = "PASSED" if record.gate["passed"] else "FAILED"
        lines += [f"## Release gate: {verdict}", ""]
        lines += [f"- {f}" for f in record.gate["failures"]] or ["- every threshold met"]
        lines.append("")
    changes = {(d.dataset, d.metric): d for d in deltas}
    for name, result in record.datasets.items():
        lines += [
            f"## {name} (v{result.version}, {result.size} cases, `{result.content_sha256[:12]}`)",
            "",
            "| metric | value | vs baseline |",
            "|---|---:|---|",
        ]
        for metric, value in result.metrics.items():
            d = changes.get((name, metric))
            lines.append(
                f"| {METRICS[metric].label} | {fmt(metric, value)} | {_change(d) if d else ''} |"
            )
        failed = [v for v in result.verdicts if not v["passed"]]
        if failed:
            lines += ["", "Cases not meeting their expectations:", ""]
            for v in failed:
                gap = " (known gap, not gated)" if v["known_gap"] else ""
                lines.append(f"- `{v['id']}`{gap}: " + "; ".join(v["problems"]))
        lines.append("")
    if plots:
        try:
            made = _plots(record, baseline, out)
        except ImportError:
            lines += [
                "> Plots skipped: matplotlib is not installed (`pip install matplotlib`).",
                "",
            ]
        else:
            lines += ["## Plots", ""]
            lines += [f"![{title}]({file})\n" for title, file in made]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
