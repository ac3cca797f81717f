"""mesh/policy.toml, the one source of the allow-lists: it covers every service, matches what
consult calls, and a bad policy is refused at start rather than half-applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.consult.main import ConsultSettings
from utimesh.kit.authz import DEFAULT_POLICY_PATH, MeshPolicy, load_policy

REPO = Path(__file__).resolve().parents[2]
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.fixture(scope="module")
def policy() -> MeshPolicy:
    return load_policy()


def test_the_default_policy_is_the_repository_file() -> None:
    assert DEFAULT_POLICY_PATH == REPO / "mesh" / "policy.toml"


def test_every_service_under_services_has_a_policy(policy: MeshPolicy) -> None:
    services = {p.name for p in (REPO / "services").iterdir() if (p / "__init__.py").is_file()}
    assert services, "no services found"
    missing = services - set(policy.services)
    assert not missing, f"add [services.<name>] to mesh/policy.toml for {sorted(missing)}"


def test_consult_may_call_every_service_it_has_a_target_for(policy: MeshPolicy) -> None:
    downstream = {
        name.removesuffix("_target")
        for name in ConsultSettings.model_fields
        if name.endswith("_target")
    }
    assert downstream
    refused = {d for d in downstream if not policy.allows(d, f"/utimesh.{d}.v1.X/Y", "consult")}
    assert not refused


@pytest.mark.parametrize(
    ("callee", "method", "caller", "allowed"),
    [
        ("triage", "/utimesh.triage.v1.TriageService/AssessPatient", "consult", True),
        ("doctor", "/utimesh.doctor.v1.DoctorService/ProposePlan", "consult", True),
        ("report", "/utimesh.report.v1.ReportService/RenderReport", "consult", True),
        ("consult", "/utimesh.consult.v1.ConsultationService/CreateConsultation", "edge", True),
        ("triage", "/utimesh.triage.v1.TriageService/AssessPatient", "doctor", False),
        ("triage", "/utimesh.triage.v1.TriageService/AssessPatient", "edge", False),
        ("triage", "/utimesh.triage.v1.TriageService/AssessPatient", "operator", False),
        ("consult", "/utimesh.consult.v1.ConsultationService/CreateConsultation", "doctor", False),
        ("doctor", "/utimesh.doctor.v1.DoctorService/ProposePlan", "pharmacist", False),
        ("triage", HEALTH, "supervisor", True),
        ("consult", HEALTH, "operator", True),
        ("triage", HEALTH, "doctor", True),
        ("triage", HEALTH, None, False),
        ("triage", REFLECTION, "operator", True),
        ("triage", REFLECTION, "supervisor", True),
        ("triage", REFLECTION, "consult", False),
        ("triage", "/utimesh.triage.v1.TriageService/AssessPatient", None, False),
    ],
    ids=lambda v: str(v).rsplit("/", 1)[-1] if isinstance(v, str) else str(v),
)
def test_allow_matrix(
    policy: MeshPolicy, callee: str, method: str, caller: str | None, allowed: bool
) -> None:
    assert policy.allows(callee, method, caller) is allowed


GOOD = """
[mesh]
trust_domain = "utimesh.local"
namespace = "utimesh"
clients = ["edge"]
[health]
callers = ["*"]
[reflection]
callers = []
[services.triage]
callers = ["edge"]
"""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        pytest.param(('callers = ["edge"]', 'callers = ["edgy"]'), "unknown callers", id="typo"),
        pytest.param(
            ('trust_domain = "utimesh.local"', 'trust_domain = "x.local"'),
            "trust_domain",
            id="other-trust-domain",
        ),
        pytest.param(
            ('namespace = "utimesh"', 'namespace = "default"'), "namespace", id="other-namespace"
        ),
        pytest.param(('callers = ["*"]', 'callers = ["*", "edge"]'), "only caller", id="any-and"),
        pytest.param(
            ('clients = ["edge"]', 'clients = ["edge", "triage"]'), "both", id="client-and-service"
        ),
        pytest.param(("[services.triage]", "[services.Triage]"), "identity", id="bad-name"),
        pytest.param(("[reflection]", "[reflections]"), "reflection", id="unknown-table"),
        pytest.param(("[health]", "[health]\nmode = 'open'"), "mode", id="unknown-key"),
        pytest.param(('callers = ["edge"]', 'callers = "edge"'), "callers", id="not-a-list"),
        pytest.param(("[mesh]", "[mesh"), "bad mesh policy", id="not-toml"),
    ],
)
def test_bad_policies_are_refused(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    load_policy(good)  # the baseline is valid
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace(*change, 1))
    with pytest.raises(ValueError, match=complaint):
        load_policy(bad)


def test_a_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_policy(tmp_path / "absent.toml")
