"""`utimesh eval`: run the evaluation datasets through the in-process mesh, print and store the
run record, compare it with a baseline and gate a release on it; and the reviewer loop
(`reviews`, `adjudicate`, `promote`, `sample`) over clinicians' reviews in Postgres.

Exit codes of a run: 0 done (and the gate passed, with --gate), 1 the gate failed, 2 bad usage
or configuration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from utimesh.db.pool import on_connection, redact_dsn
from utimesh.evaluation import build, gate, report, reviews, store
from utimesh.evaluation.datasets import NAMES, Dataset, dataset_path, load_dataset, write_dataset
from utimesh.evaluation.record import RunRecord, compare
from utimesh.evaluation.taxonomy import TAXONOMY
from utimesh.llm import ConfigError
from utimesh.rules import load_knowledge

_T = TypeVar("_T")
DEFAULT_OUT = Path(".state/eval")
DEFAULT_DATASETS = ("gold", "adversarial", "regression", "qa")

_DB_OPT = click.option(
    "--database-url",
    envvar="UTIMESH_DATABASE_URL",
    default=None,
    help="PostgreSQL URL (env UTIMESH_DATABASE_URL).",
)


class _Bar:
    """rich progress bars, one per dataset, on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def start(self, dataset: str, total: int) -> None:
        self.tasks[dataset] = self.progress.add_task(dataset, total=total)

    def advance(self, dataset: str) -> None:
        self.progress.advance(self.tasks[dataset])


