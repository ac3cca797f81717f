"""k8s/base/authorization.yaml and peer-authentication.yaml: STRICT mTLS, allow-nothing, and one
ALLOW policy per callee that says exactly what mesh/policy.toml says (and is regenerated from
it: a stale file fails here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mesh import k8s
from mesh.stack import GRPC_NAMES
from tests.k8s.manifests import BASE, K8S, REPO, base_manifests, by_kind, load, yaml_files
from utimesh.kit.authz import DEFAULT_POLICY_PATH, MeshPolicy, load_policy

MANIFESTS = base_manifests()
POLICIES = by_kind(MANIFESTS, "AuthorizationPolicy")
AUTHZ = BASE / "authorization.yaml"


@pytest.fixture(scope="module")
def policy() -> MeshPolicy:
    return load_policy()


def _rules_by_paths(name: str) -> dict[tuple[str, ...], list[str]]:
    """For one ALLOW policy: its paths -> its principals (one source and one operation a rule)."""
    rules = {}
    for rule in POLICIES[name]["spec"]["rules"]:
        ((source,),) = [rule["from"]]
        ((operation,),) = [rule["to"]]
        rules[tuple(operation["operation"]["paths"])] = source["source"]["principals"]
    return rules


def test_the_checked_in_policies_are_generated_from_policy_toml(policy: MeshPolicy) -> None:
    assert AUTHZ.read_text(encoding="utf-8") == k8s.render(policy), (
        "k8s/base/authorization.yaml is stale: run `python -m mesh.k8s`"
    )


def test_check_mode_passes_when_fresh_and_fails_when_stale(tmp_path: Path) -> None:
    out = tmp_path / "authorization.yaml"
    assert k8s.main(["--check", "--output", str(out)]) == 1  # missing
    assert k8s.main(["--output", str(out)]) == 0
    assert k8s.main(["--check", "--output", str(out)]) == 0
    edited = tmp_path / "policy.toml"
    edited.write_text(
        DEFAULT_POLICY_PATH.read_text().replace(
            'callers = ["consult", "worker"]', 'callers = ["consult"]', 1
        )
    )
    assert k8s.main(["--check", "--policy", str(edited), "--output", str(out)]) == 1


def test_the_command_line_check_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh.k8s", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_mtls_is_strict_for_the_whole_namespace_and_never_relaxed() -> None:
    peer = by_kind(MANIFESTS, "PeerAuthentication")
    assert peer["default"]["spec"] == {"mtls": {"mode": "STRICT"}}  # no selector: namespace-wide
    for path in yaml_files():
        for doc in load(path):
            if doc.get("kind") == "PeerAuthentication":
                modes = [doc["spec"].get("mtls", {}).get("mode")]
                modes += [p["mode"] for p in doc["spec"].get("portLevelMtls", {}).values()]
                assert set(modes) == {"STRICT"}, path


def test_there_is_a_namespace_wide_allow_nothing_policy() -> None:
    assert POLICIES["allow-nothing"]["spec"] == {}


def test_each_callee_allows_exactly_its_callers_on_its_own_paths(policy: MeshPolicy) -> None:
    deployments = by_kind(MANIFESTS, "Deployment")
    for callee, entry in policy.services.items():
        name = f"{callee}-callers"
        spec = POLICIES[name]["spec"]
        assert spec["action"] == "ALLOW"
        labels = deployments[callee]["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        rules = _rules_by_paths(name)
        app_paths = tuple(f"/{s}/*" for s in k8s.served_services(callee))
        expected = {f"utimesh.local/ns/utimesh/sa/{c}" for c in entry.callers}
        if entry.callers:
            assert set(rules[app_paths]) == expected, callee
        else:
            assert not app_paths or app_paths not in rules
        # nothing else reaches the application methods
        for paths in rules:
            if paths != app_paths:
                assert not set(paths) & set(app_paths)


def test_every_application_path_is_a_grpc_service_that_exists() -> None:
    from google.longrunning import operations_proto_pb2  # noqa: F401
    from google.protobuf import descriptor_pool

    import utimesh.consult.v1.consult_pb2
    import utimesh.doctor.v1.doctor_pb2
    import utimesh.evidence.v1.evidence_pb2
    import utimesh.pharmacist.v1.pharmacist_pb2
    import utimesh.report.v1.report_pb2
    import utimesh.triage.v1.triage_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    for callee in GRPC_NAMES:
        for service in k8s.served_services(callee):
            assert pool.FindServiceByName(service).full_name == service


def test_health_is_open_to_mesh_peers_and_reflection_to_the_operator(policy: MeshPolicy) -> None:
    for callee in policy.services:
        rules = _rules_by_paths(f"{callee}-callers")
        assert rules[k8s.HEALTH_PATHS] == ["*"]
        assert rules[k8s.REFLECTION_PATHS] == ["utimesh.local/ns/utimesh/sa/operator"]


def test_no_policy_names_an_identity_nobody_holds_on_the_cluster() -> None:
    accounts = set(by_kind(MANIFESTS, "ServiceAccount"))
    for doc in POLICIES.values():
        for rule in doc["spec"].get("rules", []):
            for source in rule["from"]:
                for principal in source["source"]["principals"]:
                    if principal == "*" or "/ns/istio-system/" in principal:
                        continue
                    assert principal.rsplit("/sa/", 1)[1] in accounts, principal


def test_only_the_ingress_gateway_reaches_the_edge() -> None:
    spec = POLICIES["edge-from-ingress"]["spec"]
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "edge"}
    ((rule,),) = [spec["rules"]]
    assert rule["from"][0]["source"]["principals"] == [
        "utimesh.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    ]
    service_port = by_kind(MANIFESTS, "Service")["edge"]["spec"]["ports"][0]["targetPort"]
    container = by_kind(MANIFESTS, "Deployment")["edge"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert rule["to"][0]["operation"]["ports"] == [str(ports[service_port])]


def test_a_caller_added_to_policy_toml_appears_in_the_generated_policy(tmp_path: Path) -> None:
    text = DEFAULT_POLICY_PATH.read_text().replace(
        '[services.report]\ncallers = ["consult", "worker"]',
        '[services.report]\ncallers = ["consult", "worker", "operator"]',
    )
    assert text != DEFAULT_POLICY_PATH.read_text()
    path = tmp_path / "policy.toml"
    path.write_text(text)
    doc = next(
        d for d in k8s.documents(load_policy(path)) if d["metadata"]["name"] == "report-callers"
    )
    assert (
        "utimesh.local/ns/utimesh/sa/operator"
        in doc["spec"]["rules"][0]["from"][0]["source"]["principals"]
    )


def test_readme_explains_the_mapping() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert "python -m mesh.k8s" in readme and "allow-nothing" in readme
