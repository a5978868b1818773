"""capgate.pyz's targets (CPython 3.10+ on manylinux2014 x86_64 and aarch64), described for the
two tools scripts/build.sh hands a universal hash lock to.

* ``filter LOCK PY MACHINE``: the lock's lines whose marker holds on that target, with their
  ``--hash`` lines. ``pip download --platform/--python-version`` fetches another target's
  wheels but judges markers (``python_full_version >= '3.11'``) against the Python running pip,
  so the lock cannot be handed to it whole.
* ``constraints LOCK``: the pins with their markers and without hashes, for pex, so that each
  target resolves to exactly the version the lock gives it.
* ``platform PY MACHINE``: a pex "complete platform" (the target's marker environment and the
  wheel tags it accepts, in pip's order of preference). pex's abbreviated ``--platform`` lacks
  ``python_full_version``, which the lock's and some dependencies' markers use. glibc 2.17
  (manylinux2014) is the oldest the target claims, as for ``pip download`` above.

    usage: python scripts/pyz_targets.py filter LOCK 3.12 x86_64 > filtered.txt
           python scripts/pyz_targets.py constraints LOCK > constraints.txt
           python scripts/pyz_targets.py platform 3.12 aarch64 > platform.json
"""

from __future__ import annotations

import json
import sys

from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags

GLIBC_MINOR = 17  # manylinux2014
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def environment(py_version: str, machine: str) -> dict[str, str]:
    """The marker environment of CPython ``py_version`` (its .0 release) on Linux ``machine``."""
    return {"implementation_name": "cpython", "implementation_version": f"{py_version}.0", "os_name": "posix",
            "platform_machine": machine, "platform_python_implementation": "CPython", "platform_system": "Linux",
            "python_full_version": f"{py_version}.0", "python_version": py_version, "sys_platform": "linux",
            "platform_release": "", "platform_version": ""}


def platforms(machine: str) -> list[str]:
    """The platform tags a glibc-2.17 ``machine`` accepts, best first (aarch64 wheels start at 2.17)."""
    lowest = 5 if machine in ("x86_64", "i686") else GLIBC_MINOR
    out: list[str] = []
    for minor in range(GLIBC_MINOR, lowest - 1, -1):
        out.append(f"manylinux_2_{minor}_{machine}")
        if minor in _LEGACY:
            out.append(f"{_LEGACY[minor]}_{machine}")
    return [*out, f"linux_{machine}"]


def complete_platform(py_version: str, machine: str) -> dict[str, object]:
    major, minor = (int(part) for part in py_version.split("."))
    abi = f"cp{major}{minor}"
    plats = platforms(machine)
    tags = [*cpython_tags((major, minor), [abi], plats), *compatible_tags((major, minor), abi, plats)]
    return {"marker_environment": environment(py_version, machine), "compatible_tags": [str(t) for t in tags]}


def select(lines: list[str], env: dict[str, str]) -> list[str]:
    out: list[str] = []
    keep = False
    for line in lines:
        if line.startswith((" ", "\t")):
            if keep and not line.strip().startswith("#"):
                out.append(line.rstrip())
            continue
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line.rstrip().rstrip("\\").strip())
        keep = req.marker is None or req.marker.evaluate(env)
        if keep:
            out.append(f"{req.name}{req.specifier} \\")
    # The last line of each requirement ends without a continuation (a comment followed it).
    return [line.rstrip("\\").rstrip() if line.endswith("\\") and not (out[i + 1:] or [""])[0].startswith(" ")
            else line for i, line in enumerate(out)]


def constraints(lines: list[str]) -> list[str]:
    reqs = (Requirement(line.rstrip().rstrip("\\").strip()) for line in lines
            if line.strip() and not line.startswith((" ", "\t", "#")))
    return [f"{r.name}{r.specifier}" + (f" ; {r.marker}" if r.marker else "") for r in reqs]


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


def main(argv: list[str]) -> int:
    if argv[:1] == ["filter"] and len(argv) == 4:
        text = "\n".join(select(_lines(argv[1]), environment(argv[2], argv[3])))
    elif argv[:1] == ["constraints"] and len(argv) == 2:
        text = "\n".join(constraints(_lines(argv[1])))
    elif argv[:1] == ["platform"] and len(argv) == 3:
        text = json.dumps(complete_platform(argv[1], argv[2]), indent=1)
    else:
        sys.stderr.write(__doc__ or "")
        return 2
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
