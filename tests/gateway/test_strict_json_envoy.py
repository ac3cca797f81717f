"""The generated strict-JSON script in a real Envoy: the edge's own Lua filter, body limit and
local-reply mapping, with the rest of the edge cut away (a body the check lets pass gets a
direct 200 "passed"). Fixed cases, then random bodies against a Python reference (json.loads
for syntax, a walk of the generated schema for unknown keys), then limits and failure modes.
The end-to-end behaviour through the whole edge is in test_edge_e2e.py."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.descriptor import descriptor_set_from_modules
from gateway.settings import CONSULT_SERVICE
from gateway.strict_json import ERROR_DOMAIN, MapOf, Ref, Schema, build_schema, generate
from tests.gateway.harness import (
    PASSED,
    THINGS_PROTO,
    THINGS_SERVICE,
    Probe,
    compile_proto,
    intake_json,
    running_strict_json_probe,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CREATE = "/v1/consultations"
CREATE_REQUEST = "utimesh.consult.v1.CreateConsultationRequest"
TIMEOUT = aiohttp.ClientTimeout(total=60)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def probe(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Probe]:
    async with running_strict_json_probe(tmp_path_factory.mktemp("probe")) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def things(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Probe]:
    """The same filter, generated from a test API with maps, well-known types and more."""
    fds = compile_proto(tmp_path_factory.mktemp("things-proto"), "things.proto", THINGS_PROTO)
    script = generate(fds, [THINGS_SERVICE])
    async with running_strict_json_probe(tmp_path_factory.mktemp("things"), script=script) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


async def _send(
    http: aiohttp.ClientSession,
    url: str,
    body: str | bytes,
    *,
    method: str = "POST",
    content_type: str = "application/json",
) -> tuple[int, str, str]:
    data = body.encode() if isinstance(body, str) else body
    async with http.request(
        method, url, data=data, headers={"content-type": content_type}
    ) as response:
        return response.status, response.headers.get("content-type", ""), await response.text()


async def _verdict(http: aiohttp.ClientSession, url: str, body: str | bytes, **kw: Any) -> str:
    """PASSED, or the reason of a 400 ("UNKNOWN_FIELD:<field>" for an unknown key), after
    checking that the 400's body is the edge's google.rpc.Status JSON."""
    status, content_type, text = await _send(http, url, body, **kw)
    if status == 200:
        # (Envoy turns the probe's direct response to a gRPC request into a gRPC reply.)
        assert text == PASSED or content_type.startswith("application/grpc")
        return PASSED
    assert status == 400, (status, text)
    assert content_type == "application/json"
    error = json.loads(text)
    assert error["code"] == 3 and error["message"]
    info = error["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["domain"] == ERROR_DOMAIN
    if info["reason"] != "UNKNOWN_FIELD":
        return str(info["reason"])
    field = info["metadata"]["field"]
    bad_request = error["details"][1]
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert bad_request["field_violations"][0]["field"] == field
    # the message quotes the field as a JSON string
    prefix = "unknown field "
    assert error["message"].startswith(prefix)
    assert json.JSONDecoder().raw_decode(error["message"], len(prefix))[0] == field
    return f"UNKNOWN_FIELD:{field}"


# --- fixed cases ------------------------------------------------------------------------------

VALID_INTAKE = json.dumps(intake_json())


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (f'{{"intake": {VALID_INTAKE}}}', PASSED),
        (f'{{"intake": {VALID_INTAKE}, "requestId": "r", "maxRounds": 2}}', PASSED),
        (
            '{"intake": {"redFlags": {"fever": true}, "followUp": {"hoursSinceTreatmentStart": 3}}}',
            PASSED,
        ),
        ('{"intake": null, "profile": null}', PASSED),
        ("", PASSED),
        (" \r\n\t", PASSED),
        ("{}", PASSED),
        # scalars and enums are the transcoder's to type-check; whatever they hold passes here
        ('{"max_rounds": {"bogus": [1, {"x": 2}]}, "profile": ["a", {"b": null}]}', PASSED),
        ('{"intake": {"sex": "NOT_A_SEX", "age": "thirty"}}', PASSED),
        ('{"bogus_field": 1}', "UNKNOWN_FIELD:bogus_field"),
        (f'{{"intake": {VALID_INTAKE}, "max_roundz": 2}}', "UNKNOWN_FIELD:max_roundz"),
        ('{"intake": {"symptoms": {"dysurya": true}}}', "UNKNOWN_FIELD:intake.symptoms.dysurya"),
        ('{"intake": {"redFlags": {"Fever": true}}}', "UNKNOWN_FIELD:intake.redFlags.Fever"),
        ('{"RequestId": "x"}', "UNKNOWN_FIELD:RequestId"),
        (
            '{"intake": {"history": {"recent_antibiotics": {"entries": [{"drug": "x"}, {"foo": 1}]}}}}',
            "UNKNOWN_FIELD:intake.history.recent_antibiotics.entries[1].foo",
        ),
        (
            '{"intake": {"recurrence": {"priorEpisodes": [{"onsetDate": "2024-01-01", "x": 1}]}}}',
            "UNKNOWN_FIELD:intake.recurrence.priorEpisodes[0].x",
        ),
        # a single object where a list is expected is still walked
        (
            '{"intake": {"history": {"recentAntibiotics": {"entries": {"y": 1}}}}}',
            "UNKNOWN_FIELD:intake.history.recentAntibiotics.entries.y",
        ),
        # the first unknown key in document order, even before later junk
        ('{"a": 1, "b": 2', "UNKNOWN_FIELD:a"),
        # escapes in keys are decoded before the lookup, both ways
        ('{"\\u0062ogus": 1}', "UNKNOWN_FIELD:bogus"),
        ('{"\\u0069ntake": {"\\u0061ge": 3}}', PASSED),
        (
            '{"intake": {"symptoms": {"dys\\u00fcria\\ud83d\\ude00": true}}}',
            "UNKNOWN_FIELD:intake.symptoms.dys\u00fcria\U0001f600",
        ),
        ('{"a\\"b\\\\c\\/d\\n": 1}', 'UNKNOWN_FIELD:a"b\\c/d\n'),
        # malformed
        ('{"intake": {"age": 30', "MALFORMED_JSON"),
        ('{"intake": {}} x', "MALFORMED_JSON"),
        ('{"intake": {},}', "MALFORMED_JSON"),
        ("{'intake': {}}", "MALFORMED_JSON"),
        ("{intake: {}}", "MALFORMED_JSON"),
        ('{"profile": "a\tb"}', "MALFORMED_JSON"),
        ('{"profile": "\\x41"}', "MALFORMED_JSON"),
        ('{"profile": "\\u12"}', "MALFORMED_JSON"),
        ('{"max_rounds": 01}', "MALFORMED_JSON"),
        ('{"max_rounds": 1.}', "MALFORMED_JSON"),
        ('{"max_rounds": -}', "MALFORMED_JSON"),
        ('{"max_rounds": 1e}', "MALFORMED_JSON"),
        ('{"max_rounds": NaN}', "MALFORMED_JSON"),
        ('{"max_rounds": tru}', "MALFORMED_JSON"),
        ('{"profile": "unterminated}', "MALFORMED_JSON"),
        ("\ufeff{}", "MALFORMED_JSON"),
        ('{"intake" {}}', "MALFORMED_JSON"),
        ("[1, 2,]", "MALFORMED_JSON"),
        ("{}{}", "MALFORMED_JSON"),
    ],
)
async def test_bodies(probe: Probe, http: aiohttp.ClientSession, body: str, verdict: str) -> None:
    assert await _verdict(http, probe.url + CREATE, body) == verdict


async def test_malformed_json_names_the_position(probe: Probe, http: aiohttp.ClientSession) -> None:
    body = '{\n  "intake": {\n    "age": 30,\n    "sex" "SEX_FEMALE"\n  }\n}'
    status, content_type, text = await _send(http, probe.url + CREATE, body)
    assert status == 400 and content_type == "application/json"
    error = json.loads(text)
    assert error["message"] == "malformed JSON at line 4, column 11 (byte 41): expected ':'"
    assert error["details"][0]["metadata"] == {"line": "4", "column": "11", "offset": "41"}
    assert body[41] == '"'

    _, _, text = await _send(http, probe.url + CREATE, '{"intake": {"age": 30')
    assert json.loads(text)["message"].endswith("(byte 21): unexpected end of input")


@pytest.mark.parametrize(
    ("method", "path", "content_type", "checked"),
    [
        ("POST", "/v1/consultations", "application/json", True),
        ("POST", "/v1/consultations", "text/plain", True),
        ("POST", "/v1/consultations:stream", "application/json", True),
        ("POST", "/v1/consultations/abc:ask", "application/json", True),
        ("POST", "/v1/consultations/abc:ask?foo=1", "application/json", True),
        # percent-escapes and a trailing slash do not get around the check
        ("POST", "/v1/consultation%73/abc%3Aask", "application/json", True),
        ("POST", "/v1/consultations/", "application/json", True),
        # the transcoder splits a registered verb off after the last '/' and then ignores a
        # trailing '/': so does the check
        ("POST", "/v1/consultations/abc/:ask", "application/json", True),
        ("POST", "/v1/consultations/:stream", "application/json", True),
        ("POST", "/v1/consultations/:a:ask", "application/json", True),
        ("POST", "/v1/consultations/abc:%61sk", "application/json", True),
        # the transcoder treats these as JSON too (only application/grpc[+...] is gRPC)
        ("POST", "/v1/consultations", "application/grpc-web", True),
        ("POST", "/v1/consultations", "application/grpcx", True),
        # native gRPC: the transcoder passes it through, so there is nothing to check
        ("POST", "/v1/consultations", "application/grpc", False),
        ("POST", "/v1/consultations", "application/grpc+proto", False),
        # no body rule for these
        ("GET", "/v1/consultations/abc", "application/json", False),
        ("PUT", "/v1/consultations", "application/json", False),
        ("POST", "/v1/other", "application/json", False),
        ("POST", "/v1/consultations/a/b:ask", "application/json", False),
    ],
)
async def test_which_requests_are_checked(
    probe: Probe,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    content_type: str,
    checked: bool,
) -> None:
    verdict = await _verdict(
        http, probe.url + path, '{"bogus": 1}', method=method, content_type=content_type
    )
    assert verdict == ("UNKNOWN_FIELD:bogus" if checked else PASSED)


@pytest.mark.parametrize(
    ("method", "path", "body", "verdict"),
    [
        ("PUT", "/v1/things", '{"parent": "p", "thing": {"displayName": "x"}}', PASSED),
        ("PUT", "/v1/things", '{"thing": {"parts": {"a": {"count": 1}}}}', PASSED),
        (
            "PUT",
            "/v1/things",
            '{"thing": {"parts": {"a": {"count": 1, "x": 2}}}}',
            "UNKNOWN_FIELD:thing.parts.a.x",
        ),
        # a map as a list of entries
        (
            "PUT",
            "/v1/things",
            '{"thing": {"parts": [{"key": "a", "value": {"count": 1}}, {"key": "b", "value": {"zz": 1}}]}}',
            "UNKNOWN_FIELD:thing.parts[1].value.zz",
        ),
        ("PUT", "/v1/things", '{"thing": {"labels": {"any key": "v", "x": "y"}}}', PASSED),
        # Struct and Any take any keys; Timestamp is a string
        ("PUT", "/v1/things", '{"thing": {"extra": {"a": {"b": [1, {"c": null}]}}}}', PASSED),
        (
            "PUT",
            "/v1/things",
            '{"thing": {"payload": {"@type": "type.googleapis.com/x.Y", "whatever": 1}}}',
            PASSED,
        ),
        ("PUT", "/v1/things", '{"thing": {"when": "2024-01-01T00:00:00Z"}}', PASSED),
        (
            "PUT",
            "/v1/things",
            '{"thing": {"history": [{"count": 1}, {"count": 2, "zz": 0}]}}',
            "UNKNOWN_FIELD:thing.history[1].zz",
        ),
        (
            "PUT",
            "/v1/things",
            '{"thing": {"parentThing": {"parent_thing": {"nope": 1}}}}',
            "UNKNOWN_FIELD:thing.parentThing.parent_thing.nope",
        ),
        ("PUT", "/v1/things", '{"thing": {"odd": "a", "Odd-Name": "b", "main": {}}}', PASSED),
        ("PUT", "/v1/things", '{"thing": {"oddName": "a"}}', "UNKNOWN_FIELD:thing.oddName"),
        # body: "thing": the body is the Thing itself
        ("POST", "/v1/shelves/s1/things", '{"displayName": "x"}', PASSED),
        ("POST", "/v1/shelves/s1/things", '{"thing": {}}', "UNKNOWN_FIELD:thing"),
        # a custom verb; google.protobuf.Empty has no fields
        ("LOCK", "/v1/things/a:touch", '{"nothing": {}}', PASSED),
        ("LOCK", "/v1/things/a:touch", '{"nothing": {"x": 1}}', "UNKNOWN_FIELD:nothing.x"),
        # raw HttpBody and bodiless GET: not checked
        ("POST", "/v1/uploads", "not json at all", PASSED),
        ("GET", "/v1/things/a/b", '{"bogus": 1}', PASSED),
    ],
)
async def test_maps_well_known_types_and_bindings(
    things: Probe, http: aiohttp.ClientSession, method: str, path: str, body: str, verdict: str
) -> None:
    assert await _verdict(http, things.url + path, body, method=method) == verdict


# --- random bodies against a reference ----------------------------------------------------------


def _reference(schema: Schema, ref: Ref, value: Any, path: str = "") -> str | None:
    """The first unknown key (document order) as the check names it, or None."""

    def join(key: str) -> str:
        return f"{path}.{key}" if path else key

    if ref is None:
        return None
    if isinstance(value, list):
        element = ref.entry if isinstance(ref, MapOf) else ref
        for i, item in enumerate(value):
            if (found := _reference(schema, element, item, f"{path}[{i}]")) is not None:
                return found
        return None
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if isinstance(ref, MapOf):
            child: Ref = ref.values
        else:
            keys = schema.messages[ref].keys
            if key not in keys:
                return join(key)
            child = keys[key]
        if (found := _reference(schema, child, item, join(key))) is not None:
            return found
    return None


class _Writer:
    """JSON text with random whitespace and random escapes, but always valid."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def ws(self) -> str:
        return self.rng.choice(["", "", " ", "\n  ", "\t", "\r\n"])

    def string(self, text: str) -> str:
        out = ['"']
        for char in text:
            roll = self.rng.random()
            if char in '"\\' or ord(char) < 0x20:
                out.append(json.dumps(char)[1:-1])
            elif roll < 0.1:
                out.append(
                    json.dumps(char, ensure_ascii=True)[1:-1]
                    if ord(char) > 0x7F
                    else f"\\u{ord(char):04x}"
                )
            else:
                out.append(char)
        out.append('"')
        return "".join(out)

    def value(self, value: Any) -> str:
        w = self.ws
        if isinstance(value, dict):
            items = [
                f"{w()}{self.string(k)}{w()}:{w()}{self.value(v)}{w()}" for k, v in value.items()
            ]
            return "{" + ",".join(items) + w() + "}"
        if isinstance(value, list):
            return "[" + ",".join(f"{w()}{self.value(v)}{w()}" for v in value) + w() + "]"
        if isinstance(value, str):
            return self.string(value)
        return json.dumps(value)


