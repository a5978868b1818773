"""Staged writes (issue 21), the benign side: a native child (a C probe, a shell with
coreutils) and a Python child edit, create, delete, rename, chmod, make a symlink and a hard
link; the real workspace is byte-for-byte unchanged until ``capgate apply``, and exactly as
expected after it. A git repository workspace where the agent commits: ``apply`` carries the
commit. ``--on-exit``, ``changes``/``discard``, and the backends that refuse ``--staged``.
All with real overlays and real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from capgate import launcher
from tests._staging_helpers import (
    build_staged_probe,
    capgate,
    changes,
    snapshot,
    staged,
    staging_dirs,
    statuses,
)
from tests.integration._soft_helpers import PY, capgate_run, launcher_messages


def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "a.txt").write_text("alpha\n")
    (ws / "src" / "b.txt").write_text("beta\n")
    (ws / "old.txt").write_text("old\n")
    (ws / "mode.txt").write_text("mode\n")
    (ws / "gone").mkdir()
    (ws / "gone" / "g.txt").write_text("g\n")
    home = tmp_path / "home"
    home.mkdir()
    return ws, home


def _expected_after(before: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """What every child below does, applied to a snapshot by hand."""
    after = dict(before)
    after["src/a.txt"] = ("file", 0o644, b"alpha\nmore\n")
    after["new.txt"] = ("file", 0o644, b"new\n")
    after["hard"] = ("file", 0o644, b"new\n")
    del after["src/b.txt"]
    after["renamed.txt"] = after.pop("old.txt")
    after["mode.txt"] = ("file", 0o600, b"mode\n")
    after["link"] = ("link", "src/a.txt")
    after["made"] = ("dir", 0o755)
    after["made/x"] = ("file", 0o644, b"x")
    del after["gone/g.txt"], after["gone"]
    return after


def _check_staged_then_applied(ws: Path, home: Path, before: dict[str, tuple[object, ...]],
                               done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert snapshot(ws) == before  # nothing landed
    data = changes(ws, home)
    assert statuses(data) == {"src/a.txt": "M", "new.txt": "A", "hard": "A", "src/b.txt": "D", "renamed.txt": "R",
                              "mode.txt": "M", "link": "A", "made": "A", "made/x": "A", "gone/g.txt": "D", "gone": "D"}
    entries = data["changes"]
    assert isinstance(entries, list)
    assert [c.get("from") for c in entries if c["status"] == "R"] == ["old.txt"]
    assert f"staged run {data['run']}: 11 changes" in done.stderr
    assert "  R          4  old.txt -> renamed.txt" in done.stderr
    applied = capgate(ws, home, "apply")
    assert applied.returncode == 0, applied.stderr
    assert snapshot(ws) == _expected_after(before)
    assert staging_dirs(home) == []  # nothing pending: the staging is gone


def test_native_probe_changes_land_only_at_apply(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    probe = build_staged_probe(tmp_path)
    shutil.copy(probe, ws / "staged_probe")
    (ws / "mode.txt").chmod(0o644)
    before = snapshot(ws)
    w = str(ws)
    done = staged(ws, home, [f"{w}/staged_probe",
                             "append", f"{w}/src/a.txt", "more\n", "write", f"{w}/new.txt", "new\n",
                             "unlink", f"{w}/src/b.txt", "rename", f"{w}/old.txt", f"{w}/renamed.txt",
                             "chmod", f"{w}/mode.txt", "600", "symlink", "src/a.txt", f"{w}/link",
                             "link", f"{w}/new.txt", f"{w}/hard", "mkdir", f"{w}/made", "write", f"{w}/made/x", "x",
                             "unlink", f"{w}/gone/g.txt", "rmdir", f"{w}/gone", "read", f"{w}/src/a.txt"])
    assert "ERR" not in done.stdout, done.stdout + done.stderr
    assert "read OK [alpha more ]" in done.stdout  # the child reads back its own staged version
    _check_staged_then_applied(ws, home, before, done)


def test_shell_and_coreutils_changes_land_only_at_apply(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    (ws / "mode.txt").chmod(0o644)
    before = snapshot(ws)
    script = ("printf 'more\\n' >> src/a.txt && printf 'new\\n' > new.txt && rm src/b.txt && mv old.txt renamed.txt"
              " && chmod 600 mode.txt && ln -s src/a.txt link && ln new.txt hard && mkdir made"
              " && printf x > made/x && rm -r gone && cat src/a.txt")
    tools = [arg for tool in ("rm", "mv", "chmod", "ln", "mkdir", "cat") for arg in ("--allow-run", tool)]
    done = staged(ws, home, ["/bin/sh", "-c", script], *tools)
    assert done.stdout == "alpha\nmore\n", done.stderr
    _check_staged_then_applied(ws, home, before, done)


_PY_CHILD = """
import os
with open("src/a.txt", "a") as fh: fh.write("more\\n")
with open("new.txt", "w") as fh: fh.write("new\\n")
os.remove("src/b.txt")
os.rename("old.txt", "renamed.txt")
os.chmod("mode.txt", 0o600)
os.symlink("src/a.txt", "link")
os.link("new.txt", "hard")
os.mkdir("made")
with open("made/x", "w") as fh: fh.write("x")
os.remove("gone/g.txt")
os.rmdir("gone")
print(open("src/a.txt").read(), end="")
"""


def test_python_child_changes_land_only_at_apply(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    (ws / "mode.txt").chmod(0o644)
    before = snapshot(ws)
    done = staged(ws, home, [PY, "-c", _PY_CHILD])
    assert done.stdout == "alpha\nmore\n", done.stderr
    _check_staged_then_applied(ws, home, before, done)


def test_git_commit_inside_is_carried_by_apply(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(ws)], check=True)
    (ws / "app.py").write_text("print(1)\n")
    subprocess.run([*git, "-C", str(ws), "add", "app.py"], check=True)
    subprocess.run([*git, "-C", str(ws), "commit", "-qm", "first"], check=True)
    head = subprocess.run(["git", "-C", str(ws), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    before = snapshot(ws)
    script = ("printf 'print(2)\\n' > app.py && git -c user.name=agent -c user.email=a@example.invalid "
              "commit -qam 'agent change'")
    done = staged(ws, home, ["/bin/sh", "-c", script], "--allow-run", "git")
    assert done.returncode == 0, done.stderr
    assert snapshot(ws) == before
    assert subprocess.run(["git", "-C", str(ws), "rev-parse", "HEAD"], capture_output=True, text=True).stdout == head
    applied = capgate(ws, home, "apply")
    assert applied.returncode == 0, applied.stderr
    log = subprocess.run(["git", "-C", str(ws), "log", "--format=%s"], capture_output=True, text=True, check=True)
    assert log.stdout.splitlines() == ["agent change", "first"]
    status = subprocess.run(["git", "-C", str(ws), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    fsck = subprocess.run(["git", "-C", str(ws), "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    assert (ws / "app.py").read_text() == "print(2)\n"


@pytest.mark.parametrize("on_exit", ["apply", "discard"])
def test_on_exit_applies_or_discards(tmp_path: Path, on_exit: str) -> None:
    ws, home = _workspace(tmp_path)
    done = staged(ws, home, [PY, "-c", "open('new.txt', 'w').write('n')"], "--on-exit", on_exit)
    assert done.returncode == 0, done.stderr
    assert (ws / "new.txt").exists() is (on_exit == "apply")
    assert staging_dirs(home) == []


def test_on_exit_apply_keeps_a_failed_run(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    done = staged(ws, home, [PY, "-c", "open('new.txt', 'w').write('n'); raise SystemExit(3)"], "--on-exit", "apply")
    assert done.returncode == 3
    assert not (ws / "new.txt").exists()
    assert "not applied, because the child exited with status 3" in " ".join(launcher_messages(done.stderr))
    assert statuses(changes(ws, home)) == {"new.txt": "A"}


def test_changes_diff_and_discard(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    done = staged(ws, home, [PY, "-c", "open('src/a.txt', 'a').write('more\\n')"])
    assert done.returncode == 0, done.stderr
    run_id = changes(ws, home)["run"]
    shown = capgate(ws, home, "changes", str(run_id), "--diff")
    assert shown.returncode == 0
    assert "+more" in shown.stdout and "M" in shown.stdout
    (staging,) = staging_dirs(home)
    assert staging.stat().st_mode & 0o777 == 0o700
    assert not str(staging).startswith(str(ws))
    gone = capgate(ws, home, "discard")
    assert gone.returncode == 0, gone.stderr
    assert staging_dirs(home) == [] and (ws / "src" / "a.txt").read_text() == "alpha\n"
    assert capgate(ws, home, "changes").returncode == 2  # nothing left to show


def test_soft_backend_refuses_staged_with_the_reason(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    done = capgate_run(["run", "--backend", "soft", "--staged", "--workspace", str(ws), "--", "/bin/true"],
                       home=home, cwd=ws)
    assert done.returncode == 2
    assert "the soft backend cannot stage writes" in " ".join(launcher_messages(done.stderr))
    forced = capgate_run(["run", "--staged", "--workspace", str(ws), "--", "/bin/true"], home=home, cwd=ws,
                         env_extra={"SOFT_SANDBOX": "1"})
    assert forced.returncode == 2
    assert staging_dirs(home) == []
    control = staged(ws, home, ["/bin/true"])  # the namespace backend stages
    assert control.returncode == 0, control.stderr


def test_container_backend_stages_and_auto_takes_it_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from capgate.backends.container import ContainerBackend

    monkeypatch.setattr(ContainerBackend, "available", lambda self: (True, ""))
    assert launcher._choose_staged_backend("container", {})[0] == "container"
    assert launcher._choose_staged_backend("auto", {})[0] == "container"
    # control: without a container runtime, auto passes over it to a backend that can stage
    monkeypatch.setattr(ContainerBackend, "available", lambda self: (False, "no image"))
    assert launcher._choose_staged_backend("auto", {})[0] == "namespace"


def test_on_exit_without_staged_is_a_usage_error(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    done = capgate_run(["run", "--backend", "namespace", "--on-exit", "apply", "--workspace", str(ws), "--",
                        "/bin/true"], home=home, cwd=ws)
    assert done.returncode == 2 and "add --staged" in done.stderr


def test_changes_json_names_run_workspace_and_staging(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    staged(ws, home, [PY, "-c", "open('n.txt', 'w').write('12345')"])
    data = changes(ws, home)
    assert data["workspace"] == str(ws) and str(data["staging"]).startswith(str(home))
    assert data["changes"] == [{"path": "n.txt", "status": "A", "kind": "file", "size": 5, "mode": "0644"}]
    assert json.loads(capgate(ws, home, "changes", "--json").stdout) == data
    assert os.path.isdir(str(data["staging"]))


def test_applying_a_rename_by_its_new_name_moves_the_file(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    done = staged(ws, home, [PY, "-c", "import os; os.rename('old.txt', 'renamed.txt'); open('n', 'w').write('n')"])
    assert done.returncode == 0, done.stderr
    applied = capgate(ws, home, "apply", "renamed.txt")
    assert applied.returncode == 0, applied.stderr
    assert not (ws / "old.txt").exists() and (ws / "renamed.txt").read_text() == "old\n"
    assert not (ws / "n").exists()  # not named: still pending
    assert statuses(changes(ws, home)) == {"n": "A"}


_TYPE_CHANGES = """
import os, shutil
shutil.rmtree("gone")
open("gone", "w").write("a file now")
os.remove("old.txt")
os.mkdir("old.txt")
open("old.txt/inside", "w").write("i")
"""


def test_type_changes_land_whole(tmp_path: Path) -> None:
    ws, home = _workspace(tmp_path)
    done = staged(ws, home, [PY, "-c", _TYPE_CHANGES])
    assert done.returncode == 0, done.stderr
    applied = capgate(ws, home, "apply")
    assert applied.returncode == 0, applied.stderr
    assert (ws / "gone").read_text() == "a file now"
    assert (ws / "old.txt" / "inside").read_text() == "i"
    assert staging_dirs(home) == []


def test_staging_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "user"
    (home / "src").mkdir(parents=True)
    # the workspace is HOME: the state directory is inside it (the audit log put elsewhere, or it
    # would be refused first for the same reason)
    done = staged(home, home, ["/bin/true"], "--audit-log", str(tmp_path / "audit.jsonl"))
    assert done.returncode == 2
    assert "the staging directory" in " ".join(launcher_messages(done.stderr))
    assert not (home / ".local" / "state" / "capgate" / "staging").exists()
    ws, home2 = _workspace(tmp_path)  # control: a workspace beside HOME
    assert staged(ws, home2, ["/bin/true"]).returncode == 0
