"""The reviewer loop against a real PostgreSQL: reviews stored by consult's store feed
`utimesh eval reviews`; a disagreement is adjudicated and promoted into a regression case,
which the next evaluation runs (and, while the error stands, fails)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from services.consult.adapters.pg_store import PostgresConsultationStore
from services.consult.domain.ports import ReviewRecord
from tests.consult.mesh import DEAD, running_mesh
from tests.data.conftest import open_pool
from utimesh.cli import cli
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evaluation.authored import patient
from utimesh.evaluation.datasets import Dataset, dataset_path
from utimesh.evaluation.evaluate import evaluate
from utimesh.evaluation.gate import check, load_gate
from utimesh.rules import Knowledge, parse_intake

# A consultation the system gets wrong (ADV-CON-007, a known gap): "not pregnant" with
# gestational weeks recorded is treated; a prescriber says it should have been referred.
CONTRADICTORY = patient(gestational_weeks=12)


async def _seed(url: str, knowledge: Knowledge) -> dict[str, str]:
    async with running_mesh(knowledge) as mesh:
        made = {}
        for key, p in (("plain", patient()), ("contradictory", CONTRADICTORY)):
            request = cpb.CreateConsultationRequest(
                intake=intake_to_proto(parse_intake(p)), profile="CA-ON"
            )
            made[key] = (await mesh.consult.CreateConsultation(request, timeout=30)).consultation
    async with running_mesh(knowledge, pharmacist_target=DEAD) as mesh:
        request = cpb.CreateConsultationRequest(
            intake=intake_to_proto(parse_intake(patient(age=40))), profile="CA-ON"
        )
        made["degraded"] = (await mesh.consult.CreateConsultation(request, timeout=30)).consultation
    names: dict[str, str] = {}
    async with open_pool(url) as pool:
        store = PostgresConsultationStore(pool)
        for c in made.values():
            await store.put(c)
        reviews: list[tuple[str, cpb.Consultation, str, bool, bool, tuple[str, ...]]] = [
            (
                "wrong",
                made["contradictory"],
                "prescriber",
                False,
                False,
                ("wrong_decision", "missed_contraindication"),
            ),
            ("agree", made["plain"], "pharmacist", True, True, ()),
            ("unclear", made["plain"], "clinician", True, False, ("unclear_explanation",)),
        ]
        for key, c, role, decision, plan, categories in reviews:
            name = f"{c.name}/reviews/{uuid.uuid4()}"
            await store.save_review(
                ReviewRecord(name, c.name, f"sub-{role}", role, decision, plan, categories, "")
            )
            names[key] = name
            await asyncio.sleep(0.01)  # distinct created_at, so "oldest first" is defined
    names["degraded"] = made["degraded"].name  # not reviewed yet
    return names


@pytest.fixture(scope="module")
def reviews(module_database_url: str, knowledge: Knowledge) -> dict[str, str]:
    return asyncio.run(_seed(module_database_url, knowledge))


def utimesh(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["eval", *args, "--database-url", url])


def test_loop(
    reviews: dict[str, str], module_database_url: str, tmp_path: Path, knowledge: Knowledge
) -> None:
    url = module_database_url
    shown = utimesh(url, "reviews", "--json")
    assert shown.exit_code == 0, shown.output
    summary: dict[str, Any] = json.loads(shown.output)
    roles = {r["role"]: r for r in summary["agreement_by_role"]}
    assert roles["prescriber"]["decision_agreement"] == 0.0
    assert roles["clinician"]["decision_agreement"] == 1.0
    assert roles["clinician"]["plan_agreement"] == 0.0
    weeks = summary["categories_by_week"]
    assert sum(sum(c.values()) for c in weeks.values()) == 3
    queue = [q["review"] for q in summary["queue"]]
    # the safety disagreement first; the pharmacist who agreed is queued because the clinician
    # reviewing the same consultation did not
    assert queue == [reviews["wrong"], reviews["agree"], reviews["unclear"]]

    bad = utimesh(
        url, "adjudicate", reviews["wrong"], "--verdict", "system_wrong", "--adjudicator", "dr-a"
    )
    assert bad.exit_code == 2 and "--expected-decision" in bad.output
    done = utimesh(
        url,
        "adjudicate",
        reviews["wrong"],
        "--verdict",
        "system_wrong",
        "--expected-decision",
        "refer",
        "--category",
        "missed_contraindication",
        "--adjudicator",
        "dr-adjudicator",
    )
    assert done.exit_code == 0, done.output
    assert (
        utimesh(
            url,
            "adjudicate",
            reviews["unclear"],
            "--verdict",
            "system_correct",
            "--adjudicator",
            "dr-adjudicator",
        ).exit_code
        == 0
    )
    after = json.loads(utimesh(url, "reviews", "--json").output)
    assert [q["review"] for q in after["queue"]] == [reviews["agree"]]

    regression = tmp_path / "regression.json"
    shutil.copy(dataset_path("regression"), regression)
    before = Dataset.model_validate_json(regression.read_text())
    for key in ("wrong", "unclear"):
        promoted = utimesh(url, "promote", reviews[key], "--dataset-file", str(regression))
        assert promoted.exit_code == 0, promoted.output
    again = utimesh(url, "promote", reviews["wrong"], "--dataset-file", str(regression))
    assert again.exit_code == 1 and "already" in again.output

    dataset = Dataset.model_validate_json(regression.read_text())
    assert dataset.version == before.version + 2
    wrong, right = dataset.cases[-2:]
    assert wrong.provenance["review"] == reviews["wrong"]
    assert wrong.provenance["adjudicator"] == "dr-adjudicator"
    assert wrong.provenance["adjudicated_on"]  # the date
    assert wrong.patient == CONTRADICTORY and wrong.expected.decision == "refer"
    assert (
        right.expected.decision == "recommend_treatment" and right.expected.regimen_agent == "NIT"
    )

    # The regression case now fails every run until the system is fixed: the gate says so.
    record = asyncio.run(evaluate([dataset], knowledge))
    verdicts = {v["id"]: v for v in record.datasets["regression"].verdicts}
    assert not verdicts[wrong.id]["passed"] and verdicts[right.id]["passed"]
    failures = check(record, load_gate())
    assert any("regression: unsafe_recommendations 1" in f for f in failures)


def test_sampling_sends_every_degraded_consultation_and_a_share_of_the_rest(
    reviews: dict[str, str], module_database_url: str
) -> None:
    none = utimesh(module_database_url, "sample", "--rate", "0", "--json")
    assert none.exit_code == 0, none.output
    body = json.loads(none.output)
    assert body["considered"] == 3
    # the degraded one always; the reviewed ones are not sent again
    assert body["sampled"] == [
        {"consultation": reviews["degraded"], "profile": "CA-ON", "why": "outcome unreviewed"}
    ]


def test_reviews_need_a_database() -> None:
    result = CliRunner().invoke(cli, ["eval", "reviews"], env={"UTIMESH_DATABASE_URL": ""})
    assert result.exit_code == 2 and "UTIMESH_DATABASE_URL" in result.output
