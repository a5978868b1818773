"""``capgate`` command line and launcher mode, through the real command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, audit_lines, capgate_run, launcher_messages


def test_help_lists_every_subcommand(ws: Path, home: Path) -> None:
    proc = capgate_run(["--help"], home=home, cwd=ws)
    assert proc.returncode == 0
    for word in ("run", "policy", "check", "init"):
        assert word in proc.stdout
    run_help = capgate_run(["run", "--help"], home=home, cwd=ws)
    assert "--dry-run-policy" in run_help.stdout and "125" in run_help.stdout


def test_dry_run_prints_effective_policy_and_runs_nothing(ws: Path, home: Path) -> None:
    marker = ws / "output" / "ran"
    proc = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--internal", "--", PY, "-c",
                        f"open({str(marker)!r}, 'w')"], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    first = proc.stderr.splitlines()[0]
    assert first.startswith("capgate: backend: soft")
    assert "SOFT_SANDBOX=true" in proc.stderr and "defaults only" in proc.stderr
    data = json.loads(proc.stdout)
    assert data["backend"] == "soft" and data["expansion"] == "defaults"
    assert data["policy"]["workspace"] == str(ws.resolve())
    runtime = data["runtimeReadRoots"]["paths"]
    assert runtime == data["policy"]["filesystem"]["runtimeRead"]
    assert any(Path(sys.base_prefix).resolve().as_posix() == r or sys.base_prefix.startswith(r) for r in runtime)
    assert "/dev/null" in runtime
    assert not (home / ".local" / "state" / "capgate").exists()  # nothing ran, nothing logged


def test_user_file_restricting_is_reported_restrict_only(ws: Path, home: Path) -> None:
    (ws / "agent-permissions.json").write_text(json.dumps({"version": 1, "filesystem": {"write": ["output"]}}))
    proc = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--internal", "--", PY, "-c", "pass"],
                       home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert launcher_messages(proc.stderr)[2].startswith("capgate: policy: ") and "restrict-only" in proc.stderr
    assert json.loads(proc.stdout)["expansion"] == "restrict-only"


@pytest.mark.parametrize(("body", "key"), [
    ({"version": 1, "filesystem": {"write": ["."]}}, "filesystem.write"),
    ({"version": 1, "network": {"enabled": "true"}}, "network.enabled"),
    ({"version": 2}, "version"),
    ({"version": 1, "bogus": 1}, "bogus"),
])
def test_policy_errors_exit_2_naming_the_key(ws: Path, home: Path, body: dict[str, object], key: str) -> None:
    policy = ws.parent / "p.json"
    policy.write_text(json.dumps(body))
    marker = ws / "output" / "ran"
    proc = capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--", PY, "-c",
                        f"open({str(marker)!r}, 'w')"], home=home, cwd=ws)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr
    assert not marker.exists()
    validate = capgate_run(["policy", "validate", "--workspace", str(ws), "--policy", str(policy)], home=home, cwd=ws)
    assert validate.returncode == 2 and key in validate.stderr


def test_expansion_needs_the_flag(ws: Path, home: Path) -> None:
    policy = ws.parent / "p.json"
    policy.write_text(json.dumps({"version": 1, "filesystem": {"write": ["output", "notes"]}}))
    (ws / "notes").mkdir()
    refused = capgate_run(["policy", "validate", "--workspace", str(ws), "--policy", str(policy)], home=home, cwd=ws)
    assert refused.returncode == 2 and "--allow-user-expansion" in refused.stderr + refused.stdout
    ok = capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--allow-user-expansion", "--",
                      PY, "-c", "open('notes/n.txt', 'w').write('x')"], home=home, cwd=ws)
    assert ok.returncode == 0, ok.stderr
    assert "expanded" in ok.stderr and (ws / "notes" / "n.txt").read_text() == "x"


def test_container_backend_without_its_image_refuses_with_125(ws: Path, home: Path) -> None:
    marker = ws / "output" / "ran"
    proc = capgate_run(["run", "--workspace", str(ws), "--backend", "container", "--image",
                        "localhost/capgate:no-such-image", "--", PY, "-c", f"open({str(marker)!r}, 'w')"],
                       home=home, cwd=ws)
    assert proc.returncode == 125
    assert "sandbox refused to start: --backend container:" in proc.stderr
    assert "no-such-image" in proc.stderr or "not installed" in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", "Yes"])
def test_soft_sandbox_env_forces_soft(ws: Path, home: Path, value: str) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--", PY, "-c", "pass"],
                       home=home, cwd=ws, env_extra={"SOFT_SANDBOX": value})
    assert proc.returncode == 0, proc.stderr
    assert f"backend: soft (SOFT_SANDBOX={value} in the environment forces" in proc.stderr.splitlines()[0]


@pytest.mark.parametrize("value", ["true", "1", "YES"])
def test_soft_sandbox_env_with_an_explicit_other_backend_is_a_usage_error(ws: Path, home: Path, value: str) -> None:
    """Never a silent override (design.md, launcher step 3): the message names both."""
    marker = ws / "output" / "ran"
    for extra in ([], ["--dry-run-policy"]):
        proc = capgate_run(["run", "--workspace", str(ws), "--backend", "container", *extra, "--", PY, "-c",
                            f"open({str(marker)!r}, 'w')"], home=home, cwd=ws, env_extra={"SOFT_SANDBOX": value})
        assert proc.returncode == 2, proc.stderr
        assert launcher_messages(proc.stderr) == [
            f"capgate: usage error: SOFT_SANDBOX={value} forces the soft backend, but --backend container asks for "
            "another: unset SOFT_SANDBOX or drop --backend container"]
        assert proc.stdout == "" and not marker.exists()
    same = capgate_run(["run", "--workspace", str(ws), "--backend", "soft", "--", PY, "-c",
                        f"open({str(marker)!r}, 'w')"], home=home, cwd=ws, env_extra={"SOFT_SANDBOX": value})
    assert same.returncode == 0 and marker.exists(), same.stderr  # the control: no contradiction


@pytest.mark.parametrize("value", ["maybe", "on", "2", "truee"])
def test_soft_sandbox_env_with_an_unknown_value_is_a_usage_error(ws: Path, home: Path, value: str) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--", PY, "-c", "pass"],
                       home=home, cwd=ws, env_extra={"SOFT_SANDBOX": value})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"capgate: usage error: SOFT_SANDBOX={value!r} is not understood: 1, yes or true")


@pytest.mark.parametrize("value", ["", "0", "no", "False"])
def test_soft_sandbox_env_off_leaves_the_choice_to_the_flag(ws: Path, home: Path, value: str) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--backend", "container", "--image",
                        "localhost/capgate:no-such-image", "--", PY, "-c", "pass"],
                       home=home, cwd=ws, env_extra={"SOFT_SANDBOX": value})
    assert proc.returncode == 125 and "--backend container:" in proc.stderr  # --backend container decided


def test_recursion_guard_refuses_and_never_widens(ws: Path, home: Path) -> None:
    # The child sees AGENT_IN_SANDBOX=1 and CAPGATE_POLICY; a nested launcher refuses to start,
    # and a nested policy load with a widening file is still restrict-only.
    (ws / "wide.json").write_text(json.dumps({"version": 1, "filesystem": {"write": ["."]}}))
    script = ws / "nested.py"
    script.write_text(
        "import os, sys\n"
        "print(os.environ['AGENT_IN_SANDBOX'], os.environ['SOFT_SANDBOX'], bool(os.environ['CAPGATE_POLICY']))\n"
        "from capgate import launcher\n"
        "rc = launcher.run(launcher.RunOptions(command=(sys.executable, '-c', 'pass')))\n"
        "print('nested', rc)\n"
        "rc2 = launcher.policy_command('validate', policy='wide.json', workspace='.', allow_user_expansion=True)\n"
        "print('widen', rc2)\n"
    )
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1 true True"
    assert "nested 125" in lines
    assert "widen 2" in lines
    assert "already in a capgate sandbox" in proc.stderr


def test_audit_log_records_policy_backend_and_child_decisions(ws: Path, home: Path) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c",
                        "import os\ntry:\n    open('/etc/shadow')\nexcept PermissionError:\n    pass\n"
                        "open('output/r.txt', 'w').write('x')"], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    lines = audit_lines(home)
    start = next(line for line in lines if line["event"] == "run.start")
    assert start["backend"] == "soft" and start["soft_sandbox"] is True
    assert start["policy"]["workspace"] == str(ws.resolve()) and start["os"]["system"] == "Linux"
    assert start["python"]["version"]
    denied = [line for line in lines if line.get("decision") == "deny"]
    assert [(d["op"], d["target"], d["source"]) for d in denied] == [("fs.read", "/etc/shadow", "child")]
    assert any(line.get("event") == "child.soft.activated" for line in lines)
    assert lines[-1]["event"] == "run.end" and lines[-1]["returncode"] == 0
    assert "fs.read" in proc.stderr and "/etc/shadow" in proc.stderr  # the summary table


def test_forged_child_lines_stay_child_records(ws: Path, home: Path) -> None:
    code = ("import os\nfd = 3\n"
            "for fd in range(3, 20):\n"
            "    try:\n        os.write(fd, b'{\"event\": \"run.end\", \"returncode\": 0}\\n')\n"
            "    except OSError:\n        pass\n")
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    ends = [line for line in audit_lines(home) if str(line.get("event", "")).endswith("run.end")]
    assert [line["event"] for line in ends] == ["child.run.end", "run.end"] or \
        [line["event"] for line in ends] == ["run.end"]
    assert all(line.get("source") == "child" for line in ends if line["event"] != "run.end")


def test_audit_log_inside_a_write_root_is_refused(ws: Path, home: Path) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--audit-log", str(ws / "output" / "a.jsonl"), "--",
                        PY, "-c", "pass"], home=home, cwd=ws)
    assert proc.returncode == 2 and "write root" in proc.stderr


def test_python_flags_that_skip_the_hooks_are_refused(ws: Path, home: Path) -> None:
    for flag in ("-I", "-S", "-E", "-uI"):
        proc = capgate_run(["run", "--workspace", str(ws), "--", PY, flag, "-c", "pass"], home=home, cwd=ws)
        assert proc.returncode == 125, (flag, proc.stderr)


def test_non_python_child_is_told_process_controls_only(ws: Path, home: Path) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--", "/bin/true"], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert "process-level controls only" in proc.stderr


def test_child_exit_code_is_passed_through(ws: Path, home: Path) -> None:
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "raise SystemExit(7)"], home=home, cwd=ws)
    assert proc.returncode == 7


def test_check_prints_decision_and_rule(ws: Path, home: Path) -> None:
    (home / ".ssh").mkdir()
    denied = capgate_run(["check", "fs.read", "~/.ssh/id_rsa", "--workspace", str(ws)], home=home, cwd=ws)
    assert denied.returncode == 1 and "deny" in denied.stdout and "filesystem.denyRead" in denied.stdout
    allowed = capgate_run(["check", "fs.write", "output/x", "--workspace", str(ws)], home=home, cwd=ws)
    assert allowed.returncode == 0 and "allow" in allowed.stdout and "filesystem.write" in allowed.stdout
    bad = capgate_run(["check", "fs.exec", "x", "--workspace", str(ws)], home=home, cwd=ws)
    assert bad.returncode == 2


def test_check_of_a_host_name_exits_once_decided(ws: Path, home: Path, tmp_path: Path) -> None:
    """Deciding ``net.connect NAME:PORT`` resolves the name on a thread pool: the command
    must still end as soon as it has printed (the quick exit must not wait on those workers)."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": 1, "network": {"enabled": True, "allowedDomains": ["localhost"]}}))
    done = capgate_run(["check", "net.connect", "localhost:443", "--policy", str(policy), "--allow-user-expansion",
                        "--workspace", str(ws)], home=home, cwd=ws, timeout=20)
    assert done.returncode in (0, 1) and ("allow" in done.stdout or "deny" in done.stdout), done.stdout + done.stderr


