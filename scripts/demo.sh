#!/usr/bin/env bash
# The main job, from a fresh clone: a demo agent (examples/demo_ws/agent.py, a plain Python
# program that does not import capgate) run under `capgate run`, then a native helper (head,
# which no audit hook can see) run the same way. capgate picks its backend (namespace where
# bubblewrap and user namespaces work, else soft) and prints the banner; the agent prints what
# it was allowed and denied; capgate ends each run with the denial summary from the audit log.
#   usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The locked dependencies, hash-checked (requirements/runtime.txt; build.txt brings the
# setuptools that builds capgate from this checkout, with nothing else fetched).
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
    -r requirements/runtime.txt -r requirements/build.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
# Byte-compile now: with PYTHONDONTWRITEBYTECODE=1 (CI sets it) every capgate start would
# otherwise recompile the package from source (~100 ms per sandboxed run).
.venv/bin/python -m compileall -q capgate >/dev/null
echo "== 1. a Python agent: every open, connect and exec goes through the gate"
.venv/bin/capgate run --workspace examples/demo_ws -- .venv/bin/python examples/demo_ws/agent.py
echo
echo "== 2. a native helper (head): no hook sees it; the kernel layers below the gate answer it"
.venv/bin/capgate run --workspace examples/demo_ws -- /usr/bin/head -n 2 .env /etc/shadow "$HOME/.ssh/id_rsa" src/app.py \
    || true
