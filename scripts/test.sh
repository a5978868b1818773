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
echo "== installing the locked test dependencies (requirements/test.txt, --require-hashes) and capgate into .venv"
# Every third-party file is checked against the lock's hashes (pip, setuptools and the other
# build tools included); capgate itself is built from this checkout with those tools, offline
# (--no-build-isolation: no unpinned setuptools fetched for the build). scripts/lock.sh
# regenerates the lock after a dependency change.
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/test.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
broken=$(.venv/bin/python -m pip check --disable-pip-version-check) || { echo "$broken" >&2; exit 1; }
echo "== byte-compiling capgate"
# Byte-compile now: with PYTHONDONTWRITEBYTECODE=1 (CI sets it) every capgate start would
# otherwise recompile the package from source (~100 ms per sandboxed run).
.venv/bin/python -m compileall -q capgate >/dev/null
# The third-party workload the soft-sandbox tests run (six's own test suite, from its sdist):
# fetched here, at install time, because tests never touch the network beyond loopback.
if ! ls .cache/test-workloads/six-1.16.0.tar.gz >/dev/null 2>&1; then
    echo "== fetching the test workload (six 1.16.0 sdist) into .cache/test-workloads"
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        --require-hashes -r requirements/test-workloads.txt -d .cache/test-workloads
fi
# capgate.pyz's wheels for every target (tests/integration/test_distribution.py builds the
# file from them, offline): fetched and hash-checked here, once per change of the lock.
echo "== fetching capgate.pyz's wheels (requirements/pyz.txt, hash-checked) into .cache/wheelhouse"
BUILD_VENV=.venv bash scripts/build.sh --fetch-only
echo "== ruff"
.venv/bin/ruff check capgate wrappers tests benchmarks examples
echo "== mypy (strict)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
