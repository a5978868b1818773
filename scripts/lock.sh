#!/usr/bin/env bash
# Regenerate the hash-locked requirement files in requirements/ from pyproject.toml and
# requirements/build.in (run it after changing a dependency; tests/unit/test_locks.py fails
# until you do). One universal resolution (uv --universal) for every supported Python
# (3.10+) and platform: each file pins one version per marker and lists the hashes of every
# wheel and sdist of it, so the same file installs on x86_64 and aarch64, 3.10 to 3.13.
#   test.txt     capgate's dependencies + the `test` extra + the build tools (scripts/test.sh)
#   runtime.txt  capgate's dependencies only (scripts/demo.sh, `pip install` for users)
#   pyz.txt      capgate's dependencies + the `mcp` extra: what capgate.pyz carries (scripts/build.sh)
#   build.txt    the build tools only: pip, setuptools, build, pex (scripts/build.sh)
# The others are constrained to test.txt, so all of them agree on every version.
# uv itself comes from requirements/lock-tools.txt (hash-locked too).
#   usage: bash scripts/lock.sh [--upgrade]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tools=.cache/lock-tools
if [ ! -x "$tools/bin/uv" ]; then
    "$python" -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r requirements/lock-tools.txt
fi
export UV_CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"
compile=("$tools/bin/uv" pip compile --quiet --universal --python-version 3.10 --generate-hashes "$@")
"${compile[@]}" pyproject.toml --extra test requirements/build.in -o requirements/test.txt
"${compile[@]}" pyproject.toml -c requirements/test.txt -o requirements/runtime.txt
"${compile[@]}" pyproject.toml --extra mcp -c requirements/test.txt -o requirements/pyz.txt
"${compile[@]}" requirements/build.in -c requirements/test.txt -o requirements/build.txt
echo "locked: requirements/test.txt requirements/runtime.txt requirements/pyz.txt requirements/build.txt"
