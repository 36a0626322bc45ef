#!/usr/bin/env bash
# Prometheus scraping a three-node group under load, and the web console in headless Chromium
# checked against the cluster's state (Tests/Ops/ops_check.py; docs/operations.md).
# Usage: scripts/ops-check.sh PATH/TO/tern
set -euo pipefail
cd "$(dirname "$0")/.."
tern="$(realpath "${1:-.build/debug/tern}")"
for tool in prometheus chromium; do
    command -v "$tool" > /dev/null || { echo "ops-check: $tool is not installed (apt-get install $tool; .ci/run does)"; exit 1; }
done
python3 Tests/Ops/ops_check.py "$tern"
