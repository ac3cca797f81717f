"""The checked-in Kubernetes manifests (k8s/), read as plain YAML: no cluster, no kustomize."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
BASE = K8S / "base"
KUSTOMIZATION = "kustomization.yaml"

Doc = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: Doc

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name", ""))


def yaml_files(root: Path = K8S) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml"))


def load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def kustomization_resources(directory: Path) -> Iterator[Path]:
    """Every file a kustomization (and the components it uses) lists as a resource, following
    directories down; its own patch files are not resources."""
    spec = load(directory / KUSTOMIZATION)[0]
    for entry in [*spec.get("resources", []), *spec.get("components", [])]:
        target = (directory / entry).resolve()
        if target.is_dir():
            yield from kustomization_resources(target)
        else:
            yield target


def base_manifests() -> list[Manifest]:
    """What the base kustomization deploys, in file order."""
    return [Manifest(p, d) for p in kustomization_resources(BASE) for d in load(p)]


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Doc]:
    return {m.name: m.doc for m in manifests if m.kind == kind}


def containers(deployment: Doc) -> list[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def effective_env(container: Doc, configmaps: dict[str, Doc]) -> dict[str, Any]:
    """The container's environment: envFrom ConfigMaps first, then `env` (which wins). A value
    from a Secret or the downward API stays its `valueFrom` mapping."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(configmaps[ref].get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else item["valueFrom"]
    return env
