#!/usr/bin/env bash
# The deployment files against the Kubernetes schemas, and the manifest's processes started with
# its arguments in network namespaces (Tests/Ops/deploy_check.py; docs/operations.md).
# Usage: scripts/deploy-check.sh PATH/TO/tern
set -euo pipefail
cd "$(dirname "$0")/.."
tern="$(realpath "${1:-.build/debug/tern}")"
venv=.build/ops-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0 pyyaml
fi
"$venv/bin/python" Tests/Ops/deploy_check.py "$tern" "$venv/bin"
"$venv/bin/python" Tests/Ops/deploy_groups_check.py "$tern" "$venv/bin"
