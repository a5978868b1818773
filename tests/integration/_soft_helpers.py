"""Shared helpers for the launcher / soft-sandbox integration tests: run the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PY = sys.executable


def soft_by_default(args: list[str]) -> list[str]:
    """``capgate run`` without ``--backend`` picks the namespace backend where it can run; the
    tests written for the soft backend say so explicitly (``--backend soft`` is added when no
    backend is named). The namespace backend has its own tests, and auto's choice is tested
    where it is the subject."""
    if args[:1] == ["run"] and "--backend" not in args and "--help" not in args:
        return ["run", "--backend", "soft", *args[1:]]
    return args


def capgate_run(args: list[str], *, home: Path, cwd: Path, env_extra: dict[str, str] | None = None,
                timeout: float = 90, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN_SANDBOX", "SOFT_SANDBOX"))}
    env.pop("XDG_STATE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)  # (the user-level policy file: the fake HOME's, never the real one)
    env["HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([PY, "-m", "capgate", *soft_by_default(args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, input=None if stdin is None else stdin.decode())


def launcher_messages(stderr: str) -> list[str]:
    """The launcher's messages in ``stderr``, each whole: a message longer than the banner's
    100 columns goes on ``capgate:   `` continuation lines, joined back here with one space
    (so a test can look for a phrase wherever the line was wrapped). The indented items under
    a message (``capgate:   widened: ...``) are joined to it too. Other lines are kept."""
    out: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("capgate:   ") and out:
            out[-1] += " " + line.removeprefix("capgate:").strip()
        else:
            out.append(line)
    return out


def audit_lines(home: Path) -> list[dict[str, object]]:
    logs = sorted((home / ".local" / "state" / "capgate" / "audit").glob("*.jsonl"))
    assert logs, "no audit log written"
    return [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]


def source_workspace(tmp_path: Path) -> Path:
    """A workspace with one source file (``src/app.py``) and nothing else: no write root yet."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    return ws


def empty_home(tmp_path: Path) -> Path:
    """The fake HOME the launcher sees (its audit log goes under it)."""
    home = tmp_path / "home"
    home.mkdir()
    return home


def write_policy(ws: Path, body: dict[str, object]) -> Path:
    """A version-1 user policy file next to the workspace (outside it: the child cannot edit it)."""
    path = ws.parent / "policy.json"
    path.write_text(json.dumps({"version": 1, **body}))
    return path
