"""A hostile repository ``.git/config`` is refused with its reason wherever git is started —
``proc.run``, a command ``capgate run`` launches, a git a sandboxed Python child starts —
and the refusal is in the launcher's audit log (the kernel layer alone would stop the
program silently)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, audit_lines, capgate_run, empty_home, launcher_messages, write_policy


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    return ws


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return empty_home(tmp_path)


def _hostile(repo: Path, marker: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "config", "core.fsmonitor", f"touch {marker}; false"], check=True)


def _git_denials(home: Path) -> list[dict[str, object]]:
    return [line for line in audit_lines(home) if line.get("decision") == "deny" and line.get("op") == "proc.exec"
            and line.get("rule") == "process.gitConfig"]


def _run(repo: Path, home: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    policy = write_policy(repo, {"process": {"allowedCommands": ["git"]}})
    return capgate_run(["run", "--workspace", str(repo), "--policy", str(policy), "--allow-user-expansion", "--",
                        *cmd], home=home, cwd=repo)


def test_a_launched_git_in_a_hostile_repository_is_refused_visibly(repo: Path, home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    done = _run(repo, home, "git", "status")
    assert done.returncode == 0, done.stderr  # the control: an inert configuration runs
    _hostile(repo, marker)
    refused = _run(repo, home, "git", "status")
    assert refused.returncode == 125, refused.stderr
    assert "sandbox refused to start: proc.exec denied: /usr/bin/git (the repository's git configuration " \
           "(local scope) sets 'core.fsmonitor'" in "\n".join(launcher_messages(refused.stderr))
    assert "no denials" not in refused.stderr and "process.gitConfig" not in refused.stdout
    denial = _git_denials(home)
    assert len(denial) == 1 and "core.fsmonitor" in str(denial[0]["reason"])
    assert audit_lines(home)[-1]["event"] == "run.end"
    assert not marker.exists()
    # ``git config`` itself is not refused by the check (here the kernel layer keeps .git
    # read-only: the default policy writes only output/), so the user repairs it outside.
    repair = _run(repo, home, "git", "config", "--unset", "core.fsmonitor")
    assert "sandbox refused" not in repair.stderr and "could not lock config file" in repair.stderr
    assert not _git_denials(home)
    subprocess.run(["git", "-C", str(repo), "config", "--unset", "core.fsmonitor"], check=True)
    assert _run(repo, home, "git", "status").returncode == 0


_CHILD = (
    "import json, os, subprocess, sys\n"
    "env = dict(os.environ, **json.loads(sys.argv[1]))\n"
    "try:\n"
    "    out = subprocess.run(['git', 'status', '--short'], env=env, capture_output=True)\n"
    "    print(json.dumps({'ran': out.returncode}))\n"
    "except PermissionError as exc:\n"
    "    print(json.dumps({'refused': exc.reason, 'rule': exc.rule}))\n"
)


def test_a_git_started_by_a_python_child_is_refused_with_the_reason(repo: Path, home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    done = _run(repo, home, PY, "-c", _CHILD, "{}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ran": 0}  # the control
    _hostile(repo, marker)
    refused = _run(repo, home, PY, "-c", _CHILD, "{}")
    assert refused.returncode == 0, refused.stderr
    seen = json.loads(refused.stdout)
    assert seen["rule"] == "process.gitConfig" and "core.fsmonitor" in seen["refused"]
    assert [d["source"] for d in _git_denials(home)] == ["child"]
    assert not marker.exists()


def test_configuration_a_child_puts_in_gits_environment_is_checked_too(repo: Path, home: Path,
                                                                       tmp_path: Path) -> None:
    """``GIT_CONFIG_PARAMETERS`` (what ``git -c`` sets) from the agent are command-scope
    settings like capgate's own overrides, but not inert: only capgate's exact ones are
    skipped. ``GIT_CONFIG_COUNT``/``KEY``/``VALUE`` never reach git at all: a git the child
    starts gets capgate's own (``GIT_ENV``) in their place, as ``proc.run``'s git does."""
    marker = tmp_path / "pwned"
    inject = {"GIT_CONFIG_PARAMETERS": f"'core.fsmonitor'='touch {marker}; false'"}
    refused = _run(repo, home, PY, "-c", _CHILD, json.dumps(inject))
    assert refused.returncode == 0, refused.stderr
    seen = json.loads(refused.stdout)
    assert seen["rule"] == "process.gitConfig" and "command scope" in seen["refused"], seen
    replaced = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor",
                "GIT_CONFIG_VALUE_0": f"touch {marker}; false"}
    ran = _run(repo, home, PY, "-c", _CHILD, json.dumps(replaced))
    assert json.loads(ran.stdout) == {"ran": 0}, ran.stdout + ran.stderr
    harmless = {"GIT_CONFIG_PARAMETERS": "'user.name'='agent'"}
    ok = _run(repo, home, PY, "-c", _CHILD, json.dumps(harmless))
    assert json.loads(ok.stdout) == {"ran": 0}, ok.stdout + ok.stderr
    assert not marker.exists()


def test_the_system_file_is_trusted_only_when_git_reads_the_real_one(repo: Path, tmp_path: Path) -> None:
    """/etc/gitconfig is the administrator's (this machine's names a credential helper); a
    "system" file named by ``GIT_CONFIG_SYSTEM`` is anybody's, and is checked. capgate's own
    ``GIT_ENV`` overrides are command scope and inert."""
    import os
    import shutil

    from capgate.cmdrules import GIT_ENV
    from capgate.gitconfig import dangerous_git_config

    git = shutil.which("git")
    assert git is not None
    base = {"PATH": os.defpath, "HOME": str(tmp_path)}
    assert dangerous_git_config(git, str(repo), base) is None
    assert dangerous_git_config(git, str(repo), {**base, **GIT_ENV}) is None
    fake = tmp_path / "system.gitconfig"
    fake.write_text("[core]\n\tfsmonitor = touch /tmp/x\n")
    why = dangerous_git_config(git, str(repo), {**base, "GIT_CONFIG_SYSTEM": str(fake)})
    assert why is not None and "system scope" in why and "core.fsmonitor" in why
