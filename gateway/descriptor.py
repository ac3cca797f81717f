"""The protobuf descriptor set of the consult API that Envoy's JSON transcoder is driven by.

Built at run time into the state dir (a binary that is never committed), preferably with protoc
from `protos/` (grpcio-tools; keeps comments for the OpenAPI document). Where the repository's
protos are not at hand (an installed wheel), the same descriptors are taken from the generated
Python modules, which protoc produced from those very files.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from utimesh.kit.protopaths import googleapis_includes, site_packages

CONSULT_PROTO = "utimesh/consult/v1/consult.proto"
ERROR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
"""Error detail types the services send (ErrorInfo, BadRequest): in the set so that Envoy can
print a gRPC status's `details` as JSON."""
REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOS_ROOT = REPO_ROOT / "protos"
DESCRIPTOR_FILE = "consult.pb"


class DescriptorError(RuntimeError):
    """The descriptor set could not be built (protoc failed or the protos are missing)."""


def _grpc_tools_dir() -> Path | None:
    """Where grpcio-tools (a dev dependency) is installed, if it is."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _protoc_includes(protos_root: Path, google: list[Path] | None = None) -> list[str]:
    """`google`: googleapis include folders (utimesh.kit.protopaths); default site-packages."""
    includes = [str(protos_root), *map(str, google or [site_packages()])]
    tools = _grpc_tools_dir()
    return includes if tools is None else [*includes, str(tools / "_proto")]


def protoc_available(protos_root: Path = PROTOS_ROOT) -> bool:
    """True when protoc (grpcio-tools) and the repository's protos are both at hand."""
    return _grpc_tools_dir() is not None and (protos_root / CONSULT_PROTO).is_file()


def build_with_protoc(out: Path, *, protos_root: Path = PROTOS_ROOT) -> Path:
    """Run protoc with `--include_imports --include_source_info` for the consult proto."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then rename: a concurrent reader (Envoy starting) never sees half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=".consult-", suffix=".pb", dir=out.parent)
    os.close(fd)
    with googleapis_includes() as google:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *[f"-I{path}" for path in _protoc_includes(protos_root, google)],
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={tmp_name}",
            CONSULT_PROTO,
            *ERROR_PROTOS,
        ]
        try:
            result = subprocess.run(
                cmd, cwd=protos_root, capture_output=True, text=True, timeout=60, check=False
            )
            if result.returncode != 0:
                raise DescriptorError(
                    f"protoc failed ({result.returncode}): {result.stderr.strip()}"
                )
            os.replace(tmp_name, out)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    return out


def descriptor_set_from_modules() -> descriptor_pb2.FileDescriptorSet:
    """The consult descriptors and their imports, dependencies first, from generated code."""
    from google.rpc import error_details_pb2, status_pb2

    from utimesh.consult.v1 import consult_pb2

    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for module in (consult_pb2, status_pb2, error_details_pb2):
        visit(module.DESCRIPTOR)
    fds = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        file.CopyToProto(fds.file.add())
    return fds


def build_descriptor_set(state_dir: Path, *, protos_root: Path = PROTOS_ROOT) -> Path:
    """Write the descriptor set to `state_dir/consult.pb` and return its path."""
    out = state_dir / DESCRIPTOR_FILE
    if protoc_available(protos_root):
        return build_with_protoc(out, protos_root=protos_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(descriptor_set_from_modules().SerializeToString())
    os.replace(tmp, out)
    return out


def load_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    """Parse a descriptor set file."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return fds
