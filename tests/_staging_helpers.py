"""Shared by the staged-writes tests: a workspace snapshot to compare byte for byte, and the
real ``capgate run --staged`` / ``changes`` / ``apply`` / ``discard`` commands."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests._namespace_helpers import require_namespace_backend
from tests.integration._soft_helpers import capgate_run

PROBE_SOURCE = Path(__file__).resolve().parent / "probes" / "staged_probe.c"

Entry = tuple[object, ...]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every name beneath ``root``, never following a symlink: type, mode and bytes (or the
    link's target). Two equal snapshots are two byte-for-byte equal trees."""
    out: dict[str, Entry] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
            else:
                out[rel] = ("special", st.st_mode)
    return out


def build_staged_probe(directory: Path) -> Path:
    out = directory / "staged_probe"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(PROBE_SOURCE)], check=True, capture_output=True)
    return out


def staged(ws: Path, home: Path, command: list[str], *options: str, timeout: float = 120,
           backend: tuple[str, ...] = ("--backend", "namespace")) -> subprocess.CompletedProcess[str]:
    """``capgate run --backend namespace --staged [options] -- command`` in ``ws`` (another
    backend: ``backend=("--backend", "container", "--runtime", ...)``)."""
    if "namespace" in backend:
        require_namespace_backend()
    return capgate_run(["run", *backend, "--staged", "--workspace", str(ws), *options, "--", *command], home=home,
                       cwd=ws, timeout=timeout)


def capgate(ws: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``capgate changes|apply|discard ... --workspace ws``."""
    return capgate_run([*args, "--workspace", str(ws)], home=home, cwd=ws)


def changes(ws: Path, home: Path, run_id: str | None = None) -> dict[str, object]:
    done = capgate(ws, home, "changes", *([run_id] if run_id else []), "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def statuses(data: dict[str, object]) -> dict[str, str]:
    """``{path: status}`` of a ``changes --json`` answer."""
    entries = data["changes"]
    assert isinstance(entries, list)
    return {str(c["path"]): str(c["status"]) for c in entries}


def staging_dirs(home: Path) -> list[Path]:
    root = home / ".local" / "state" / "capgate" / "staging"
    return sorted(p for p in root.iterdir()) if root.exists() else []
