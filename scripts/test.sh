#!/usr/bin/env bash
# The full test suite, from a fresh clone: venv, install, lint, type-check, tests.
#   usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv ($python)"
    "$python" -m venv .venv
fi
echo "== installing pip, capgate and its test dependencies into .venv (quiet; a first run takes a minute)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "== byte-compiling capgate"
# Byte-compile now: with PYTHONDONTWRITEBYTECODE=1 (CI sets it) every capgate start would
# otherwise recompile the package from source (~100 ms per sandboxed run).
.venv/bin/python -m compileall -q capgate >/dev/null
# The third-party workload the soft-sandbox tests run (six's own test suite, from its sdist):
# fetched here, at install time, because tests never touch the network beyond loopback.
if ! ls .cache/test-workloads/six-1.16.0.tar.gz >/dev/null 2>&1; then
    echo "== fetching the test workload (six 1.16.0 sdist) into .cache/test-workloads"
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d .cache/test-workloads six==1.16.0
fi
echo "== ruff"
.venv/bin/ruff check capgate wrappers tests benchmarks examples
echo "== mypy (strict)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
