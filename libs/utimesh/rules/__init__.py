"""The deterministic UTI triage rules (RULES.md) and the clinical knowledge they share.

Public surface:
    load_knowledge()          read and check the versioned data files (profiles, dictionaries, ...)
    TriageEngine(knowledge)   .assess(intake, profile) -> Assessment
    parse_intake(obj)         read an intake in the cases.json patient format
    intake_problems(intake)   missing answers and impossible values
    check_plan(assessment, regimen) -> PlanCheck   the allow-list
    assessment_to_json(a)     the JSON view printed by the CLI
"""

from utimesh.rules.allowlist import PlanCheck, PlanViolation, check_plan
from utimesh.rules.engine import TriageEngine, assess
from utimesh.rules.intake import intake_problems, parse_intake
from utimesh.rules.jsonview import assessment_to_json, regimen_from_json, regimen_to_json
from utimesh.rules.knowledge import (
    Knowledge,
    KnowledgeError,
    Ruleset,
    UnknownProfileError,
    load_knowledge,
)
from utimesh.rules.model import Agent, Assessment, Decision, Intake, Regimen

__all__ = [
    "Agent",
    "Assessment",
    "Decision",
    "Intake",
    "Knowledge",
    "KnowledgeError",
    "PlanCheck",
    "PlanViolation",
    "Regimen",
    "Ruleset",
    "TriageEngine",
    "UnknownProfileError",
    "assess",
    "assessment_to_json",
    "check_plan",
    "intake_problems",
    "load_knowledge",
    "parse_intake",
    "regimen_from_json",
    "regimen_to_json",
]
