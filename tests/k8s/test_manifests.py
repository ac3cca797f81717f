"""The k8s/ manifests as a platform engineer reads them: they parse, every kustomization entry
exists, every identity of mesh/policy.toml runs as its own ServiceAccount, pods are hardened
and probed, ports and targets agree, and no secret value is in git."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mesh.k8s import LOCAL_ONLY_IDENTITIES, served_services
from mesh.stack import GRPC_NAMES, SERVICES
from tests.k8s.manifests import (
    BASE,
    K8S,
    KUSTOMIZATION,
    Doc,
    base_manifests,
    by_kind,
    containers,
    effective_env,
    kustomization_resources,
    load,
    yaml_files,
)
from utimesh.kit.authz import MeshPolicy, load_policy

WORKER_HEALTH = "utimesh.consult.v1.Worker"  # services/consult/worker_main.py HEALTH_NAME
NAME_LABEL = "app.kubernetes.io/name"
MANIFESTS = base_manifests()
DEPLOYMENTS = by_kind(MANIFESTS, "Deployment")
SERVICES_K8S = by_kind(MANIFESTS, "Service")
CONFIGMAPS = by_kind(MANIFESTS, "ConfigMap")
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob(f"*/{KUSTOMIZATION}"))


@pytest.fixture(scope="module")
def policy() -> MeshPolicy:
    return load_policy()


def _pod_labels(deployment: Doc) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def _port(container: Doc, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return int(ports[name])


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_document_parses_and_names_itself(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} has no document"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
        if doc["kind"] not in ("Kustomization", "Component"):
            assert doc.get("metadata", {}).get("name"), f"{path}: a {doc['kind']} without name"


@pytest.mark.parametrize(
    "directory",
    sorted(p.parent for p in K8S.rglob(KUSTOMIZATION)),
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_every_kustomization_entry_exists(directory: Path) -> None:
    spec = load(directory / KUSTOMIZATION)[0]
    entries = [*spec.get("resources", []), *spec.get("components", [])]
    entries += [p["path"] for p in spec.get("patches", []) if "path" in p]
    assert entries
    for entry in entries:
        target = directory / entry
        assert target.exists(), f"{directory / KUSTOMIZATION}: {entry} does not exist"
        if target.is_dir():
            assert (target / KUSTOMIZATION).is_file(), f"{target} is not a kustomization"


def test_every_base_file_is_deployed() -> None:
    """A manifest beside the kustomization that it does not list is never applied."""
    listed = set(kustomization_resources(BASE))
    on_disk = {p.resolve() for p in BASE.glob("*.yaml")} - {(BASE / KUSTOMIZATION).resolve()}
    assert on_disk - listed == set()


def test_base_namespace_is_the_mesh_namespace_with_istio_injection(policy: MeshPolicy) -> None:
    assert load(BASE / KUSTOMIZATION)[0]["namespace"] == policy.mesh.namespace
    ns = by_kind(MANIFESTS, "Namespace")[policy.mesh.namespace]
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_one_service_account_per_identity_of_the_policy(policy: MeshPolicy) -> None:
    accounts = by_kind(MANIFESTS, "ServiceAccount")
    assert set(accounts) == set(policy.identities) - LOCAL_ONLY_IDENTITIES
    for name, account in accounts.items():
        assert account.get("automountServiceAccountToken") is False, name


def test_every_policy_service_and_the_edge_run_as_their_own_account(policy: MeshPolicy) -> None:
    expected = {*policy.services, "edge"}
    assert expected <= set(DEPLOYMENTS), f"missing Deployments: {expected - set(DEPLOYMENTS)}"
    for name in expected:
        pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert pod["automountServiceAccountToken"] is False
        assert _pod_labels(DEPLOYMENTS[name])[NAME_LABEL] == name  # what the policies select
    assert set(DEPLOYMENTS) == expected


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_container_is_hardened_and_bounded(name: str) -> None:
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert int(pod["securityContext"]["runAsUser"]) > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in containers(DEPLOYMENTS[name]):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, (name, bound)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, f"{name}: no {probe}"


@pytest.mark.parametrize("name", [*SERVICES, "worker"])
def test_grpc_probes_ask_grpc_health_for_the_served_service(name: str) -> None:
    container = containers(DEPLOYMENTS[name])[0]
    port = _port(container, "grpc")
    expected = GRPC_NAMES.get(name, WORKER_HEALTH)
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": port, "service": expected}
    assert container["livenessProbe"]["grpc"] == {"port": port}  # the server as a whole


def test_worker_health_name_is_the_one_the_worker_serves() -> None:
    from services.consult.worker_main import HEALTH_NAME

    assert HEALTH_NAME == WORKER_HEALTH


@pytest.mark.parametrize("name", [*SERVICES, "worker"])
def test_a_service_binds_all_interfaces_on_its_container_port(name: str) -> None:
    """Istio delivers inbound traffic to the pod IP: a server on 127.0.0.1 gets none."""
    container = containers(DEPLOYMENTS[name])[0]
    env = effective_env(container, CONFIGMAPS)
    prefix = f"UTIMESH_{name.upper()}_"
    assert env[prefix + "HOST"] == "0.0.0.0"
    assert int(env[prefix + "PORT"]) == _port(container, "grpc")
    assert container["args"] == ["serve", name]
    grace = float(env[prefix + "GRACE_SECONDS"])
    assert DEPLOYMENTS[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


@pytest.mark.parametrize("name", SERVICES)
def test_service_ports_are_named_grpc_and_reach_the_container(name: str) -> None:
    service = SERVICES_K8S[name]
    deployment = DEPLOYMENTS[name]
    labels = _pod_labels(deployment)
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "grpc" and port["appProtocol"] == "grpc"
    target = port["targetPort"]
    container_port = _port(containers(deployment)[0], target) if isinstance(target, str) else target
    assert port["port"] == container_port


def test_consult_and_worker_targets_are_the_services_dns_names_and_ports(
    policy: MeshPolicy,
) -> None:
    namespace = policy.mesh.namespace
    for caller in ("consult", "worker"):
        env = effective_env(containers(DEPLOYMENTS[caller])[0], CONFIGMAPS)
        targets = {k: v for k, v in env.items() if re.fullmatch(r"UTIMESH_CONSULT_\w+_TARGET", k)}
        callees = {s for s in SERVICES if s != "consult"}
        assert set(targets) == {f"UTIMESH_CONSULT_{s.upper()}_TARGET" for s in callees}
        for callee in callees:
            port = SERVICES_K8S[callee]["spec"]["ports"][0]["port"]
            expected = f"{callee}.{namespace}.svc.cluster.local:{port}"
            assert targets[f"UTIMESH_CONSULT_{callee.upper()}_TARGET"] == expected
            # and the policy lets this caller in
            assert caller in policy.services[callee].callers


def test_the_edge_reaches_consult_through_its_service_and_serves_its_container_port(
    policy: MeshPolicy,
) -> None:
    container = containers(DEPLOYMENTS["edge"])[0]
    env = effective_env(container, CONFIGMAPS)
    assert container["command"][:3] == ["python", "-m", "gateway"]
    assert env["UTIMESH_EDGE_CONSULT_HOST"] == f"consult.{policy.mesh.namespace}.svc.cluster.local"
    assert (
        int(env["UTIMESH_EDGE_CONSULT_PORT"]) == SERVICES_K8S["consult"]["spec"]["ports"][0]["port"]
    )
    assert int(env["UTIMESH_EDGE_LISTEN_PORT"]) == _port(container, "http")
    assert env["UTIMESH_EDGE_LISTEN_HOST"] == "0.0.0.0"
    assert env["UTIMESH_EDGE_ADMIN_HOST"] == "127.0.0.1"
    state = env["UTIMESH_EDGE_STATE_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in DEPLOYMENTS["edge"]["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[state]], "the bootstrap is written at start"
    assert "edge" in policy.services["consult"].callers
    edge_service = SERVICES_K8S["edge"]["spec"]["ports"][0]
    assert edge_service["port"] == _port(container, "http")


def test_no_container_turns_on_the_local_mtls() -> None:
    """On Kubernetes the sidecars do mTLS; UTIMESH_TLS_DIR would make the apps refuse them."""
    for name, deployment in DEPLOYMENTS.items():
        for container in containers(deployment):
            assert "UTIMESH_TLS_DIR" not in effective_env(container, CONFIGMAPS), name


def _secret_refs() -> dict[tuple[str, str], set[str]]:
    """(Secret name, key) -> the env variables filled from it, over every Deployment."""
    refs: dict[tuple[str, str], set[str]] = {}
    for deployment in DEPLOYMENTS.values():
        for container in containers(deployment):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault((ref["name"], ref["key"]), set()).add(item["name"])
    return refs


def test_stores_and_phi_keys_come_from_required_secrets() -> None:
    for name in ("consult", "worker"):
        env = effective_env(containers(DEPLOYMENTS[name])[0], CONFIGMAPS)
        for variable in ("UTIMESH_DATABASE_URL", "UTIMESH_REDIS_URL", "UTIMESH_PHI_KEYS"):
            ref = env[variable]["secretKeyRef"]
            assert not ref.get("optional", False), f"{name}: {variable} must be required"


def test_configmaps_hold_no_secret_settings() -> None:
    secretish = re.compile(r"DATABASE|REDIS_URL|PHI_|API_KEY|PASSWORD|TOKEN|SECRET")
    for name, cm in CONFIGMAPS.items():
        assert not [k for k in cm.get("data", {}) if secretish.search(k)], name


def test_no_secret_value_is_in_git() -> None:
    for path in yaml_files():
        for doc in load(path):
            if doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), path


def test_every_secret_reference_is_documented_and_synced() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    synced: set[tuple[str, str]] = set()
    for doc in load(K8S / "components" / "external-secrets" / "external-secrets.yaml"):
        synced |= {(doc["spec"]["target"]["name"], d["secretKey"]) for d in doc["spec"]["data"]}
    refs = _secret_refs()
    assert refs
    for secret, key in refs:
        assert f"`{secret}`" in readme and f"`{key}`" in readme, f"README: {secret}/{key}"
        assert (secret, key) in synced, f"external-secrets does not fill {secret}/{key}"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_each_deployment_has_a_disruption_budget_and_spreads(name: str) -> None:
    budgets = by_kind(MANIFESTS, "PodDisruptionBudget")
    labels = _pod_labels(DEPLOYMENTS[name])
    selecting = [
        b
        for b in budgets.values()
        if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(selecting) == 1, name
    assert "maxUnavailable" in selecting[0]["spec"]  # minAvailable would block drains at 1 replica
    spread = DEPLOYMENTS[name]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in spread}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for c in spread:
        assert c["labelSelector"]["matchLabels"].items() <= labels.items()


def test_the_worker_is_scaled_by_an_autoscaler_that_owns_its_replicas() -> None:
    (hpa,) = by_kind(MANIFESTS, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "worker",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in DEPLOYMENTS["worker"]["spec"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_keda_scales_on_the_stream_and_group_the_workers_read() -> None:
    from services.consult.jobs.stream import GROUP, STREAM

    docs = load(K8S / "components" / "keda-worker" / "scaledobject.yaml")
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    (redis,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams"]
    assert redis["metadata"]["stream"] == STREAM
    assert redis["metadata"]["consumerGroup"] == GROUP
    assert scaled["spec"]["scaleTargetRef"]["name"] == "worker"


def test_mesh_routes_never_retry_on_a_grpc_status() -> None:
    """One retry layer: the mesh retries only what never reached a pod."""
    services = by_kind(MANIFESTS, "VirtualService")
    hosts = {h for vs in services.values() for h in vs["spec"]["hosts"]}
    for name in SERVICES:
        assert f"{name}.utimesh.svc.cluster.local" in hosts, f"{name}: Istio's default retries"
    for name, vs in services.items():
        for route in vs["spec"]["http"]:
            retry_on = set(route["retries"]["retryOn"].split(","))
            assert retry_on <= {"connect-failure", "refused-stream"}, name


def test_only_the_edge_is_exposed() -> None:
    for name, service in SERVICES_K8S.items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name
    routes = [
        d["destination"]["host"]
        for vs in by_kind(MANIFESTS, "VirtualService").values()
        if vs["spec"].get("gateways")
        for r in vs["spec"]["http"]
        for d in r["route"]
    ]
    assert routes == ["edge.utimesh.svc.cluster.local"]


def test_the_image_runs_as_the_uid_the_pods_require() -> None:
    dockerfile = (K8S / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim AS build" in dockerfile
    user = re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert user, "USER must be numeric (runAsNonRoot checks it)"
    for deployment in DEPLOYMENTS.values():
        pod = deployment["spec"]["template"]["spec"]
        assert str(pod["securityContext"]["runAsUser"]) == user[-1]
        for container in containers(deployment):
            assert container["image"] == "utimesh"  # rewritten by the overlays' `images`


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlays_patch_what_the_base_has_and_set_the_image(overlay: Path) -> None:
    spec = load(overlay / KUSTOMIZATION)[0]
    assert "../../base" in spec["resources"]
    assert [i["name"] for i in spec["images"]] == ["utimesh"]
    known = {(m.kind, m.name) for m in MANIFESTS}
    for patch in spec.get("patches", []):
        for doc in load(overlay / patch["path"]):
            assert (doc["kind"], doc["metadata"]["name"]) in known, f"{overlay}: {patch}"
    for replica in spec.get("replicas", []):
        assert replica["name"] in DEPLOYMENTS and replica["name"] != "worker"


def _overlay_hpa(overlay: str) -> dict[str, Any]:
    (hpa,) = load(K8S / "overlays" / overlay / "worker-hpa.yaml")
    return dict(hpa["spec"])


def test_prod_runs_every_service_highly_available() -> None:
    spec = load(K8S / "overlays" / "prod" / KUSTOMIZATION)[0]
    counts = {r["name"]: r["count"] for r in spec["replicas"]}
    assert set(counts) == set(DEPLOYMENTS) - {"worker"}
    assert min(counts.values()) >= 3
    hpa = _overlay_hpa("prod")
    assert 3 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "../../components/external-secrets" in spec["components"]


def test_the_consult_paths_include_the_operations_it_serves() -> None:
    from services.consult.jobs.rpcs import OPERATIONS_SERVICE

    assert OPERATIONS_SERVICE in served_services("consult")