_ODD_KEYS = ["bogus", "x", "Intake", "request-id", "é", "k\u00e9y\U0001f600", 'q"uote', "a\\b", ""]
_SCALARS: list[Any] = [0, -1, 3.25, -0.5e-7, 12e10, True, False, None, "", "text", 'ü\n\t"', []]


def _random_value(schema: Schema, ref: Ref, rng: random.Random, depth: int, unknown: float) -> Any:
    if ref is None or depth > 6:
        return rng.choice(_SCALARS)
    if isinstance(ref, MapOf):
        return {
            f"k{i}": _random_value(schema, ref.values, rng, depth + 1, unknown)
            for i in range(rng.randint(0, 2))
        }
    keys = schema.messages[ref].keys
    if rng.random() < 0.15:  # a list of messages (repeated fields, or a wrong shape)
        return [
            _random_value(schema, ref, rng, depth + 1, unknown) for _ in range(rng.randint(0, 3))
        ]
    obj: dict[str, Any] = {}
    for key in rng.sample(sorted(keys), k=min(len(keys), rng.randint(0, 4))):
        obj[key] = _random_value(schema, keys[key], rng, depth + 1, unknown)
    if rng.random() < unknown:
        obj[rng.choice(_ODD_KEYS)] = rng.choice(_SCALARS)
    return obj


