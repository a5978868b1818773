#!/usr/bin/env bash
# The main job, from a fresh clone: a demo agent (examples/demo_ws/agent.py, a plain Python
# program that does not import capgate) run under `capgate run` in the soft sandbox. It does
# honest work and a few hostile things; capgate prints the banner, the agent prints what it
# was allowed and denied, and capgate ends with the denial summary from the audit log.
#   usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
# Byte-compile now: with PYTHONDONTWRITEBYTECODE=1 (CI sets it) every capgate start would
# otherwise recompile the package from source (~100 ms per sandboxed run).
.venv/bin/python -m compileall -q capgate >/dev/null
exec .venv/bin/capgate run --backend soft --workspace examples/demo_ws -- \
    .venv/bin/python examples/demo_ws/agent.py