def _db(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
    try:
        return asyncio.run(on_connection(dsn, "utimesh-eval", work))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise click.ClickException(
            f"database {redact_dsn(dsn)}: {type(exc).__name__}: {exc}"
        ) from None


def _need_db(database_url: str | None) -> str:
    if not database_url:
        raise click.UsageError("set UTIMESH_DATABASE_URL or pass --database-url")
    return database_url


def _records_newest_first(out: Path, provider: str, exclude: str) -> RunRecord | None:
    if not out.is_dir():
        return None
    for run_dir in sorted((p for p in out.iterdir() if p.is_dir()), reverse=True):
        if run_dir.name == exclude or not (run_dir / "run.json").exists():
            continue
        record = RunRecord.read(run_dir)
        if record.provider == provider:
            return record
    return None


def _baseline(spec: str | None, out: Path, record: RunRecord, dsn: str | None) -> RunRecord | None:
    """--baseline PATH | RUN_ID | none; default: the previous run of the same provider (the
    output directory first, then Postgres)."""
    if spec == "none":
        return None
    if spec is not None:
        path = Path(spec)
        if path.exists():
            return RunRecord.read(path)
        if (out / spec / "run.json").exists():
            return RunRecord.read(out / spec)
        if dsn:
            found = _db(dsn, lambda c: store.load_run(c, spec))
            if found is not None:
                return found
        raise click.UsageError(f"no baseline {spec!r} (a run.json path, a run id, or none)")
    previous = _records_newest_first(out, record.provider, record.run_id)
    if previous is None and dsn:
        previous = _db(
            dsn, lambda c: store.latest_run(c, provider=record.provider, exclude=record.run_id)
        )
    return previous


def _load(names: tuple[str, ...]) -> list[Dataset]:
    try:
        datasets = [load_dataset(n) for n in names]
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    return datasets


def _apply_gate(
    record: RunRecord, baseline: RunRecord | None, config_path: Path | None
) -> list[str]:
    try:
        config = gate.load_gate(config_path)
    except ValueError as exc:
        raise click.UsageError(f"gate config: {exc}") from None
    failures = gate.check(record, config, baseline)
    record.gate = {"passed": not failures, "failures": failures}
    return failures


@click.group(name="eval", invoke_without_command=True)
@click.option(
    "--dataset",
    "-d",
    "dataset_names",
    multiple=True,
    help=f"Dataset name ({', '.join(NAMES)}) or file; repeat for several. Default: all.",
)
@click.option(
    "--profile",
    "clinical_profile",
    default=None,
    help="Only cases of this clinical profile, e.g. CA-ON.",
)
@click.option(
    "--provider",
    type=click.Choice(["offline", "openai-compatible"]),
    default="offline",
    show_default=True,
    help="Model provider of the doctor, pharmacist and report agents.",
)
@click.option(
    "--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1."
)
@click.option("--model", default=None, help="Model name for every agent (openai-compatible).")
@click.option(
    "--models",
    "models_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Model profiles file (models.toml form); UTIMESH_LLM_* overrides apply.",
)
@click.option(
    "--baseline", default=None, help="run.json path, run id, or 'none'. Default: the previous run."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory of run records (one sub-directory per run).",
)
@click.option("--gate", "use_gate", is_flag=True, help="Exit 1 when the release gate fails.")
@click.option(
    "--gate-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gate thresholds and tolerances (default: the packaged gate.toml).",
)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(1, 600), default=60.0, show_default=True
)
@click.option("--no-plots", is_flag=True, help="Markdown report without matplotlib plots.")
@click.option(
    "--save-baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write this run's metrics (no per-case detail) to this file, for --baseline.",
)
@_DB_OPT
@click.pass_context
def eval_group(
    ctx: click.Context,
    dataset_names: tuple[str, ...],
    clinical_profile: str | None,
    provider: str,
    base_url: str | None,
    model: str | None,
    models_file: Path | None,
    baseline: str | None,
    out: Path,
    use_gate: bool,
    gate_config: Path | None,
    concurrency: int,
    timeout_s: float,
    no_plots: bool,
    save_baseline: Path | None,
    database_url: str | None,
) -> None:
    """Evaluate clinical quality: run datasets through the real services in-process, print the
    metrics, write a run record and a report, compare with a baseline, gate a release.

    \b
    Examples:
      utimesh eval                                  # every dataset, offline agents
      utimesh eval -d gold -d adversarial --gate    # the CI release gate
      utimesh eval --provider openai-compatible --base-url http://127.0.0.1:8080/v1 --model m
      utimesh eval reviews                          # the reviewer loop (needs Postgres)
    """
    if ctx.invoked_subcommand is not None:
        return
    # The mesh (every service's code) is imported only when a run starts: other utimesh commands
    # stay quick to start.
    from utimesh.evaluation.evaluate import EvalOptions, evaluate

    err = Console(stderr=True)
    datasets = [d for d in _load(dataset_names or DEFAULT_DATASETS) if d.size]
    skipped = sorted(set(dataset_names or DEFAULT_DATASETS) - {d.name for d in datasets})
    if skipped:
        err.print(f"[dim]skipped (no cases): {', '.join(skipped)}[/]")
    options = EvalOptions(
        provider="offline" if provider == "offline" else "openai-compatible",
        base_url=base_url,
        model=model,
        models_file=models_file,
        clinical_profile=clinical_profile,
        concurrency=concurrency,
        timeout_s=timeout_s,
    )
    knowledge = load_knowledge()
    if clinical_profile is not None and clinical_profile not in knowledge.profiles:
        raise click.UsageError(
            f"unknown profile {clinical_profile!r}; available: {', '.join(knowledge.profiles)}"
        )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=False) as bars:
            record = asyncio.run(evaluate(datasets, knowledge, options, progress=_Bar(bars)))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None

    base = _baseline(baseline, out, record, database_url)
    record.baseline = base.run_id if base else ""
    deltas = compare(record, base) if base else []
    failures = _apply_gate(record, base, gate_config) if use_gate else []

    run_dir = out / record.run_id
    record.write(run_dir)
    report_path = report.markdown(record, deltas, base, run_dir, plots=not no_plots)
    if save_baseline is not None:
        slim = record.model_copy(deep=True)
        for result in slim.datasets.values():
            result.outcomes = []
            result.verdicts = []
        save_baseline.parent.mkdir(parents=True, exist_ok=True)
        save_baseline.write_text(slim.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if database_url:
        try:
            _db(database_url, lambda c: store.save_run(c, record))
        except click.ClickException as exc:
            err.print(f"[red]run record NOT stored in Postgres[/]: {exc.message}")
        else:
            err.print(f"run record stored in Postgres ({redact_dsn(database_url)})")

    console = Console()
    console.print(report.table(record, deltas))
    console.print(f"baseline: {record.baseline or 'none'}")
    console.print(f"run record: {run_dir / 'run.json'}")
    console.print(f"report: {report_path}")
    for name, result in record.datasets.items():
        for v in result.verdicts:
            if not v["passed"]:
                tag = "known gap" if v["known_gap"] else "FAILED"
                console.print(f"  {name} {v['id']} {tag}: {'; '.join(v['problems'])}")
    if use_gate:
        if failures:
            console.print("[bold red]release gate FAILED[/]")
            for f in failures:
                console.print(f"  - {f}")
            ctx.exit(1)
        console.print("[bold green]release gate passed[/]")


@eval_group.command("check")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--baseline", type=click.Path(exists=True, path_type=Path), default=None)
@click.option(
    "--gate-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None
)
def check_cmd(run: Path, baseline: Path | None, gate_config: Path | None) -> None:
    """Apply the release gate to a stored run record (run.json or its directory)."""
    record = RunRecord.read(run)
    base = RunRecord.read(baseline) if baseline else None
    failures = _apply_gate(record, base, gate_config)
    if failures:
        click.echo("release gate FAILED")
        for f in failures:
            click.echo(f"  - {f}")
        raise SystemExit(1)
    click.echo("release gate passed")


@eval_group.group("datasets")
def datasets_group() -> None:
    """The evaluation datasets (versioned JSON files shipped with utimesh)."""


@datasets_group.command("build")
def datasets_build() -> None:
    """Rebuild gold (from shared/clinical/cases.json or $UTIMESH_CASES), adversarial and qa;
    bump the version of every case that changed."""
    built = build.write_all()
    if "gold" not in built:
        click.echo(f"gold NOT rebuilt: no development cases at {build.cases_path()}", err=True)
    for name, d in built.items():
        click.echo(f"{name}: version {d.version}, {d.size} cases, {d.content_sha256()[:12]}")


@datasets_group.command("list")
def datasets_list() -> None:
    """Each dataset's version, size and content hash."""
    for name in NAMES:
        d = load_dataset(name)
        click.echo(
            f"{name}: version {d.version}, {d.size} cases, {d.content_sha256()[:12]}  {dataset_path(name)}"
        )


# --- reviewer loop -------------------------------------------------------------------------


@eval_group.command("reviews")
@click.option("--days", type=click.IntRange(1, 3650), default=None, help="Only the last N days.")
@click.option("--json", "as_json", is_flag=True)
@_DB_OPT
def reviews_cmd(days: int | None, as_json: bool, database_url: str | None) -> None:
    """Agreement rates by reviewer role, error categories by week, and the disagreements queued
    for adjudication."""
    dsn = _need_db(database_url)
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    rows = _db(dsn, lambda c: store.fetch_reviews(c, since=since))
    roles = reviews.agreement_by_role(rows)
    weeks = reviews.categories_by_week(rows)
    queue = reviews.adjudication_queue(rows)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "agreement_by_role": [r.__dict__ for r in roles],
                    "categories_by_week": {w: dict(c) for w, c in weeks.items()},
                    "queue": [
                        {
                            "review": r.name,
                            "role": r.reviewer_role,
                            "why": why,
                            "categories": list(r.error_categories),
                        }
                        for r, why in queue
                    ],
                },
                indent=2,
            )
        )
        return
    console = Console()
    t = Table(title=f"agreement by reviewer role ({len(rows)} reviews)")
    for col in ("role", "reviews", "agrees with decision", "agrees with plan"):
        t.add_column(col)
    for r in roles:
        t.add_row(r.role, str(r.reviews), f"{r.decision_agreement:.0%}", f"{r.plan_agreement:.0%}")
    console.print(t)
    t = Table(title="error categories by week")
    for col in ("week", "category", "count"):
        t.add_column(col)
    for week, counts in weeks.items():
        for cat, n in counts.most_common():
            t.add_row(week, cat, str(n))
    console.print(t)
    t = Table(title=f"queued for adjudication ({len(queue)})")
    for col in ("review", "role", "why", "categories"):
        t.add_column(col)
    for row, why in queue:
        t.add_row(row.name, row.reviewer_role, why, ", ".join(row.error_categories))
    console.print(t)


