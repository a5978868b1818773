"""The lines of a hash-locked requirement file that apply to one target interpreter.

``pip download --platform/--python-version`` fetches another target's wheels but judges the
lock's environment markers (``python_full_version >= '3.11'``) against the Python running pip,
so a universal lock cannot be handed to it whole. This keeps, for each requirement, the lines
whose marker holds on the target (each with its ``--hash`` lines), for scripts/build.sh.

    usage: python scripts/pyz_targets.py LOCK PY_VERSION MACHINE > filtered.txt
    (PY_VERSION like 3.12; MACHINE x86_64 or aarch64)
"""

from __future__ import annotations

import sys

from packaging.requirements import Requirement


def environment(py_version: str, machine: str) -> dict[str, str]:
    return {"implementation_name": "cpython", "implementation_version": f"{py_version}.0", "os_name": "posix",
            "platform_machine": machine, "platform_python_implementation": "CPython", "platform_system": "Linux",
            "python_full_version": f"{py_version}.0", "python_version": py_version, "sys_platform": "linux",
            "platform_release": "", "platform_version": ""}


def select(lines: list[str], env: dict[str, str]) -> list[str]:
    out: list[str] = []
    keep = False
    for line in lines:
        if line.startswith((" ", "\t")):
            if keep and not line.strip().startswith("#"):
                out.append(line)
            continue
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line.rstrip().rstrip("\\").strip())
        keep = req.marker is None or req.marker.evaluate(env)
        if keep:
            out.append(f"{req.name}{req.specifier} \\")
    return [line.rstrip() for line in out]


def main(argv: list[str]) -> int:
    lock, py_version, machine = argv
    with open(lock, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    selected = select(lines, environment(py_version, machine))
    sys.stdout.write("\n".join(_close(selected)) + "\n")
    return 0


def _close(lines: list[str]) -> list[str]:
    """Drop the line continuation of each requirement's last line (a dropped comment was next)."""
    out: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.endswith("\\") and not nxt.startswith((" ", "\t")):
            line = line.rstrip("\\").rstrip()
        out.append(line)
    return out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