def _strictly_valid(text: str) -> bool:
    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=no_constants)
    except ValueError:
        return False
    return True


def _mutate(text: str, rng: random.Random) -> str:
    i = rng.randrange(len(text) + 1)
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + rng.choice(list('{}[],:"\\ \x01tfn-.e0x')) + text[i:]
    return text[:i] + text[i:][::-1][:3] + text[i + 3 :]


async def test_random_bodies_match_the_reference(probe: Probe, http: aiohttp.ClientSession) -> None:
    schema = build_schema(descriptor_set_from_modules(), [CONSULT_SERVICE])
    rng = random.Random(20240601)
    writer = _Writer(rng)
    counts = {"passed": 0, "unknown": 0, "malformed": 0}
    for _ in range(400):
        value = _random_value(schema, CREATE_REQUEST, rng, 0, unknown=0.08)
        text = writer.value(value)
        assert json.loads(text) == value
        expected_field = _reference(schema, CREATE_REQUEST, value)
        expected = PASSED if expected_field is None else f"UNKNOWN_FIELD:{expected_field}"
        got = await _verdict(http, probe.url + CREATE, text)
        assert got == expected, text
        counts["passed" if expected == PASSED else "unknown"] += 1

        broken = _mutate(text, rng)
        verdict = await _verdict(http, probe.url + CREATE, broken)
        if _strictly_valid(broken):
            field = _reference(schema, CREATE_REQUEST, json.loads(broken))
            assert verdict == (PASSED if field is None else f"UNKNOWN_FIELD:{field}"), broken
        elif broken.strip():
            # Never passed on: malformed, or an unknown key found before the fault.
            assert verdict == "MALFORMED_JSON" or verdict.startswith("UNKNOWN_FIELD:"), broken
            counts["malformed"] += 1
    assert min(counts.values()) > 40, counts


