#!/usr/bin/env bash
# The RocketMQ 5 interoperability suite (docs/rocketmq.md): the official Python client from
# PyPI, in a virtual environment under .build, against a three-node `tern cluster up` with its
# gRPC fronts. Usage: scripts/rocketmq-interop.sh [path to tern] (default .build/debug/tern).
set -euo pipefail
cd "$(dirname "$0")/.."
tern=${1:-.build/debug/tern}
venv=.build/rmq-venv
client=rocketmq-python-client==5.1.2
if ! "$venv/bin/python" -c "import rocketmq" 2> /dev/null; then
    echo "interop: installing $client into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$client"
fi
exec "$venv/bin/python" -u Tests/Interop/rocketmq_interop.py --tern "$tern" --data .build/interop-data \
    --base-port 9411 --grpc-base-port 8411 "${@:2}"
