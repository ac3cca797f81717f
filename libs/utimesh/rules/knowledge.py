"""Loads and checks the versioned clinical knowledge: profiles, dictionaries, interactions,
drug exclusions, regimens, the rule catalogue and its sources (files under `data/`).

Shared by the triage engine and the pharmacist: one source of truth. Loading is explicit
(`load_knowledge()`), never at import time; every inconsistency fails loudly at load.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from utimesh.rules.matching import TermIndex
from utimesh.rules.model import Agent, CourseDuration, DoseComponent, Outcome, Regimen

# Bump when the engine's interpretation of the data changes; part of the ruleset hash.
ENGINE_VERSION = "1.0.0"


class KnowledgeError(ValueError):
    """The clinical knowledge files are inconsistent (a configuration error)."""


class UnknownProfileError(KeyError):
    """No profile with that id: a configuration error, never a silent default."""

    def __init__(self, profile: str, available: tuple[str, ...]) -> None:
        super().__init__(profile)
        self.profile = profile
        self.available = available

    def __str__(self) -> str:
        return f"unknown profile {self.profile!r}; available: {', '.join(self.available)}"


def _off_to_none(value: object) -> object:
    return None if value == "off" else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileParameters(_Strict):
    """Profile parameters, named exactly as RULES.md §3."""

    URGENCY_FREQUENCY_ONE_ITEM: bool
    SX_MIN_ITEMS: int = Field(ge=1)
    SYMPTOM_MAX_DAYS: int = Field(ge=0)
    MIN_AGE: int = Field(ge=0, le=120)
    ADOLESCENT_MAX_AGE: int = Field(ge=0, le=120)
    FOS_MIN_AGE: int = Field(ge=0, le=120)
    OLDER_ADULT_AGE: int = Field(ge=0, le=120)
    RENAL_REFER_BELOW: float = Field(ge=0)
    NIT_EXCLUDE_BELOW: float = Field(ge=0)
    NIT_WARN_BELOW: float = Field(ge=0)
    TMP_AGENTS_EXCLUDE_BELOW: float = Field(ge=0)
    RAS_HIGH_RISK_EGFR_BELOW: float = Field(ge=0)
    TMP_CLASS_EXCLUDE_DAYS: int = Field(ge=0)
    SXT_ANY_ABX_EXCLUDE_DAYS: Annotated[int | None, BeforeValidator(_off_to_none)] = Field(ge=0)
    ABX_WARN_DAYS: int = Field(ge=0)
    RELAPSE_DAYS: int = Field(ge=0)
    RECUR_SHORT_DAYS: int = Field(ge=0)
    RECUR_SHORT_COUNT: int = Field(ge=1)
    RECUR_LONG_DAYS: int = Field(ge=0)
    RECUR_LONG_COUNT: int = Field(ge=1)
    FU_FAILURE_HOURS: float = Field(ge=0)
    DRUG_ORDER: tuple[Agent, ...]

    @model_validator(mode="after")
    def _load_time_checks(self) -> ProfileParameters:
        # RULES.md §3 load-time checks.
        if self.NIT_EXCLUDE_BELOW > self.NIT_WARN_BELOW:
            raise ValueError("NIT_EXCLUDE_BELOW must be <= NIT_WARN_BELOW")
        if sorted(self.DRUG_ORDER) != sorted(Agent):
            raise ValueError(f"DRUG_ORDER must hold each agent once: {list(self.DRUG_ORDER)}")
        return self

    def number(self, name: str) -> float:
        """A numeric parameter by its RULES.md name (used by data-driven predicates)."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise KnowledgeError(f"parameter {name} is not a number")
        return float(value)

    def as_text(self) -> list[tuple[str, str]]:
        """(name, value) pairs for display, in RULES.md order."""
        out: list[tuple[str, str]] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                text = "off"
            elif isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, float) and value.is_integer():
                text = str(int(value))
            else:
                text = str(value)
            out.append((name, text))
        return out


class ProfileFile(_Strict):
    id: str
    version: str
    title: str
    default: bool = False
    parameters: ProfileParameters


class RuleDef(_Strict):
    """One rule of the catalogue (rules.toml, or an interaction row)."""

    id: str
    title: str
    stage: str
    outcome: Outcome
    agents: tuple[Agent, ...] = ()
    text: str
    sources: tuple[str, ...]
    decision_ref: str = ""
    confirm: bool = False


class SourceDef(_Strict):
    key: str
    tag: str
    title: str
    organisation: str = ""
    year: int = 0
    citation: str
    url: str = ""
    doi: str = ""
    jurisdiction: str = ""
    verified: bool = True


class DictionaryGroup(_Strict):
    title: str
    terms: tuple[str, ...]


class DictionariesFile(_Strict):
    version: str
    groups: dict[str, DictionaryGroup]


RiskFactor = Literal["older_adult", "egfr_below_ras_risk", "potassium_supplement"]


