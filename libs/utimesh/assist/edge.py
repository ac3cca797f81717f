"""A small async client of the utimesh REST edge (gateway/openapi.yaml), and bearer tokens.

One `httpx2.AsyncClient` per `EdgeClient`, reused for every call, with a timeout on each call.
Every failure becomes an `EdgeError` whose text says what went wrong in terms a person (or a
model) can act on: the field and reason of a 400, unauthorized, forbidden, not found, rate
limited, unavailable. The bearer token never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote, urlsplit

import httpx2

from utimesh.assist.patient import patient_path

__all__ = [
    "DevTokens",
    "EdgeClient",
    "EdgeError",
    "StaticToken",
    "TokenSource",
    "consultation_id",
]

#: The consultation id part of a name: what the service issues (UUIDs), nothing a path could
#: be bent with.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")

# What each status means at this edge (gateway/openapi.yaml): a label, and what to do about it.
_STATUS_TEXT = {
    400: ("invalid request", ""),
    401: (
        "unauthorized",
        "The edge did not accept the bearer token (missing, invalid or expired).",
    ),
    403: ("forbidden", "The token's roles do not allow this operation."),
    404: ("not found", ""),
    413: ("request too large", "The edge limits request bodies."),
    429: ("rate limited", "Too many requests from this client."),
    503: ("unavailable", "The consult service cannot be reached; try again later."),
    504: ("timed out", "The consultation did not finish within the edge's timeout."),
}


class TokenSource(Protocol):
    """Where bearer tokens come from; asked before every call."""

    def token(self) -> str:
        """A bearer token valid now."""
        ...


class StaticToken:
    """A token given from outside (the identity provider's), e.g. read from an env var."""

    def __init__(self, value: str) -> None:
        if not value.strip():
            raise ValueError("the bearer token is empty")
        self._value = value.strip()

    def token(self) -> str:
        """The token (without surrounding whitespace)."""
        return self._value

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class DevTokens:
    """Dev tokens minted with the local dev issuer in `state_dir` (the key pair the dev edge
    trusts), re-minted shortly before they expire. For local stacks and tests only."""

    def __init__(
        self,
        state_dir: Path,
        roles: Sequence[str],
        *,
        sub: str = "mcp-dev",
        ttl_s: int = 3600,
        renew_before_s: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from gateway.jwt_dev import ensure_dev_issuer

        if not roles:
            raise ValueError("a dev token needs at least one role")
        self._issuer = ensure_dev_issuer(state_dir)
        self._roles = list(dict.fromkeys(roles))
        self._sub = sub
        self._ttl_s = ttl_s
        self._renew_before_s = min(renew_before_s, ttl_s // 2)
        self._clock = clock
        self._value = ""
        self._expires_at = 0.0

    def token(self) -> str:
        """The current dev token, minting a new one when it is close to expiry."""
        now = self._clock()
        if now >= self._expires_at - self._renew_before_s:
            self._value = self._issuer.mint(self._sub, self._roles, self._ttl_s, issued_at=now)
            self._expires_at = now + self._ttl_s
        return self._value

    def __repr__(self) -> str:
        return f"DevTokens(roles={self._roles!r}, sub={self._sub!r})"


class EdgeError(Exception):
    """A call to the edge that failed. `status` is the HTTP status (0: no answer at all);
    `violations` are the (field, description) pairs of a 400, in patient-format paths."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        violations: Sequence[tuple[str, str]] = (),
        retry_after: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.reason = reason
        self.violations = tuple(violations)
        self.retry_after = retry_after
        super().__init__(self._text())

    def _text(self) -> str:
        if self.status == 0:
            return self.message
        label, hint = _STATUS_TEXT.get(
            self.status, ("edge error" if self.status < 500 else "server error", "")
        )
        text = f"{label} (HTTP {self.status}" + (f", {self.reason}" if self.reason else "") + ")"
        if self.violations and (self.status == 400 or not self.message):
            text += ": " + "; ".join(f"{f}: {d}" for f, d in self.violations)
        elif self.message:
            text += f": {self.message.rstrip('.')}."
        if hint:
            text += f" {hint}"
        if self.retry_after:
            text += f" Retry after {self.retry_after} s."
        return text


def consultation_id(name: str) -> str:
    """The id of a consultation name (`consultations/{id}`; a bare id is accepted too).
    Raises ValueError when it is not one."""
    cid = name.strip().removeprefix("consultations/")
    if not _ID.match(cid):
        raise ValueError(
            "must be a consultation name like 'consultations/{id}', as consult_patient returned it"
        )
    return cid


def _redact(text: str, token: str) -> str:
    return text.replace(token, "<redacted>") if token else text


def _error_from(response: httpx2.Response, token: str) -> EdgeError:
    """An EdgeError from an error response: google.rpc.Status JSON when the edge or the service
    answered, anything else (a proxy's HTML) reduced to the status."""
    message, reason = response.reason_phrase, ""
    violations: list[tuple[str, str]] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or message)
        for detail in body.get("details") or []:
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.ErrorInfo"):
                reason = str(detail.get("reason") or "")
            elif kind.endswith("google.rpc.BadRequest"):
                violations += [
                    (patient_path(str(v.get("field", ""))), str(v.get("description", "")))
                    for v in detail.get("field_violations") or []
                    if isinstance(v, dict)
                ]
    return EdgeError(
        response.status_code,
        _redact(message, token),
        reason=reason,
        violations=[(f, _redact(d, token)) for f, d in violations],
        retry_after=response.headers.get("retry-after", ""),
    )


class EdgeClient:
    """The three REST calls the assistant needs, through one reused HTTP client.

    Use as an async context manager (closes the client). `timeout_s` bounds a consultation or
    a question (the edge's own unary timeout is 90 s by default); a read is bounded by
    `read_timeout_s`; connecting by `connect_timeout_s`.
    """

    def __init__(
        self,
        url: str,
        tokens: TokenSource,
        *,
        timeout_s: float = 120.0,
        read_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the edge URL must be http(s)://host[:port], not {url!r}")
        self.url = url.rstrip("/")
        self._tokens = tokens
        self._timeout_s = timeout_s
        self._read_timeout_s = read_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx2.AsyncClient(
            base_url=self.url,
            timeout=httpx2.Timeout(read_timeout_s, connect=connect_timeout_s),
            headers={"accept": "application/json", "user-agent": "utimesh-mcp"},
            follow_redirects=False,  # never replay the bearer token to another location
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        await self._client.aclose()

    async def create_consultation(self, intake: dict[str, Any], profile: str) -> dict[str, Any]:
        """POST /v1/consultations: run a consultation to the end; the Consultation JSON.
        A fresh request_id makes a retry of this request safe (AIP-155)."""
        body = {"intake": intake, "profile": profile, "request_id": str(uuid.uuid4())}
        answer = await self._call("POST", "/v1/consultations", body, self._timeout_s)
        return _member(answer, "consultation")

    async def get_consultation(self, name: str) -> dict[str, Any]:
        """GET /v1/consultations/{id}: the stored Consultation JSON."""
        path = f"/v1/consultations/{quote(consultation_id(name), safe='')}"
        return _member(await self._call("GET", path, None, self._read_timeout_s), "consultation")

    async def ask(self, name: str, question: str) -> dict[str, Any]:
        """POST /v1/consultations/{id}:ask: the AskConsultationResponse JSON."""
        path = f"/v1/consultations/{quote(consultation_id(name), safe='')}:ask"
        return await self._call("POST", path, {"question": question}, self._timeout_s)

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float
    ) -> dict[str, Any]:
        token = self._tokens.token()
        try:
            response = await self._client.request(
                method,
                path,
                json=body,
                headers={"authorization": f"Bearer {token}"},
                timeout=httpx2.Timeout(timeout_s, connect=self._connect_timeout_s),
            )
        except httpx2.TimeoutException:
            raise EdgeError(
                0, f"no answer from the edge at {self.url} within {timeout_s:g} s"
            ) from None
        except httpx2.TransportError as exc:
            detail = _redact(str(exc), token) or type(exc).__name__
            raise EdgeError(0, f"cannot reach the edge at {self.url}: {detail}") from None
        if response.status_code != 200:
            raise _error_from(response, token)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise EdgeError(0, f"the edge at {self.url} answered {method} with something not JSON")
        return answer


def _member(answer: dict[str, Any], key: str) -> dict[str, Any]:
    value = answer.get(key)
    if not isinstance(value, dict):
        raise EdgeError(0, f"the edge's answer has no {key!r} object")
    return value
