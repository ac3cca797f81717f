#!/usr/bin/env bash
# buf lint over protos/, with google/api/*.proto taken from the installed googleapis-common-protos
# (no network, nothing vendored): both are copied into a temporary workspace.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/deps/google/api"
cp -r "$here/utimesh" "$here/buf.yaml" "$work/"
cp "$site"/google/api/{annotations,http}.proto "$work/deps/google/api/"
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