class InteractionDef(_Strict):
    id: str
    agents: tuple[Agent, ...]
    drugs_all: tuple[str, ...]
    drugs_none: tuple[str, ...] = ()
    risk: Literal["any", "none"] | None = None
    risk_factors: tuple[RiskFactor, ...] = ()
    severity: Literal["minor", "moderate", "major", "contraindicated"]
    action: Literal["AVOID", "MONITOR"]
    title: str
    mechanism: str
    text: str
    sources: tuple[str, ...]


class InteractionInfo(_Strict):
    agents: tuple[Agent, ...]
    drugs: tuple[str, ...]
    severity: str
    text: str
    sources: tuple[str, ...]


class InteractionsFile(_Strict):
    version: str
    interaction: tuple[InteractionDef, ...]
    info: tuple[InteractionInfo, ...] = ()


class AntibioticWithin(_Strict):
    group: str
    days: str


class ExclusionDef(_Strict):
    """A data-driven drug exclusion; exactly one predicate is set."""

    id: str
    agent: Agent
    allergy_any: tuple[str, ...] | None = None
    egfr_below: str | None = None
    flag: str | None = None
    age_below: str | None = None
    antibiotic_within: AntibioticWithin | None = None
    any_antibiotic_within: str | None = None

    @model_validator(mode="after")
    def _one_predicate(self) -> ExclusionDef:
        kinds = [
            k
            for k in (
                "allergy_any",
                "egfr_below",
                "flag",
                "age_below",
                "antibiotic_within",
                "any_antibiotic_within",
            )
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(f"{self.id}: exactly one predicate is needed, got {kinds}")
        return self


class ExclusionsFile(_Strict):
    version: str
    exclusion: tuple[ExclusionDef, ...]


class DoseDef(_Strict):
    ingredient: str
    amount: float
    unit: str


class DurationDef(_Strict):
    amount: int
    unit: str


class RegimenDef(_Strict):
    agent: Agent
    rule_id: str
    drug: str
    dose: tuple[DoseDef, ...]
    dose_form: str
    route: str
    frequency: str
    duration: DurationDef
    counselling: tuple[str, ...]

    def to_regimen(self) -> Regimen:
        return Regimen(
            agent=self.agent,
            drug=self.drug,
            dose=tuple(DoseComponent(d.ingredient, d.amount, d.unit) for d in self.dose),
            dose_form=self.dose_form,
            route=self.route,
            frequency=self.frequency,
            duration=CourseDuration(self.duration.amount, self.duration.unit),
        )


class RegimensFile(_Strict):
    regimen: tuple[RegimenDef, ...]


class RulesFile(_Strict):
    rule: tuple[RuleDef, ...]


class SourcesFile(_Strict):
    source: tuple[SourceDef, ...]


@dataclass(frozen=True)
class Ruleset:
    """Everything the engine needs for one profile, checked and hashed."""

    profile: ProfileFile
    rules: Mapping[str, RuleDef]
    sources: Mapping[str, SourceDef]
    dictionaries: DictionariesFile
    interactions: tuple[InteractionDef, ...]
    interaction_info: tuple[InteractionInfo, ...]
    exclusions: tuple[ExclusionDef, ...]
    regimens: Mapping[Agent, RegimenDef]
    content_hash: str

    @property
    def id(self) -> str:
        return self.profile.id

    @property
    def version(self) -> str:
        return self.profile.version

    @property
    def params(self) -> ProfileParameters:
        return self.profile.parameters

    @cached_property
    def term_index(self) -> TermIndex:
        return TermIndex({name: g.terms for name, g in self.dictionaries.groups.items()})

    # Per-agent views, computed once: the engine runs these on every assessment.
    @cached_property
    def exclusions_by_agent(self) -> Mapping[Agent, tuple[ExclusionDef, ...]]:
        return {a: tuple(ex for ex in self.exclusions if ex.agent is a) for a in Agent}

    @cached_property
    def interactions_by_agent(self) -> Mapping[Agent, tuple[InteractionDef, ...]]:
        return {a: tuple(row for row in self.interactions if a in row.agents) for a in Agent}

    @cached_property
    def regimen_values(self) -> Mapping[Agent, Regimen]:
        return {a: r.to_regimen() for a, r in self.regimens.items()}


@dataclass(frozen=True)
class Knowledge:
    """All profiles, sharing one catalogue and one set of dictionaries."""

    rulesets: Mapping[str, Ruleset]
    default_profile: str

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(sorted(self.rulesets))

    def ruleset(self, profile: str | None = None) -> Ruleset:
        """The ruleset of `profile` (None or "" = the default). Unknown ids raise."""
        key = profile or self.default_profile
        try:
            return self.rulesets[key]
        except KeyError:
            raise UnknownProfileError(key, self.profiles) from None


_M = TypeVar("_M", bound=BaseModel)


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _parse(model: type[_M], path: Path) -> _M:
    try:
        return model.model_validate(_read_toml(path))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise KnowledgeError(f"{path.name}: {exc}") from exc


def default_data_dir() -> Path:
    return Path(str(resources.files("utimesh.rules") / "data"))


def load_knowledge(data_dir: Path | None = None) -> Knowledge:
    """Load every data file, check cross-references, and hash each profile's ruleset."""
    data = data_dir or default_data_dir()
    rules_file = _parse(RulesFile, data / "rules.toml")
    sources_file = _parse(SourcesFile, data / "sources.toml")
    dictionaries = _parse(DictionariesFile, data / "dictionaries.toml")
    interactions = _parse(InteractionsFile, data / "interactions.toml")
    exclusions = _parse(ExclusionsFile, data / "exclusions.toml")
    regimens_file = _parse(RegimensFile, data / "regimens.toml")
    profiles = [_parse(ProfileFile, p) for p in sorted((data / "profiles").glob("*.toml"))]

    sources = {s.key: s for s in sources_file.source}
    rules: dict[str, RuleDef] = {}
    for rule in rules_file.rule:
        if rule.id in rules:
            raise KnowledgeError(f"rule {rule.id} is defined twice")
        rules[rule.id] = rule
    for row in interactions.interaction:
        if row.id in rules:
            raise KnowledgeError(f"interaction {row.id} clashes with a rule id")
        rules[row.id] = RuleDef(
            id=row.id,
            title=row.title,
            stage="interaction",
            outcome=Outcome.EXCLUDE_AGENT if row.action == "AVOID" else Outcome.WARNING,
            agents=row.agents,
            text=f"{row.text} Mechanism: {row.mechanism}",
            sources=row.sources,
        )
    _check_references(rules, sources, dictionaries, interactions, exclusions, regimens_file)

    regimens = {r.agent: r for r in regimens_file.regimen}
    shared = {
        "engine": ENGINE_VERSION,
        "rules": [r.model_dump(mode="json") for r in rules_file.rule],
        "sources": [s.model_dump(mode="json") for s in sources_file.source],
        "dictionaries": dictionaries.model_dump(mode="json"),
        "interactions": interactions.model_dump(mode="json"),
        "exclusions": exclusions.model_dump(mode="json"),
        "regimens": regimens_file.model_dump(mode="json"),
    }
    rulesets: dict[str, Ruleset] = {}
    defaults = [p.id for p in profiles if p.default]
    if len(defaults) != 1:
        raise KnowledgeError(f"exactly one profile must be the default, found {defaults}")
    for profile in profiles:
        if profile.id in rulesets:
            raise KnowledgeError(f"profile {profile.id} is defined twice")
        canonical = json.dumps(
            {**shared, "profile": profile.model_dump(mode="json")}, sort_keys=True
        )
        rulesets[profile.id] = Ruleset(
            profile=profile,
            rules=rules,
            sources=sources,
            dictionaries=dictionaries,
            interactions=interactions.interaction,
            interaction_info=interactions.info,
            exclusions=exclusions.exclusion,
            regimens=regimens,
            content_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        )
    return Knowledge(rulesets=rulesets, default_profile=defaults[0])


def _check_references(
    rules: Mapping[str, RuleDef],
    sources: Mapping[str, SourceDef],
    dictionaries: DictionariesFile,
    interactions: InteractionsFile,
    exclusions: ExclusionsFile,
    regimens: RegimensFile,
) -> None:
    problems: list[str] = []
    for rule in rules.values():
        problems += [
            f"{rule.id} cites unknown source {k}" for k in rule.sources if k not in sources
        ]
    groups = dictionaries.groups
    for row in interactions.interaction:
        problems += [
            f"{row.id} names unknown group {g}"
            for g in (*row.drugs_all, *row.drugs_none)
            if g not in groups
        ]
        if (row.risk is None) != (not row.risk_factors):
            problems.append(f"{row.id}: risk and risk_factors go together")
    params = set(ProfileParameters.model_fields)
    for ex in exclusions.exclusion:
        catalogued = rules.get(ex.id)
        if (
            catalogued is None
            or catalogued.stage != "drug_exclusion"
            or ex.agent not in catalogued.agents
        ):
            problems.append(
                f"exclusion {ex.id} has no drug_exclusion rule for {ex.agent} in rules.toml"
            )
        named_groups = list(ex.allergy_any or ())
        if ex.antibiotic_within:
            named_groups.append(ex.antibiotic_within.group)
        problems += [f"{ex.id} names unknown group {g}" for g in named_groups if g not in groups]
        named_params = [
            ex.egfr_below,
            ex.age_below,
            ex.any_antibiotic_within,
            ex.antibiotic_within.days if ex.antibiotic_within else None,
        ]
        problems += [
            f"{ex.id} names unknown parameter {p}" for p in named_params if p and p not in params
        ]
    seen_agents = [r.agent for r in regimens.regimen]
    if sorted(seen_agents) != sorted(Agent):
        problems.append(f"regimens.toml must hold one regimen per agent, found {seen_agents}")
    for reg in regimens.regimen:
        if reg.rule_id not in rules:
            problems.append(f"regimen of {reg.agent} names unknown rule {reg.rule_id}")
    if problems:
        raise KnowledgeError("; ".join(problems))