@eval_group.command("sample")
@click.option("--days", type=click.IntRange(1, 3650), default=7, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of routine (agreed, approved) consultations to review.",
)
@click.option("--json", "as_json", is_flag=True)
@_DB_OPT
def sample_cmd(days: int, rate: float, as_json: bool, database_url: str | None) -> None:
    """Consultations to send to reviewers: every escalated, degraded, amended or rejected one
    and a deterministic random share of the rest (skipping those already reviewed)."""
    dsn = _need_db(database_url)
    since = datetime.now(UTC) - timedelta(days=days)
    rows = _db(dsn, lambda c: store.recent_consultations(c, since))
    picked = reviews.sample_for_review(rows, rate)
    if as_json:
        body = {
            "considered": len(rows),
            "sampled": [
                {"consultation": r.name, "profile": r.profile, "why": why} for r, why in picked
            ],
        }
        click.echo(json.dumps(body, indent=2))
        return
    t = Table(title=f"{len(picked)} of {len(rows)} consultations to review (last {days} days)")
    for col in ("consultation", "profile", "decision", "why"):
        t.add_column(col)
    for row, why in picked:
        t.add_row(row.name, row.profile, row.decision, why)
    Console().print(t)


@eval_group.command("adjudicate")
@click.argument("review_name")
@click.option(
    "--verdict",
    type=click.Choice(store.VERDICTS),
    required=True,
    help="system_correct: the reviewer was wrong; system_wrong: the system was.",
)
@click.option("--expected-decision", type=click.Choice(reviews.DECISIONS), default=None)
@click.option("--expected-agent", type=click.Choice(reviews.AGENTS), default=None)
@click.option("--category", "categories", multiple=True, type=click.Choice(sorted(TAXONOMY)))
@click.option("--note", default="", help="Free text, kept in Postgres only.")
@click.option(
    "--adjudicator", envvar="USER", required=True, help="Who adjudicates (default $USER)."
)
@_DB_OPT
def adjudicate_cmd(
    review_name: str,
    verdict: str,
    expected_decision: str | None,
    expected_agent: str | None,
    categories: tuple[str, ...],
    note: str,
    adjudicator: str,
    database_url: str | None,
) -> None:
    """Settle a queued review: who was right, and what the system should have done."""
    if verdict == "system_wrong" and expected_decision is None:
        raise click.UsageError("--verdict system_wrong needs --expected-decision")
    if expected_agent and expected_decision != "recommend_treatment":
        raise click.UsageError("--expected-agent goes with --expected-decision recommend_treatment")
    dsn = _need_db(database_url)
    a = store.Adjudication(
        review_name,
        verdict,
        expected_decision or "",
        expected_agent or "",
        categories,
        note,
        adjudicator,
    )
    try:
        done = _db(dsn, lambda c: store.adjudicate(c, a))
    except (store.NotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{review_name}: {done.verdict} by {done.adjudicator} at {done.adjudicated_at}")


@eval_group.command("promote")
@click.argument("review_name")
@click.option(
    "--dataset-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Regression dataset to append to (default: the shipped regression.json).",
)
@_DB_OPT
def promote_cmd(review_name: str, dataset_file: Path | None, database_url: str | None) -> None:
    """Turn an adjudicated review into a permanent regression case (appended, with provenance:
    review, adjudicator, date). The consultation's intake is copied: it holds no identifiers,
    but check its free text before committing the dataset."""
    dsn = _need_db(database_url)
    path = dataset_file or dataset_path("regression")
    dataset = Dataset.model_validate_json(path.read_text(encoding="utf-8"))

    async def work(conn: asyncpg.Connection) -> str:
        adjudication = await store.load_adjudication(conn, review_name)
        if adjudication.regression_case_id:
            raise ValueError(f"{review_name} is already {adjudication.regression_case_id}")
        role, consultation = await store.reviewed_consultation(conn, review_name)
        case = reviews.regression_case(
            reviews.next_case_id(dataset), role, consultation, adjudication
        )
        write_dataset(reviews.appended(dataset, case), path)
        await store.mark_promoted(conn, review_name, case.id)
        return case.id

    try:
        case_id = _db(dsn, work)
    except (store.NotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{review_name} -> {case_id} in {path}")
