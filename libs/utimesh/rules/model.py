"""Domain types of the triage rules: the intake (RULES.md §4) and the assessment (§1).

Pure data: no I/O, no protobuf. Every intake answer may be None, meaning "not asked" or
"not known" exactly as RULES.md §4 defines it; the engine decides what that means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class EncounterType(StrEnum):
    INITIAL = "initial"
    FOLLOW_UP = "follow_up"


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class PregnancyStatus(StrEnum):
    NOT_PREGNANT = "not_pregnant"
    PREGNANT = "pregnant"
    UNKNOWN = "unknown"
    NOT_APPLICABLE = "not_applicable"


class Decision(StrEnum):
    RECOMMEND_TREATMENT = "recommend_treatment"
    NO_ANTIBIOTICS = "no_antibiotics"
    REFER = "refer"


class Agent(StrEnum):
    """Agent codes of RULES.md §3."""

    NIT = "NIT"  # nitrofurantoin
    SXT = "SXT"  # trimethoprim-sulfamethoxazole
    TMP = "TMP"  # trimethoprim
    FOS = "FOS"  # fosfomycin


class Outcome(StrEnum):
    """What a rule does when it fires."""

    REFER = "refer"
    REFER_URGENT = "refer_urgent"
    NO_ANTIBIOTICS = "no_antibiotics"
    CONTINUE = "continue"
    ANNOTATION = "annotation"
    NOTE = "note"
    EXCLUDE_AGENT = "exclude_agent"
    SELECT_AGENT = "select_agent"
    WARNING = "warning"
    PLAN = "plan"


class ReferralUrgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


# --- intake -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Symptoms:
    dysuria: bool | None = None
    urgency: bool | None = None
    frequency: bool | None = None
    suprapubic_pain: bool | None = None
    hematuria: bool | None = None
    vaginal_discharge_or_itch: bool | None = None
    dyspareunia: bool | None = None
    confusion: bool | None = None
    delirium: bool | None = None
    falls_or_functional_decline: bool | None = None
    cloudy_or_malodorous_urine: bool | None = None
    duration_days: int | None = None  # None = unknown


SYMPTOM_FLAGS: tuple[str, ...] = (
    "dysuria",
    "urgency",
    "frequency",
    "suprapubic_pain",
    "hematuria",
    "vaginal_discharge_or_itch",
    "dyspareunia",
    "confusion",
    "delirium",
    "falls_or_functional_decline",
    "cloudy_or_malodorous_urine",
)
URINARY_SYMPTOMS: tuple[str, ...] = (
    "dysuria",
    "urgency",
    "frequency",
    "suprapubic_pain",
    "hematuria",
)


@dataclass(frozen=True, slots=True)
class RedFlags:
    fever: bool | None = None
    rigors_chills: bool | None = None
    flank_or_back_pain: bool | None = None
    nausea_vomiting: bool | None = None
    systemic_illness: bool | None = None


RED_FLAGS: tuple[str, ...] = (
    "fever",
    "rigors_chills",
    "flank_or_back_pain",
    "nausea_vomiting",
    "systemic_illness",
)


@dataclass(frozen=True, slots=True)
class RecentAntibiotic:
    drug: str | None = None
    days_ago: int | None = None


@dataclass(frozen=True, slots=True)
class History:
    catheter: bool | None = None
    neurogenic_bladder: bool | None = None
    stones: bool | None = None
    abnormal_urinary_tract: bool | None = None
    renal_dysfunction: bool | None = None
    immunocompromised: bool | None = None
    diabetes: bool | None = None
    diabetes_poorly_controlled: bool | None = None
    urologic_instrumentation_last_30d: bool | None = None
    hospitalized_last_90d: bool | None = None
    g6pd_deficiency: bool | None = None
    megaloblastic_anemia_folate_deficiency: bool | None = None
    prior_nitrofurantoin_pulmonary_or_hepatic_reaction: bool | None = None
    breastfeeding_infant_under_1_month: bool | None = None
    allergies: tuple[str, ...] | None = None  # None = not recorded; () = none known
    medications: tuple[str, ...] | None = None
    recent_antibiotics: tuple[RecentAntibiotic, ...] | None = None


HISTORY_FLAGS: tuple[str, ...] = (
    "catheter",
    "neurogenic_bladder",
    "stones",
    "abnormal_urinary_tract",
    "renal_dysfunction",
    "immunocompromised",
    "diabetes",
    "diabetes_poorly_controlled",
    "urologic_instrumentation_last_30d",
    "hospitalized_last_90d",
    "g6pd_deficiency",
    "megaloblastic_anemia_folate_deficiency",
    "prior_nitrofurantoin_pulmonary_or_hepatic_reaction",
    "breastfeeding_infant_under_1_month",
)


@dataclass(frozen=True, slots=True)
class PriorEpisode:
    onset_date: date | None = None
    treated: bool | None = None  # informative only
    treatment_end_date: date | None = None  # None = untreated or unknown; future = on treatment


@dataclass(frozen=True, slots=True)
class FollowUpAnswers:
    hours_since_treatment_start: float | None = None
    improved: bool | None = None
    worsened: bool | None = None
    serious_adverse_effect: bool | None = None
    current_regimen: str | None = None  # informative only


@dataclass(frozen=True, slots=True)
class Intake:
    """One patient intake (RULES.md §4). None = not asked / not known."""

    encounter_type: EncounterType | None = None
    assessment_date: date | None = None
    age: int | None = None
    sex: Sex | None = None
    pregnancy_status: PregnancyStatus | None = None
    gestational_weeks: int | None = None
    lactating: bool | None = None
    egfr_ml_min: float | None = None
    urine_test_positive: bool | None = None
    symptoms: Symptoms | None = None
    red_flags: RedFlags | None = None
    history: History | None = None
    prior_episodes: tuple[PriorEpisode, ...] | None = None  # recurrence.prior_episodes
    follow_up: FollowUpAnswers | None = None
    # Paths of fields that were present in the source but could not be read (wrong type,
    # unknown enum value, malformed date), with the reason. Their value above is None.
    unreadable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """Why an intake field cannot be used. `path` uses the intake's JSON names."""

    path: str
    kind: str  # "missing" (not asked: DATA-001) or "invalid" (impossible value)
    message: str


