#!/usr/bin/env bash
# buf lint over protos/, with google/{api,rpc,longrunning}/*.proto taken from the installed googleapis-common-protos
# (no network, nothing vendored): both are copied into a temporary workspace.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/deps/google/api" "$work/deps/google/longrunning" "$work/deps/google/rpc"
cp -r "$here/utimesh" "$here/buf.yaml" "$work/"
cp "$site"/google/api/{annotations,http,client,field_behavior,launch_stage}.proto "$work/deps/google/api/"
cp "$site"/google/rpc/status.proto "$work/deps/google/rpc/"
# Shipped as operations_proto.proto; imported (and registered) as operations.proto.
cp "$site"/google/longrunning/operations_proto.proto "$work/deps/google/longrunning/operations.proto"
cat > "$work/buf.yaml" <<YAML
version: v2
modules:
  - path: .
    excludes: [deps]
  - path: deps
$(sed -n '/^lint:/,$p' "$here/buf.yaml")
YAML
cd "$work"
npx --yes @bufbuild/buf@1.75.0 lint --path utimesh
