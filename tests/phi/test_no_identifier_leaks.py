"""No patient identifier leaks, end to end on the whole local stack.

The stack is brought up as a person would (`python -m utimesh.cli up`, a temp state dir, a free
port block; `down` always runs), with the doctor and the pharmacist on a fake OpenAI-compatible
server that records every prompt. Consultations go through the REST edge with a recognisable
identifier and a recognisable name written into free text (an allergy entry) where a careless
user might put it. Then everything the stack keeps or says is searched:

- the identifier must appear nowhere: logs, LLM prompts, Redis (keys and values), Postgres
  (every row of every table as text, bytea included as hex), the report, the consultation JSON,
  the patient timeline;
- the name is the patient's clinical free text: it may reach the prompt's patient data, the
  stored intake and the report's snapshot, but never the logs or a Redis key.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
from google.protobuf.json_format import MessageToDict

from mesh.stack import Stack
from tests.conftest import REPO
from tests.consult.test_safety_with_models import NIT, doctor_says, pharmacist_says
from tests.factories import patient
from tests.fakes.openai_server import FakeOpenAI, ReplyLike, error, reply
from tests.stack.test_stack import UP_WAIT_S, bring_down, explain, new_stack
from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake

IDENTIFIER = "MRN-ZZTOPSECRET-77"
NAME = "Jane Zzyzx-Doe"
ALLERGY = f"penicillin (told by {NAME})"
SUB = "dr-alice"
DOCTOR_MODEL = "fake-doctor"
PHARMACIST_MODEL = "fake-pharmacist"


# --- the fake model server, on its own event loop in a thread -------------------------------


class RecordingModels:
    """FakeOpenAI serving the doctor and the pharmacist (told apart by model name), each
    request body appended to `log` as one JSON line."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fake = FakeOpenAI(models=(DOCTOR_MODEL, PHARMACIST_MODEL))
        self.fake.responder = self._answer

    def _answer(self, body: dict[str, Any]) -> ReplyLike:
        with self.log.open("a") as f:
            f.write(json.dumps(body) + "\n")
        if body["model"] == DOCTOR_MODEL:
            return reply(doctor_says(NIT))
        if body["model"] == PHARMACIST_MODEL:
            return reply(pharmacist_says("approve"))
        return error(404, f"no model {body['model']!r}")

    def __enter__(self) -> RecordingModels:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.__aenter__(), self.loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop).result(
            10
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def base_url(self) -> str:
        return self.fake.base_url

    def prompts(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


# --- the stack ------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "utimesh.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def stack_env(models: RecordingModels) -> dict[str, str]:
    """The caller's environment without UTIMESH_* settings, plus the two model profiles."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UTIMESH_")}
    for agent, model in (("DOCTOR", DOCTOR_MODEL), ("PHARMACIST", PHARMACIST_MODEL)):
        env[f"UTIMESH_LLM_{agent}_PROVIDER"] = "openai-compatible"
        env[f"UTIMESH_LLM_{agent}_BASE_URL"] = models.base_url
        env[f"UTIMESH_LLM_{agent}_MODEL"] = model
        env[f"UTIMESH_LLM_{agent}_RETRIES"] = "0"
        env[f"UTIMESH_LLM_{agent}_TIMEOUT_S"] = "10"
    return env


@dataclass
class Running:
    stack: Stack
    models: RecordingModels
    token: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    prompts = tmp_path_factory.mktemp("phi") / "prompts.jsonl"
    with RecordingModels(prompts) as models:
        stack = new_stack()
        env = stack_env(models)
        try:
            where = ("--state-dir", str(stack.state_dir), "--base-port", str(stack.base_port))
            result = cli("up", *where, "--wait", str(UP_WAIT_S), env=env, timeout=UP_WAIT_S + 30)
            assert result.returncode == 0, explain(stack, result)
            token = cli(
                "token",
                "--role",
                "clinician",
                "--role",
                "pharmacist",
                "--sub",
                SUB,
                "--state-dir",
                str(stack.state_dir / "edge"),
                env=env,
                timeout=60,
            )
            assert token.returncode == 0, explain(stack, token)
            yield Running(stack, models, token.stdout.strip())
        finally:
            bring_down(stack)


# --- REST through the edge ------------------------------------------------------------------


async def _call(
    method: str, url: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session,
        session.request(
            method, url, json=body, headers={"authorization": f"Bearer {token}"}
        ) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text else {}


def call(
    running: Running, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    code, payload = asyncio.run(
        _call(method, f"{running.stack.rest_url}{path}", running.token, body)
    )
    assert code == 200, f"{method} {path}: {code} {payload}\n{explain(running.stack)}"
    return payload


def consultation_body(**overrides: Any) -> dict[str, Any]:
    intake = intake_to_proto(parse_intake(patient(**overrides)))
    return {
        "intake": MessageToDict(intake, preserving_proto_field_name=True),
        "profile": "CA-ON",
        "patient_id": IDENTIFIER,
    }


# --- what the stack keeps -------------------------------------------------------------------


def log_texts(stack: Stack) -> dict[str, str]:
    return {
        str(p.relative_to(stack.logs)): p.read_text(errors="replace")
        for p in sorted(stack.logs.rglob("*"))
        if p.is_file()
    }


def redis_contents(stack: Stack) -> tuple[list[bytes], list[bytes]]:
    """Every key of the stack's Redis and every value (by type), as bytes."""
    client = redis.Redis(host="127.0.0.1", port=stack.port("redis"), socket_timeout=5)
    keys: list[bytes] = []
    values: list[bytes] = []
    try:
        for db in range(16):
            client.execute_command("SELECT", db)
            for key in client.scan_iter(count=500):
                keys.append(key)
                kind = client.type(key)
                if kind == b"string":
                    values.append(client.get(key) or b"")
                elif kind == b"hash":
                    values.extend(b for kv in client.hgetall(key).items() for b in kv)
                elif kind == b"list":
                    values.extend(client.lrange(key, 0, -1))
                elif kind == b"set":
                    values.extend(client.smembers(key))
                elif kind == b"zset":
                    values.extend(client.zrange(key, 0, -1))
                elif kind == b"stream":
                    values.extend(repr(entry).encode() for entry in client.xrange(key, "-", "+"))
    finally:
        client.close()
    return keys, values


async def _database_rows(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        rows: dict[str, list[str]] = {}
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            rows[name] = [r[0] for r in await conn.fetch(f"SELECT t::text FROM {name} t")]
        return rows
    finally:
        await conn.close()


def database_rows(stack: Stack) -> dict[str, list[str]]:
    url = f"postgresql://postgres@127.0.0.1:{stack.port('postgres')}/postgres"
    return asyncio.run(_database_rows(url))


def containing(texts: dict[str, str], *needles: str) -> list[str]:
    return [where for where, text in texts.items() if any(n in text for n in needles)]


# --- the test -------------------------------------------------------------------------------


def test_identifier_never_leaks_and_the_name_stays_in_clinical_data(running: Running) -> None:
    started = time.monotonic()
    first = call(
        running,
        "POST",
        "/v1/consultations",
        consultation_body(assessment_date="2026-03-01", history__allergies=[ALLERGY]),
    )["consultation"]
    second = call(
        running,
        "POST",
        "/v1/consultations",
        consultation_body(assessment_date="2026-03-11", history__allergies=[]),
    )["consultation"]
    assert first["patient"].startswith("patients/") and second["patient"] == first["patient"]
    assert first["report_markdown"] and second["report_markdown"]
    patient_uuid = first["patient"].removeprefix("patients/")
    timeline = call(running, "GET", f"/v1/patients/{patient_uuid}/timeline")
    fetched = call(running, "GET", f"/v1/consultations/{first['name'].split('/', 1)[1]}")
    seen_via_rest = {
        "first": json.dumps(first),
        "second": json.dumps(second),
        "timeline": json.dumps(timeline),
        "fetched": json.dumps(fetched),
    }

    # The models were really asked, and saw the patient's free text but not the identifier.
    prompts = running.models.prompts()
    models = {p["model"] for p in prompts}
    assert {DOCTOR_MODEL, PHARMACIST_MODEL} <= models, models
    prompt_texts = {f"prompt {i} ({p['model']})": json.dumps(p) for i, p in enumerate(prompts)}
    assert not containing(prompt_texts, IDENTIFIER)
    assert containing(prompt_texts, "Zzyzx"), "the allergy text is patient data the agents need"

    # The identifier: nowhere.
    assert not containing(seen_via_rest, IDENTIFIER)
    assert IDENTIFIER not in first["report_markdown"] + second["report_markdown"]
    logs = log_texts(running.stack)
    assert logs, "the stack wrote no logs?"
    assert not containing(logs, IDENTIFIER)
    keys, values = redis_contents(running.stack)
    assert not [k for k in keys if IDENTIFIER.encode() in k]
    assert not [v for v in values if IDENTIFIER.encode() in v]
    rows = database_rows(running.stack)
    assert '"public"."patients"' in rows and len(rows['"public"."patients"']) == 1
    hex_id = IDENTIFIER.encode().hex()
    leaked = {
        table: [r for r in table_rows if IDENTIFIER in r or hex_id in r]
        for table, table_rows in rows.items()
    }
    assert not {t: r for t, r in leaked.items() if r}

    # Positive controls: the searches do find what is there (the name is in the patient's
    # memory as text and in the stored consultation record as bytes).
    assert any("Zzyzx" in r for r in rows['"public"."memory_facts"'])
    assert any(b"Zzyzx".hex() in r for r in rows['"public"."consultations"'])
    assert containing(seen_via_rest, "Zzyzx")

    # The name: clinical data only (the intake, the memory, the report's snapshot), never in
    # logs or Redis keys.
    assert not containing(logs, "Zzyzx")
    assert not [k for k in keys if b"Zzyzx" in k]

    # The audit trail names the caller (the JWT subject), not the service.
    audit = rows['"public"."audit_events"']
    assert any(SUB in r and "consultation.create" in r and first["name"] in r for r in audit)
    print(
        f"\nPHI checks: {len(prompts)} prompts, {len(logs)} log files, {len(keys)} Redis keys,"
        f" {sum(map(len, rows.values()))} rows in {len(rows)} tables;"
        f" {time.monotonic() - started:.1f} s after `up`"
    )
