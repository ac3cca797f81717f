"""The rendered report of every development case: complete, deterministic, honest about what is
missing; tables escaped; the degraded notice at the top when a review is missing."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from services.report.domain.render import DRAFT_LINE, render
from tests.conftest import case_params
from tests.factories import patient
from tests.report.support import FLAGGED_CLAIM_TEXT, TEST_CORPUS, with_groundings
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.rules import parse_intake

ALWAYS = [
    "draft-notice",
    "patient",
    "decision",
    "assessment",
    "plan",
    "excluded-agents",
    "warnings",
    "deliberation",
    "pharmacist-concerns",
    "monitoring-counselling",
    "evidence",
    "follow-up",
    "decision-path",
    "versions",
    "sign-off",
]


def section_text(markdown: str, section_id: str) -> str:
    """The markdown of one section, from its anchor to the next anchor."""
    start = markdown.index(f'<a id="{section_id}"></a>')
    following = markdown.find('<a id="', start + 1)
    return markdown[start : following if following != -1 else len(markdown)]


@pytest.mark.parametrize("case", case_params())
def test_every_case_renders_a_complete_signable_report(
    case: dict[str, Any], mesh_consultations: dict[str, cpb.Consultation]
) -> None:
    c = with_groundings(mesh_consultations[f"case:{case['id']}"], replace=True)
    rendered = render(c, c.corpus_version)
    md = rendered.markdown

    assert [s.id for s in rendered.sections] == (
        ALWAYS[:1] + (["degraded-review"] if c.missing_reviews else []) + ALWAYS[1:]
    )
    positions = [md.index(f'<a id="{s.id}"></a>') for s in rendered.sections]
    assert positions == sorted(positions), "sections are in their fixed order"
    assert DRAFT_LINE in section_text(md, "draft-notice") and c.notice in md
    for hit in c.triage.rules_fired:
        assert f"| {hit.rule_id} |" in section_text(md, "decision")
    decision = case["expected"]["decision"].replace("_", " ")
    assert f"**Decision: {decision}**" in md
    plan = section_text(md, "plan")
    if case["expected"]["regimen"]:
        regimen = case["expected"]["regimen"]
        assert c.regimen.drug in plan and str(regimen["duration"]["amount"]) in plan
        for dose in c.regimen.dose:
            assert f"{dose.ingredient} {dose.amount:g} {dose.unit}" in plan
    else:
        assert "no pharmacist prescription" in plan.lower() or "no antibiotic" in plan.lower()
    evidence = section_text(md, "evidence")
    assert "| Claim | Citation | Quoted span | Relevance | Support |" in evidence
    for g in c.groundings:
        for citation in g.citations:
            assert citation.passage.id in evidence
    assert "⚠ FLAGGED" in evidence and FLAGGED_CLAIM_TEXT in evidence, "unsupported claims shown"
    path = section_text(md, "decision-path")
    assert "```mermaid\nflowchart TD\n" in path and path.rstrip().endswith("```")
    assert "Outcome:" in path
    versions = section_text(md, "versions")
    for value in (c.triage.profile, c.triage.profile_version, c.triage.ruleset_hash, TEST_CORPUS):
        assert value in versions
    assert "offline-rules" in versions
    sign_off = section_text(md, "sign-off")
    for line in ("Prescriber name:", "Licence number:", "Signature:", "Date:"):
        assert line in sign_off
    for box in ("- [ ] **Approve**", "- [ ] **Amend**", "- [ ] **Reject**"):
        assert box in sign_off
    assert rendered.sha256 == hashlib.sha256(md.encode()).hexdigest()


@pytest.mark.parametrize("case", case_params())
def test_rendering_twice_is_byte_identical(
    case: dict[str, Any], mesh_consultations: dict[str, cpb.Consultation]
) -> None:
    c = with_groundings(mesh_consultations[f"case:{case['id']}"], replace=True)
    copy = cpb.Consultation.FromString(c.SerializeToString())
    first, second = render(c, "v1"), render(copy, "v1")
    assert first.markdown.encode() == second.markdown.encode()
    assert first.sha256 == second.sha256 and first.sections == second.sections


@pytest.mark.parametrize("case", case_params())
def test_groundings_from_the_mesh_are_all_shown(
    case: dict[str, Any], mesh_consultations: dict[str, cpb.Consultation]
) -> None:
    """Whatever the evidence service returned (or nothing): every cited passage and every
    flagged claim is in the evidence table; a consultation without groundings says so."""
    c = mesh_consultations[f"case:{case['id']}"]
    evidence = section_text(render(c, c.corpus_version).markdown, "evidence")
    if not c.groundings:
        assert "Evidence grounding is unavailable" in evidence
    for g in c.groundings:
        assert f"{g.claim.id} (" in evidence
        if g.flagged:
            assert "⚠ FLAGGED" in evidence
        for citation in g.citations:
            assert citation.passage.id in evidence


def test_the_report_fields_of_the_consultation_do_not_change_the_report(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    c = with_groundings(mesh_consultations["qa:nit"])
    before = render(c, "v1")
    c.report_markdown, c.report_sha256 = before.markdown, before.sha256
    assert render(c, "v1").markdown == before.markdown


def test_consult_returns_the_report_this_renderer_makes(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    """Through the mesh the consult service asked the report service; re-rendering the very
    consultation it returned gives the same bytes."""
    c = mesh_consultations["qa:sxt-lisinopril"]
    if not c.report_markdown:
        pytest.skip("the consult service did not call the report service in this mesh")
    again = render(c, c.corpus_version)
    assert again.markdown == c.report_markdown and again.sha256 == c.report_sha256


def test_degraded_consultation_says_so_at_the_top(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    c = mesh_consultations["degraded:nit"]
    assert "doctor" in c.missing_reviews
    md = render(c, "").markdown
    degraded = md.index('<a id="degraded-review"></a>')
    assert md.index('<a id="draft-notice"></a>') < degraded < md.index('<a id="patient"></a>')
    assert "NOT FULLY REVIEWED" in section_text(md, "degraded-review")
    assert "doctor" in section_text(md, "degraded-review")
    assert "Needs prescriber review first: YES" in md
    assert "degrade" in section_text(md, "deliberation")


def test_a_complete_review_has_no_degraded_section(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    c = mesh_consultations["qa:nit"]
    md = render(c, "").markdown
    assert ("degraded-review" in md) == bool(c.missing_reviews)


def test_without_groundings_the_claims_are_shown_as_not_grounded(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    c = cpb.Consultation()
    c.CopyFrom(mesh_consultations["qa:fever"])
    del c.groundings[:]
    c.corpus_version = ""
    evidence = section_text(render(c, "").markdown, "evidence")
    assert "Evidence grounding is unavailable" in evidence
    for claim in (*c.assessment.claims, *c.review.claims):
        assert claim.id in evidence
    assert evidence.count("⚠ NOT GROUNDED") == len(c.assessment.claims) + len(c.review.claims)
    assert "none: grounding unavailable" in render(c, "").markdown


def test_table_cells_escape_pipes_newlines_and_markup(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    c = with_groundings(mesh_consultations["qa:sxt-lisinopril"])
    c.review.concerns[0].text = "check K+ | and INR\nthen <b>stop</b> \\ now"
    md = render(c, "").markdown
    row = next(
        line for line in section_text(md, "pharmacist-concerns").splitlines() if "K+" in line
    )
    assert "check K+ \\| and INR<br>then &lt;b&gt;stop&lt;/b&gt; \\\\ now" in row
    # Every table row of the report has the same number of unescaped pipes as its header.
    for table in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.MULTILINE):
        rows = table.strip("\n").split("\n")
        counts = {len(re.findall(r"(?<!\\)\|", r)) for r in rows}
        assert len(counts) == 1, rows


def test_the_intake_when_given_fills_the_patient_snapshot(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    profile_patient = patient(
        age=45,
        history__allergies=["nitrofurantoin"],
        history__medications=["Lisinopril 10 mg daily"],
        symptoms__urgency=True,
        egfr_ml_min=72.0,
    )
    intake = intake_to_proto(parse_intake(profile_patient))
    c = mesh_consultations["qa:sxt-lisinopril"]
    snapshot = section_text(render(c, "", intake).markdown, "patient")
    for text in (
        "45 years",
        "female",
        "not pregnant",
        "72 mL/min",
        "dysuria, urgency",
        "2 day(s)",
        "| Red flags present | none |",
        "nitrofurantoin",
        "Lisinopril 10 mg daily",
    ):
        assert text in snapshot, text
    # The consultation carries its intake, so the snapshot is complete by default too.
    assert "Lisinopril 10 mg daily" in section_text(render(c, "").markdown, "patient")
    bare = cpb.Consultation()
    bare.CopyFrom(c)
    bare.ClearField("intake")
    without = section_text(render(bare, "").markdown, "patient")
    assert "RX-NIT-01" in without and "DDI-003" in without
    assert "not carried by the consultation" in without


def test_referral_plan_names_the_deciding_rules(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    c = mesh_consultations["qa:pregnant"]
    assert c.decision == pb.DECISION_REFER
    md = render(c, "").markdown
    plan = section_text(md, "plan")
    assert "Plan: referral, no prescription" in plan and "CX-002" in plan
    assert "PREG-002" in plan, "notes for the receiving prescriber"
    assert "Drug selection was not reached" in section_text(md, "excluded-agents")


def test_unknown_enum_values_do_not_break_the_report(
    mesh_consultations: dict[str, cpb.Consultation],
) -> None:
    """A newer producer may send enum values this version does not know: shown, not fatal."""
    c = with_groundings(mesh_consultations["qa:nit"])
    c.assessment.differential[0].likelihood = 42  # type: ignore[assignment]
    c.review.verdict = 77  # type: ignore[assignment]
    intake = intake_to_proto(parse_intake(patient()))
    intake.sex = 9  # type: ignore[assignment]
    md = render(c, "", intake).markdown
    assert "unknown (42)" in md and "unknown (77)" in md and "unknown (9)" in md
