#!/usr/bin/env bash
# The main job, from a fresh clone: a demo agent run under `capgate run` (soft sandbox),
# doing allowed and hostile things, then the audit summary.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python examples/run_demo.py "$@"
