"""Model profiles per agent: read from one TOML file, overridden by UTIMESH_LLM_* variables,
validated at start (fail fast), and shown with secrets masked."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from utimesh.llm.types import ConfigError

ENV_PREFIX = "UTIMESH_LLM_"
CONFIG_ENV = "UTIMESH_LLM_CONFIG"
ALL_AGENTS = "all"  # UTIMESH_LLM_ALL_<FIELD> applies to every agent; agent-specific wins
DEFAULT_AGENT = "default"
STANDARD_AGENTS = ("doctor", "pharmacist", "evidence", "report")


class ModelProfile(BaseModel):
    """How one agent talks to its model. The API key itself is never configuration: only the
    name of the environment variable that holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["offline", "openai-compatible"] = "offline"
    model: str = Field(default="offline-rules", min_length=1)
    base_url: str | None = None  # e.g. http://127.0.0.1:8080/v1 ; None = OpenAI's own endpoint
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_output_tokens: int = Field(default=1024, gt=0)
    timeout_s: float = Field(default=20.0, gt=0.0)  # per HTTP attempt
    # The one retry layer for 429/5xx/connection errors (the openai client's own is off).
    retries: int = Field(default=2, ge=0, le=10)
    reasks: int = Field(default=2, ge=0, le=5)  # extra attempts when the output does not validate
    input_cost_per_1k: float = Field(default=0.0, ge=0.0)  # USD per 1000 input tokens
    output_cost_per_1k: float = Field(default=0.0, ge=0.0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8080/v1")
        return value.strip().rstrip("/")


class LLMSettings(BaseModel):
    """The effective profile of every agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agents: dict[str, ModelProfile]
    source: str = ""  # where the file came from, for display

    def for_agent(self, agent: str) -> ModelProfile:
        """The agent's profile; an unknown agent gets the "default" entry, else the built-in
        offline profile."""
        profile = self.agents.get(agent) or self.agents.get(DEFAULT_AGENT)
        return profile if profile is not None else ModelProfile()


_FIELDS = tuple(ModelProfile.model_fields)
# Longest first so that e.g. "..._API_KEY_ENV" is never mistaken for a shorter field name.
_ENV_SUFFIXES = sorted(((f"_{name.upper()}", name) for name in _FIELDS), key=lambda s: -len(s[0]))


def load_llm_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> LLMSettings:
    """Read the profiles (`path`, else $UTIMESH_LLM_CONFIG, else the packaged models.toml) and
    apply the environment overrides UTIMESH_LLM_<AGENT>_<FIELD> and UTIMESH_LLM_ALL_<FIELD>.

    Any bad value raises ConfigError naming the file key or variable. Blocking file I/O: call
    it at start, in the composition root, not on a running event loop's hot path."""
    env = os.environ if environ is None else environ
    raw, source = _read_file(path, env)
    file_agents = _agents_table(raw, source)

    # Each agent's field values with where they came from, so errors can name the key.
    values: dict[str, dict[str, tuple[Any, str]]] = {
        agent: {
            field: (value, f"{source}: agents.{agent}.{field}") for field, value in table.items()
        }
        for agent, table in file_agents.items()
    }
    for agent in STANDARD_AGENTS:
        if agent not in values:
            # A missing standard agent inherits the file's "default" entry when there is one.
            values[agent] = dict(values.get(DEFAULT_AGENT, {}))

    overrides = _env_overrides(env, known_agents=set(values) | {DEFAULT_AGENT})
    if ALL_AGENTS in overrides and DEFAULT_AGENT not in values:
        values[DEFAULT_AGENT] = {}  # so that agents nobody configured get the ALL overrides too
    for agent, fields in values.items():
        fields.update(overrides.get(ALL_AGENTS, {}))
        fields.update(overrides.get(agent, {}))

    profiles = {agent: _validate(agent, fields) for agent, fields in sorted(values.items())}
    return LLMSettings(agents=profiles, source=source)


def _read_file(path: Path | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    try:
        if path is None:
            text = resources.files("utimesh.llm").joinpath("models.toml").read_text("utf-8")
            source = "utimesh/llm/models.toml (packaged)"
        else:
            text = path.read_text("utf-8")
            source = str(path)
    except OSError as exc:
        raise ConfigError(f"cannot read LLM config {path}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"LLM config {source} is not valid TOML: {exc}") from exc


def _agents_table(raw: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    unknown = set(raw) - {"agents"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level keys {sorted(unknown)}; expected [agents.<name>]"
        )
    agents = raw.get("agents", {})
    if not isinstance(agents, dict) or not all(isinstance(t, dict) for t in agents.values()):
        raise ConfigError(f"{source}: [agents] must hold one table per agent, e.g. [agents.doctor]")
    if ALL_AGENTS in agents:
        raise ConfigError(f"{source}: 'all' is reserved for UTIMESH_LLM_ALL_* overrides")
    return {str(name).lower(): dict(table) for name, table in agents.items()}


def _env_overrides(
    env: Mapping[str, str], *, known_agents: set[str]
) -> dict[str, dict[str, tuple[Any, str]]]:
    overrides: dict[str, dict[str, tuple[Any, str]]] = {}
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        rest = key[len(ENV_PREFIX) :]
        match = next(
            ((s, f) for s, f in _ENV_SUFFIXES if rest.endswith(s) and len(rest) > len(s)), None
        )
        if match is None:
            # Not <AGENT>_<FIELD>: another component's UTIMESH_LLM_* knob (cache, ...).
            continue
        suffix, field = match
        agent = rest[: -len(suffix)].lower()
        if agent != ALL_AGENTS and agent not in known_agents:
            raise ConfigError(
                f"{key}: unknown agent {agent!r}; known agents: {sorted(known_agents)} or ALL"
            )
        value: Any = env[key]
        if field == "base_url" and value.strip() == "":
            value = None  # an empty variable means "OpenAI's own endpoint", not a bad URL
        overrides.setdefault(agent, {})[field] = (value, key)
    return overrides


def _validate(agent: str, fields: Mapping[str, tuple[Any, str]]) -> ModelProfile:
    try:
        return ModelProfile.model_validate({name: value for name, (value, _) in fields.items()})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            where = fields[name][1] if name in fields else f"agents.{agent}.{name}"
            problems.append(f"{where}: {error['msg']}{_shown_input(name, error.get('input'))}")
        raise ConfigError(
            f"invalid LLM settings for agent {agent!r}: " + "; ".join(problems),
            metadata={"agent": agent},
        ) from exc


def _shown_input(field: str, value: object) -> str:
    # A key pasted into api_key_env by mistake must not end up in a log or a terminal.
    if field == "api_key_env":
        return ""
    if field == "base_url" and isinstance(value, str):
        value = mask_url(value)
    return f" (got {value!r})"


def masked(settings: LLMSettings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The effective settings for display: the API key's variable name and whether it is set,
    never the key; credentials in a base URL are masked."""
    env = os.environ if environ is None else environ
    agents: dict[str, Any] = {}
    for name, profile in settings.agents.items():
        shown = profile.model_dump()
        shown["base_url"] = mask_url(profile.base_url)
        shown["api_key"] = "set" if env.get(profile.api_key_env) else "not set"
        agents[name] = shown
    return {"source": settings.source, "agents": agents}


def mask_url(url: str | None) -> str | None:
    """`url` with any user:password and query values replaced by ***, for logs and display."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # unparseable: show nothing rather than risk a credential
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{pair.split('=', 1)[0]}=***" if "=" in pair else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
