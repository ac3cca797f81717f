"""The REST edge client against a scripted HTTP transport: the requests it sends, and every
kind of failure turned into a clear EdgeError that never holds the token."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from utimesh.assist.edge import DevTokens, EdgeClient, EdgeError, StaticToken, consultation_id

TOKEN = "header.payload-SECRET-7731.signature"
URL = "http://127.0.0.1:8080"

Handler = Callable[[httpx2.Request], httpx2.Response]


def client(handler: Handler, **kwargs: Any) -> EdgeClient:
    return EdgeClient(URL, StaticToken(TOKEN), transport=httpx2.MockTransport(handler), **kwargs)


def status_body(code: int, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"code": code, "message": message, "details": list(details)}


async def failure(handler: Handler) -> EdgeError:
    async with client(handler) as edge:
        with pytest.raises(EdgeError) as caught:
            await edge.get_consultation("consultations/abc")
    assert TOKEN not in str(caught.value)
    return caught.value


async def test_create_sends_the_intake_with_the_bearer_token() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"consultation": {"name": "consultations/1"}})

    async with client(handler) as edge:
        got = await edge.create_consultation({"age": 30}, "CA-AB")
        await edge.create_consultation({"age": 30}, "CA-AB")
    assert got == {"name": "consultations/1"}
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/v1/consultations"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request.content)
    assert body["intake"] == {"age": 30} and body["profile"] == "CA-AB"
    uuid.UUID(body["request_id"])
    assert body["request_id"] != json.loads(seen[1].content)["request_id"]


async def test_get_and_ask_use_the_resource_name() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx2.Response(200, json={"consultation": {"name": "consultations/abc"}})
        return httpx2.Response(200, json={"kind": "ANSWERED"})

    async with client(handler) as edge:
        await edge.get_consultation("consultations/abc")
        await edge.ask("abc", "Why?")
    assert seen[0].url.raw_path == b"/v1/consultations/abc"
    assert seen[1].url.raw_path == b"/v1/consultations/abc:ask"
    assert json.loads(seen[1].content) == {"question": "Why?"}


@pytest.mark.parametrize(
    "name", ["", "consultations/", "consultations/a/b", "../x", "a?b", "a b", "consultations/%2F"]
)
def test_names_that_are_not_consultations_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="consultations/"):
        consultation_id(name)


def test_a_bare_id_is_accepted() -> None:
    assert consultation_id(" 3f6e-1 ") == "3f6e-1"
    assert consultation_id("consultations/3f6e-1") == "3f6e-1"


async def test_400_names_the_fields_in_patient_terms() -> None:
    body = status_body(
        3,
        "the intake has 2 invalid field(s)",
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_INTAKE"},
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {"field": "intake.age", "description": "must be between 0 and 120 years"},
                {
                    "field": "intake.history.recent_antibiotics.entries[0].days_ago",
                    "description": "must be 0 or more days",
                },
            ],
        },
    )
    err = await failure(lambda _: httpx2.Response(400, json=body))
    assert err.status == 400 and err.reason == "INVALID_INTAKE"
    assert str(err) == (
        "invalid request (HTTP 400, INVALID_INTAKE): intake.age: must be between 0 and 120 "
        "years; intake.history.recent_antibiotics[0].days_ago: must be 0 or more days"
    )


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (401, status_body(16, "Jwt is expired"), {}, "unauthorized (HTTP 401): Jwt is expired."),
        (403, status_body(7, "RBAC: access denied"), {}, "forbidden (HTTP 403): RBAC"),
        (404, status_body(5, "no consultation named 'x'"), {}, "not found (HTTP 404)"),
        (413, status_body(8, "Payload Too Large"), {}, "request too large (HTTP 413)"),
        (429, status_body(8, "Too Many Requests"), {"retry-after": "60"}, "Retry after 60 s."),
        (503, status_body(14, "upstream connect error"), {}, "unavailable (HTTP 503)"),
        (504, status_body(4, "upstream request timeout"), {}, "timed out (HTTP 504)"),
    ],
)
async def test_error_statuses_say_what_happened(
    status: int, body: dict[str, Any], headers: dict[str, str], expected: str
) -> None:
    err = await failure(lambda _: httpx2.Response(status, json=body, headers=headers))
    assert err.status == status
    assert expected in str(err)


async def test_a_token_echoed_by_the_server_is_redacted() -> None:
    body = status_body(16, f"Jwt {TOKEN} is not valid")
    err = await failure(lambda _: httpx2.Response(401, json=body))
    assert "unauthorized" in str(err) and "<redacted>" in str(err)


async def test_a_non_json_error_page_is_reduced_to_its_status() -> None:
    err = await failure(lambda _: httpx2.Response(502, text="<html>Bad gateway</html>"))
    assert str(err) == "server error (HTTP 502): Bad Gateway."


async def test_redirects_are_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return httpx2.Response(302, headers={"location": "https://elsewhere.example/"})

    err = await failure(handler)
    assert err.status == 302 and len(seen) == 1


async def test_a_timeout_and_a_refused_connection_are_explained() -> None:
    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    def refused(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    assert str(await failure(slow)) == f"no answer from the edge at {URL} within 30 s"
    assert "cannot reach the edge" in str(await failure(refused))


async def test_a_200_that_is_not_a_consultation_is_an_error() -> None:
    err = await failure(lambda _: httpx2.Response(200, text="not json"))
    assert "not JSON" in str(err)
    err = await failure(lambda _: httpx2.Response(200, json={"other": 1}))
    assert "'consultation'" in str(err)


async def test_a_real_refused_port_is_explained() -> None:
    async with EdgeClient("http://127.0.0.1:1", StaticToken(TOKEN), connect_timeout_s=2) as edge:
        with pytest.raises(EdgeError, match=r"cannot reach the edge at http://127\.0\.0\.1:1"):
            await edge.get_consultation("consultations/abc")


def test_bad_urls_and_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        EdgeClient("ftp://x", StaticToken(TOKEN))
    with pytest.raises(ValueError, match="empty"):
        StaticToken("  ")
    assert TOKEN not in repr(StaticToken(TOKEN))


def test_dev_tokens_are_minted_and_renewed_before_expiry(tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    tokens = DevTokens(
        tmp_path, ["clinician", "clinician"], ttl_s=600, renew_before_s=60, clock=lambda: now[0]
    )
    first = tokens.token()
    claims = jwt.decode(first, options={"verify_signature": False})
    assert claims["roles"] == ["clinician"] and claims["aud"] == "utimesh-edge"
    assert claims["exp"] - claims["iat"] == 600
    now[0] += 500
    assert tokens.token() == first  # still 100 s left
    now[0] += 50
    assert tokens.token() != first  # within the renewal margin: a new one
    assert "eyJ" not in repr(tokens)
    with pytest.raises(ValueError, match="role"):
        DevTokens(tmp_path, [])