# --- regimens and results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoseComponent:
    ingredient: str
    amount: float
    unit: str


@dataclass(frozen=True, slots=True)
class CourseDuration:
    amount: int
    unit: str  # "days" or "dose"


@dataclass(frozen=True, slots=True)
class Regimen:
    """A structured regimen; equality is the allow-list comparison."""

    agent: Agent
    drug: str
    dose: tuple[DoseComponent, ...]
    dose_form: str
    route: str
    frequency: str
    duration: CourseDuration


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule_id: str
    title: str
    outcome: Outcome
    sources: tuple[str, ...]
    detail: str = ""  # never contains free text from the intake


@dataclass(frozen=True, slots=True)
class Warning:
    rule_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AgentEvaluation:
    agent: Agent
    rank: int
    regimen: Regimen
    exclusions: tuple[RuleHit, ...]
    agent_warnings: tuple[Warning, ...]
    counselling: tuple[str, ...]

    @property
    def eligible(self) -> bool:
        return not self.exclusions


@dataclass(frozen=True, slots=True)
class FollowUpPlan:
    notify_primary_care: bool = False
    reassess_from_hours: int = 0
    reassess_by_hours: int = 0
    referral_urgency: ReferralUrgency | None = None
    instructions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Assessment:
    """The engine's answer (RULES.md §1) plus the allow-list and the reasons behind it."""

    profile: str
    profile_version: str
    ruleset_hash: str
    decision: Decision
    regimen: Regimen | None
    rules_fired: tuple[RuleHit, ...]
    warnings: tuple[Warning, ...]
    follow_up: FollowUpPlan
    eligible_regimens: tuple[Regimen, ...] = ()
    agent_evaluations: tuple[AgentEvaluation, ...] = ()
    problems: tuple[FieldProblem, ...] = field(default=())

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(hit.rule_id for hit in self.rules_fired)

    @property
    def warning_ids(self) -> tuple[str, ...]:
        return tuple(w.rule_id for w in self.warnings)