# --- limits and failure modes -------------------------------------------------------------------


async def test_nesting_is_capped_at_100_levels(probe: Probe, http: aiohttp.ClientSession) -> None:
    def nested(levels: int) -> str:
        return '{"profile": ' + "[" * levels + "]" * levels + "}"

    assert await _verdict(http, probe.url + CREATE, nested(99)) == PASSED
    assert await _verdict(http, probe.url + CREATE, nested(100)) == "JSON_TOO_DEEP"
    assert await _verdict(http, probe.url + CREATE, "[" * 200_000) == "JSON_TOO_DEEP"


async def test_answers_stay_valid_json_whatever_the_key(
    probe: Probe, http: aiohttp.ClientSession
) -> None:
    # invalid UTF-8 and control characters in a key; a key too long to echo in full
    status, _, text = await _send(http, probe.url + CREATE, b'{"a\xff\xc3(\\u0001": 1}')
    assert status == 400
    assert json.loads(text)["details"][0]["metadata"]["field"] == "a\ufffd\ufffd(\x01"
    long_key = "k" * 100_000
    verdict = await _verdict(http, probe.url + CREATE, json.dumps({long_key: 1}))
    assert verdict == f"UNKNOWN_FIELD:{'k' * 200}..."


@pytest.mark.parametrize(
    "shape",
    ["big-valid", "escapes", "long-number", "many-keys", "wide-arrays"],
)
async def test_time_is_linear_in_the_body(
    probe: Probe, http: aiohttp.ClientSession, shape: str
) -> None:
    """Bodies near the 1 MiB limit, including the scanner's worst cases, take milliseconds."""
    size = 1_000_000
    bodies = {
        "big-valid": json.dumps(
            {"intake": {"history": {"allergies": {"entries": ["penicillin"] * (size // 14)}}}}
        ),
        "escapes": '{"profile": "' + "\\\\" * (size // 2 - 10) + '"}',
        "long-number": '{"max_rounds": ' + "1" * (size - 20) + "}",
        "many-keys": "{" + ",".join(['"profile": 1'] * (size // 13)) + "}",
        "wide-arrays": '{"profile": [' + ",".join(["[]"] * (size // 3 - 5)) + "]}",
    }
    body = bodies[shape]
    assert len(body) < 1024 * 1024
    started = time.perf_counter()
    assert await _verdict(http, probe.url + CREATE, body) == PASSED
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "sabotage",
    [
        # the scanner raises (comparing a depth with nil)
        ("local MAX_DEPTH = 100", "local MAX_DEPTH = nil"),
        # the routing raises (a malformed Lua pattern)
        ('pattern = "^/v1/consultations$"', 'pattern = "^/v1/consultations%"'),
    ],
    ids=["scanner", "routing"],
)
async def test_a_failing_script_fails_closed(
    tmp_path: Path, http: aiohttp.ClientSession, sabotage: tuple[str, str]
) -> None:
    """Envoy lets a request through when a Lua script raises; this check must not."""
    script = generate(descriptor_set_from_modules(), [CONSULT_SERVICE])
    broken = script.replace(*sabotage, 1)
    assert broken != script
    async with running_strict_json_probe(tmp_path, script=broken) as broken_probe:
        status, _, text = await _send(http, broken_probe.url + CREATE, '{"intake": {}}')
        assert status == 500
        error = json.loads(text)
        assert error["code"] == 13
        assert error["details"][0]["reason"] == "STRICT_JSON_FAILED"
    assert "strict JSON check failed" in broken_probe.envoy.log_tail()
