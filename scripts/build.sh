#!/usr/bin/env bash
# Build what capgate ships, from a fresh clone, with nothing but python3 (>= 3.10) and the
# package index (pip's configured one):
#   dist/capgate-VERSION-py3-none-any.whl, dist/capgate-VERSION.tar.gz   (python -m build)
#   capgate.pyz   one file that runs with any CPython 3.10-3.14 on Linux x86_64 or aarch64
# and print the sha256 of each, to publish beside them (docs/distribution.md: verifying).
#
# Every third-party file is checked against the hash locks in requirements/: the build tools
# (build.txt) and, for capgate.pyz, each target's wheels (pyz.txt: capgate's dependencies and
# the mcp extra, so `capgate mcp` works too), downloaded with pip --require-hashes into a fresh
# wheelhouse that pex then builds from, offline, held to the lock's version for each target.
# pex, not shiv or a hand-made zipapp: pydantic-core and psutil are compiled, so the file must
# carry a wheel per interpreter and machine and pick one at start (pex resolves for many
# platforms at once and installs the right wheels into a cache, ~/.cache/pex, on first run).
#
#   usage: bash scripts/build.sh [--fetch-only] [--offline] [--out DIR]
#     --fetch-only  only download and hash-check every target's wheels into .cache/wheelhouse
#     --offline     take every file from .cache/wheelhouse (made by --fetch-only), no index
#     --out DIR     write the wheel, the sdist and capgate.pyz into DIR (default: dist/ and .)
#   BUILD_VENV=DIR  the environment with the locked build tools (default .cache/build-venv,
#                   made and filled from requirements/build.txt)
#   WHEELHOUSE=DIR  where --fetch-only puts, and --offline takes, the wheels (.cache/wheelhouse)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${BUILD_VENV:-.cache/build-venv}
wheelhouse=${WHEELHOUSE:-.cache/wheelhouse}
pythons="3.10 3.11 3.12 3.13 3.14"
machines="x86_64 aarch64"
fetch_only=0 offline=0 dist=dist pyz=capgate.pyz
while [ $# -gt 0 ]; do
    case $1 in
        --fetch-only) fetch_only=1 ;;
        --offline) offline=1 ;;
        --out) dist=$2 pyz=$2/capgate.pyz; shift ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
index=()
if [ $offline = 1 ]; then
    index=(--no-index --find-links "$wheelhouse")
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv ($python)"
    "$python" -m venv "$venv"
fi
stamp=$wheelhouse/.fetched-for
if [ $fetch_only = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$(sha256sum requirements/pyz.txt)" ]; then
    exit 0  # already fetched for this lock
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheels=$work/wheels
if [ $fetch_only = 1 ]; then
    wheels=$wheelhouse
else
    echo "== installing the locked build tools (requirements/build.txt, --require-hashes)"
    "${pip[@]}" install "${index[@]}" --require-hashes -r requirements/build.txt
fi
echo "== fetching each target's wheels, hash-checked (CPython $pythons; $machines)"
mkdir -p "$wheels"
for py in $pythons; do
    for machine in $machines; do
        "$venv/bin/python" scripts/pyz_targets.py filter requirements/pyz.txt "$py" "$machine" >"$work/lock.txt"
        "${pip[@]}" download "${index[@]}" --require-hashes --no-deps --only-binary :all: -d "$wheels" \
            --implementation cp --python-version "$py" --platform "manylinux2014_$machine" -r "$work/lock.txt"
    done
done
if [ $fetch_only = 1 ]; then
    sha256sum requirements/pyz.txt >"$stamp"
    exit 0
fi
# Reproducible: the same commit builds the same wheel and capgate.pyz (file times inside are
# the commit's), so anyone can rebuild and compare the published sha256.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}
echo "== building the wheel and the sdist (python -m build, with the locked setuptools)"
mkdir -p "$dist"
rm -f "$dist"/capgate-*.whl "$dist"/capgate-*.tar.gz "$pyz"
"$venv/bin/python" -m build --no-isolation --outdir "$dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
echo "== building $pyz (pex, from the hash-checked wheels only)"
platforms=()
for py in $pythons; do
    for machine in $machines; do
        "$venv/bin/python" scripts/pyz_targets.py platform "$py" "$machine" >"$work/platform-$py-$machine.json"
        platforms+=(--complete-platform "$work/platform-$py-$machine.json")
    done
done
# capgate[mcp] from its wheel and the hash-checked wheelhouse only, each target held to the
# version the lock pins for it (the constraints carry the lock's markers).
cp "$dist"/capgate-*.whl "$wheels"/
"$venv/bin/python" scripts/pyz_targets.py constraints requirements/pyz.txt >"$work/constraints.txt"
version=$("$venv/bin/python" -c 'import sys, tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])' 2>/dev/null \
    || sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
"$venv/bin/pex" "capgate[mcp]==$version" --constraints "$work/constraints.txt" \
    --no-pypi --find-links "$wheels" --no-build --resolver-version pip-2020-resolver "${platforms[@]}" \
    --entry-point capgate.cli:console_main --python-shebang '/usr/bin/env python3' \
    --venv --no-emit-warnings --output-file "$pyz" >/dev/null
echo "== sha256 (publish these beside the files; check a download with sha256sum -c)"
sha256sum "$pyz" "$dist"/capgate-*.whl "$dist"/capgate-*.tar.gz
