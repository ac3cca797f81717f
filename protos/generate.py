"""Generate the Python contracts in libs/utimesh from protos/ (the one command; never edit output).

Usage: python protos/generate.py [--check]
  --check   generate into a temporary folder and fail if the checked-in code differs.
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # protos/generate.py -> repository root
PROTOS = ROOT / "protos"
OUT = ROOT / "libs"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generated_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for suffix in GENERATED_SUFFIXES:
        found.extend(root.rglob(f"utimesh/**/*{suffix}"))
    return sorted(found)


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into `out`."""
    import grpc_tools

    bindir = Path(sys.executable).parent
    from utimesh.kit.protopaths import googleapis_includes

    with googleapis_includes() as google:
        includes = [
            str(PROTOS),
            str(Path(grpc_tools.__file__).parent / "_proto"),
            *map(str, google),
        ]
        _protoc(out, includes, bindir)


def _protoc(out: Path, includes: list[str], bindir: Path) -> None:
    protos = [str(p.relative_to(PROTOS)) for p in proto_files()]
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *[f"-I{i}" for i in includes],
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    # Every generated folder is a regular package so that tools resolve it without guessing.
    for proto in protos:
        pkg = (out / proto).parent
        while pkg != out:
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text("")
            pkg = pkg.parent


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want = {p.relative_to(fresh) for p in generated_files(fresh)}
        have = {p.relative_to(OUT) for p in generated_files(OUT)}
        problems = [f"missing: {p}" for p in sorted(want - have)]
        problems += [f"stale (no proto generates it): {p}" for p in sorted(have - want)]
        problems += [
            f"differs: {p}"
            for p in sorted(want & have)
            if not filecmp.cmp(fresh / p, OUT / p, shallow=False)
        ]
    if problems:
        print("generated code is out of date; run `make protos`:", *problems, sep="\n  ")
        return 1
    print(f"generated code is up to date ({len(want)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args()
    if args.check:
        return check()
    # Generate aside first, then swap: an interrupted run never leaves the tree half-generated.
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        new = {p.relative_to(fresh) for p in generated_files(fresh)}
        for stale in generated_files(OUT):
            if stale.relative_to(OUT) not in new:
                stale.unlink()
        for rel in sorted(new):
            (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
            (OUT / rel).write_bytes((fresh / rel).read_bytes())
            init = (OUT / rel).parent / "__init__.py"
            if not init.exists():
                init.write_text("")
    print(
        f"generated {len(generated_files(OUT))} files from {len(proto_files())} protos into {OUT}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
