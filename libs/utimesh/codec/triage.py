"""utimesh.triage.v1 <-> utimesh.rules (assessments, rulesets)."""

from __future__ import annotations

from utimesh.codec.clinical import (
    AGENTS,
    OUTCOMES,
    decision_from_proto,
    decision_to_proto,
    follow_up_from_proto,
    follow_up_to_proto,
    regimen_from_proto,
    regimen_to_proto,
    rule_hit_from_proto,
    rule_hit_to_proto,
    warning_to_proto,
)
from utimesh.rules.allowlist import PlanCheck
from utimesh.rules.knowledge import Knowledge, Ruleset
from utimesh.rules.model import AgentEvaluation, Assessment, FieldProblem, Warning
from utimesh.triage.v1 import triage_pb2 as tpb


def assessment_to_proto(a: Assessment) -> tpb.AssessPatientResponse:
    return tpb.AssessPatientResponse(
        profile=a.profile,
        profile_version=a.profile_version,
        ruleset_hash=a.ruleset_hash,
        decision=decision_to_proto(a.decision),
        regimen=regimen_to_proto(a.regimen) if a.regimen else None,
        rules_fired=[rule_hit_to_proto(h) for h in a.rules_fired],
        warnings=[warning_to_proto(w) for w in a.warnings],
        follow_up=follow_up_to_proto(a.follow_up),
        eligible_regimens=[regimen_to_proto(r) for r in a.eligible_regimens],
        agent_evaluations=[
            tpb.AgentEvaluation(
                agent=AGENTS[e.agent],
                rank=e.rank,
                eligible=e.eligible,
                exclusions=[rule_hit_to_proto(h) for h in e.exclusions],
                regimen=regimen_to_proto(e.regimen),
                agent_warnings=[warning_to_proto(w) for w in e.agent_warnings],
                counselling=e.counselling,
            )
            for e in a.agent_evaluations
        ],
        missing_fields=[p.path for p in a.problems],
    )


def assessment_from_proto(msg: tpb.AssessPatientResponse) -> Assessment:
    return Assessment(
        profile=msg.profile,
        profile_version=msg.profile_version,
        ruleset_hash=msg.ruleset_hash,
        decision=decision_from_proto(msg.decision),
        regimen=regimen_from_proto(msg.regimen) if msg.HasField("regimen") else None,
        rules_fired=tuple(rule_hit_from_proto(h) for h in msg.rules_fired),
        warnings=tuple(Warning(w.rule_id, w.text) for w in msg.warnings),
        follow_up=follow_up_from_proto(msg.follow_up),
        eligible_regimens=tuple(regimen_from_proto(r) for r in msg.eligible_regimens),
        agent_evaluations=tuple(
            AgentEvaluation(
                agent=regimen_from_proto(e.regimen).agent,
                rank=e.rank,
                regimen=regimen_from_proto(e.regimen),
                exclusions=tuple(rule_hit_from_proto(h) for h in e.exclusions),
                agent_warnings=tuple(Warning(w.rule_id, w.text) for w in e.agent_warnings),
                counselling=tuple(e.counselling),
            )
            for e in msg.agent_evaluations
        ),
        problems=tuple(
            FieldProblem(path, "missing", "not answered") for path in msg.missing_fields
        ),
    )


def plan_check_to_proto(check: PlanCheck, a: Assessment) -> tpb.ValidatePlanResponse:
    return tpb.ValidatePlanResponse(
        allowed=check.allowed,
        violations=[
            tpb.PlanViolation(code=v.code, field=v.field, message=v.message, rule_ids=v.rule_ids)
            for v in check.violations
        ],
        decision=decision_to_proto(a.decision),
        eligible_regimens=[regimen_to_proto(r) for r in a.eligible_regimens],
        profile=a.profile,
        profile_version=a.profile_version,
        ruleset_hash=a.ruleset_hash,
    )


def ruleset_to_proto(ruleset: Ruleset, knowledge: Knowledge) -> tpb.GetRulesetResponse:
    return tpb.GetRulesetResponse(
        profile=ruleset.id,
        profile_version=ruleset.version,
        ruleset_hash=ruleset.content_hash,
        parameters=[tpb.ProfileParameter(name=n, value=v) for n, v in ruleset.params.as_text()],
        rules=[
            tpb.RuleDefinition(
                rule_id=r.id,
                title=r.title,
                outcome=OUTCOMES[r.outcome],
                text=r.text,
                source_keys=r.sources,
                stage=r.stage,
                agents=[AGENTS[a] for a in r.agents],
                needs_confirmation=r.confirm,
            )
            for r in ruleset.rules.values()
        ],
        sources=[
            tpb.Source(
                key=s.key,
                tag=s.tag,
                title=s.title,
                citation=s.citation,
                url=s.url,
                doi=s.doi,
                year=s.year,
                jurisdiction=s.jurisdiction,
                verified=s.verified,
            )
            for s in ruleset.sources.values()
        ],
        available_profiles=knowledge.profiles,
    )