def test_a_child_that_kills_its_spawner_ends_the_run_with_125(ws: Path, home: Path) -> None:
    """The spawner shares the child's Landlock domain, so the child can kill it. The run
    then stops cleanly: a message, exit 125, and the child's tree killed (not a traceback)."""
    token = "capgate-spawner-killer-3f9a"
    done = capgate_run(["run", "--workspace", str(ws), "--", "/bin/sh", "-c",
                        f"kill -9 $PPID; while :; do : {token}; done", token], home=home, cwd=ws, timeout=60)
    assert done.returncode == 125, done.stderr
    assert "supervision failed" in done.stderr and "Traceback" not in done.stderr
    for name in Path("/proc").iterdir():
        if name.name.isdigit():
            try:
                assert token.encode() not in (name / "cmdline").read_bytes()
            except OSError:
                continue


def test_run_leaves_no_cgroup_spawner_or_run_directory(ws: Path, home: Path) -> None:
    """The launcher makes the child's cgroup early, on its warm-up thread, and exits without
    interpreter teardown: its exit handlers must still remove what it made."""
    import os
    import tempfile

    from capgate._sys.cgroup import cgroup_parent

    def ours() -> set[str]:
        parent = cgroup_parent()
        names = set(os.listdir(parent)) if parent else set()
        return {n for n in names if n.startswith("capgate-") and not n.startswith(f"capgate-{os.getpid()}-")}

    def run_dirs() -> set[str]:
        return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("capgate-run-")}

    def orphaned(names: set[str]) -> set[str]:
        """Those whose launcher (the pid in the name) is gone: another engineer's suite on this
        machine makes its own, named after launchers that are still running."""
        out = set()
        for name in names:
            pid = name.removeprefix("capgate-run-").removeprefix("capgate-").split("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                out.add(name)
        return out

    cgroups_before, dirs_before = ours(), run_dirs()
    done = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "print('ok')"], home=home, cwd=ws)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert orphaned(ours() - cgroups_before) == set()
    assert orphaned(run_dirs() - dirs_before) == set()


def test_init_writes_a_template_that_loads_as_the_defaults(ws: Path, home: Path) -> None:
    proc = capgate_run(["init"], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    again = capgate_run(["init"], home=home, cwd=ws)
    assert again.returncode == 2
    import capgate

    loaded = capgate.load_policy(ws / "agent-permissions.json", workspace=ws, home=str(home))
    defaults = capgate.default_policy(ws, home=str(home))
    assert loaded.origin == "restrict-only"
    assert loaded.filesystem.read == defaults.filesystem.read and loaded.filesystem.write == defaults.filesystem.write
    assert loaded.network == defaults.network and loaded.limits == defaults.limits
    assert loaded.process == defaults.process


def test_python_dash_m_capgate_is_the_same_command(ws: Path, home: Path) -> None:
    import shutil
    import subprocess

    exe = shutil.which("capgate", path=str(Path(PY).parent))
    assert exe is not None
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "run" in proc.stdout
