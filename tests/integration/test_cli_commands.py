"""The command line a new user meets (issue 14), through the real ``capgate`` command:
--version, usage errors, help, check of a whole command line and as JSON, -q, policy show in
the policy file's format, validate's warnings, plain policy errors, capgate audit, pruning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, capgate_run, launcher_messages


def test_version(ws: Path, home: Path) -> None:
    import capgate

    proc = capgate_run(["--version"], home=home, cwd=ws)
    assert proc.returncode == 0 and proc.stdout.strip() == f"capgate {capgate.__version__}"


@pytest.mark.parametrize("command", ["run", "check", "policy", "init", "audit"])
def test_a_subcommand_error_shows_that_subcommands_usage(ws: Path, home: Path, command: str) -> None:
    args = {"check": ["check", "fs.read", "x"], "policy": ["policy", "show"]}.get(command, [command])
    proc = capgate_run([*args, "--no-such-option"], home=home, cwd=ws)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage: capgate {command} "), proc.stderr
    assert f"capgate {command}: error: unrecognized arguments: --no-such-option" in proc.stderr
    control = capgate_run([command, "--help"], home=home, cwd=ws)
    assert control.returncode == 0 and control.stdout.startswith(f"usage: capgate {command}")


def test_every_subcommand_has_a_description_and_run_help_lists_exit_codes(ws: Path, home: Path) -> None:
    for command in ("run", "check", "policy", "init", "audit"):
        text = capgate_run([command, "--help"], home=home, cwd=ws).stdout
        description = text.split("\n\n")[1]
        assert not description.startswith(("positional", "options")), (command, text)
    run_help = capgate_run(["run", "--help"], home=home, cwd=ws).stdout
    for code in ("125", "128+N", "130", "143", " 2 "):
        assert code in run_help, code
    assert all(len(line) <= 100 for line in run_help.splitlines())


def test_check_decides_a_whole_command_line_as_proc_run_would(ws: Path, home: Path) -> None:
    allowed = capgate_run(["check", "--allow-run", "git", "proc.exec", "git", "status"], home=home, cwd=ws)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "allow: proc.exec git status" in allowed.stdout
    # the same command with an argument proc.run refuses (git -c can run a program)
    denied = capgate_run(["check", "--allow-run", "git", "proc.exec", "--", "git", "-c", "core.pager=x", "log"],
                         home=home, cwd=ws)
    assert denied.returncode == 1 and "rule: process.gitArguments" in denied.stdout, denied.stdout + denied.stderr
    shell = capgate_run(["check", "proc.exec", "--", "sh", "-c", "ls"], home=home, cwd=ws)
    assert shell.returncode == 1 and "process.allowShell" in shell.stdout
    two = capgate_run(["check", "fs.read", "a", "b"], home=home, cwd=ws)
    assert two.returncode == 2 and "one TARGET" in two.stderr


def test_check_json(ws: Path, home: Path) -> None:
    proc = capgate_run(["check", "--json", "fs.read", str(home / ".ssh" / "id_rsa")], home=home, cwd=ws)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["allowed"] is False and data["op"] == "fs.read" and data["rule"].startswith("filesystem.denyRead")
    ok = capgate_run(["check", "--json", "fs.read", str(ws / "x")], home=home, cwd=ws)
    assert ok.returncode == 0 and json.loads(ok.stdout)["allowed"] is True


def test_quiet_keeps_the_seat_belt_line_and_warnings_only(ws: Path, home: Path) -> None:
    loud = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "pass"], home=home, cwd=ws)
    assert loud.returncode == 0 and "backend: soft" in loud.stderr and "audit log:" in loud.stderr
    quiet = capgate_run(["run", "-q", "--workspace", str(ws), "--", PY, "-c", "pass"], home=home, cwd=ws)
    assert quiet.returncode == 0, quiet.stderr
    lines = launcher_messages(quiet.stderr)
    assert len(lines) == 1 and "seat belt, not isolation" in lines[0], quiet.stderr
    denied = capgate_run(["run", "-q", "--workspace", str(ws), "--", PY, "-c",
                          f"open({str(home / '.ssh')!r})"], home=home, cwd=ws)
    assert "1 denied" in denied.stderr  # a summary with denials is kept


def test_policy_show_prints_a_file_that_validate_accepts(ws: Path, home: Path, tmp_path: Path) -> None:
    (ws / "agent-permissions.json").write_text(json.dumps({"filesystem": {"write": ["output"]},
                                                           "network": {"deniedDomains": [
                                                               {"domain": "evil.example", "reason": "tok-123"}]}}))
    show = capgate_run(["policy", "show", "--workspace", str(ws), "--allow-net", "api.example.com"], home=home, cwd=ws)
    assert show.returncode == 0, show.stderr
    data = json.loads(show.stdout)
    assert data["version"] == 1 and data["filesystem"]["write"] == [str(ws / "output")]
    assert "format" not in data and "runtimeRead" not in json.dumps(data) and "tok-123" not in show.stdout
    shown = tmp_path / "shown.json"
    shown.write_text(show.stdout)
    again = capgate_run(["policy", "validate", "--workspace", str(ws), "--policy", str(shown), "--allow-net",
                         "api.example.com"], home=home, cwd=ws)
    assert again.returncode == 0, again.stderr
    internal = capgate_run(["policy", "show", "--internal", "--workspace", str(ws)], home=home, cwd=ws)
    assert json.loads(internal.stdout)["format"] == "capgate-effective-policy"
    dry = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--", PY, "-c", "pass"], home=home, cwd=ws)
    assert dry.returncode == 0 and json.loads(dry.stdout)["version"] == 1, dry.stderr


def test_validate_warns_about_entries_that_never_take_effect(ws: Path, home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "capgate").mkdir(parents=True)
    (xdg / "capgate" / "permissions.json").write_text(json.dumps(
        {"network": {"allowedDomains": ["api.example.com"]},
         "process": {"allowedCommands": ["git", "no-such-tool-xyz"]}}))
    proc = capgate_run(["policy", "validate", "--workspace", str(ws)], home=home, cwd=ws,
                       env_extra={"XDG_CONFIG_HOME": str(xdg)})
    assert proc.returncode == 0, proc.stderr
    err, out = "\n".join(launcher_messages(proc.stderr)), "\n".join(launcher_messages(proc.stdout))
    assert 'network.allowedDomains[0] "api.example.com" has no effect: network.enabled is false' in err
    assert '"no-such-tool-xyz" has no effect: not found on the sanitized PATH' in err
    assert '"git" has no effect' not in err  # (the control: git is on the PATH)
    assert "widened: process.allowedCommands[0]" in out


def test_policy_errors_are_plain_one_per_line_and_name_the_file(ws: Path, home: Path) -> None:
    path = ws / "agent-permissions.json"
    path.write_text(json.dumps({"network": {"enabled": "true"}, "filesytem": {}, "limits": {"memoryMB": 1}}))
    proc = capgate_run(["policy", "validate", "--workspace", str(ws)], home=home, cwd=ws)
    assert proc.returncode == 2
    err = proc.stderr
    assert str(path) in err.splitlines()[0]
    assert '  network.enabled: must be true or false (got "true")' in err.splitlines()
    assert "  filesytem: unknown key; did you mean 'filesystem'?" in err.splitlines()
    assert "  limits.memoryMB: unknown key; did you mean 'memoryMb'?" in err.splitlines()
    assert "Input should" not in err and "pydantic" not in err
    path.write_text(json.dumps({"network": {"enabled": True}}))  # control: valid (if widening) spelling
    assert "must be true or false" not in capgate_run(["policy", "validate", "--workspace", str(ws)],
                                                      home=home, cwd=ws).stderr


def test_audit_summarizes_the_last_run(ws: Path, home: Path) -> None:
    none = capgate_run(["audit"], home=home, cwd=ws)
    assert none.returncode == 2 and "no run logs" in none.stderr
    code = "import sys\nfor _ in range(2):\n    try: open('/etc/shadow')\n    except PermissionError: pass\nsys.exit(3)"
    run = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)
    assert run.returncode == 3, run.stderr
    proc = capgate_run(["audit"], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert "exit status 3" in proc.stdout and "duration:" in proc.stdout
    assert "      2  fs.read    /etc/shadow" in proc.stdout, proc.stdout
    data = json.loads(capgate_run(["audit", "--json"], home=home, cwd=ws).stdout)
    assert data["exitStatus"] == 3 and data["denials"][0]["count"] == 2 and data["limitsFired"] == []


def test_audit_allowed_off_keeps_denials_and_events_only(ws: Path, home: Path) -> None:
    code = f"open({str(ws / 'output' / 'a')!r}, 'w'); open('/etc/shadow')"
    capgate_run(["run", "--audit-allowed", "off", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)
    logs = sorted((home / ".local" / "state" / "capgate" / "audit").glob("*.jsonl"))
    lines = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert decisions and all(d["decision"] == "deny" for d in decisions)
    assert any(line["event"] == "run.end" for line in lines)
    capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)  # control
    logs = sorted((home / ".local" / "state" / "capgate" / "audit").glob("*.jsonl"))
    assert any(json.loads(line).get("decision") == "allow" for line in logs[-1].read_text().splitlines())


def test_old_run_logs_are_pruned(ws: Path, home: Path) -> None:
    audit_dir = home / ".local" / "state" / "capgate" / "audit"
    audit_dir.mkdir(parents=True)
    for i in range(5):
        (audit_dir / f"run-2000010{i}T000000Z-1.jsonl").write_text("{}\n")
    other = audit_dir / "notes.txt"
    other.write_text("kept")
    capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "pass"], home=home, cwd=ws,
                env_extra={"CAPGATE_AUDIT_KEEP_RUNS": "3"})
    logs = sorted(audit_dir.glob("run-*.jsonl"))
    assert len(logs) == 3 and other.exists()
    assert not (audit_dir / "run-20000100T000000Z-1.jsonl").exists()


def test_validate_lines_fit_the_banner_width(ws: Path, home: Path, tmp_path: Path) -> None:
    """``policy validate`` wraps its own lines at 100 columns like the launcher (issue 14);
    the control: a short entry stays on one line."""
    long_dir = ws / ("very-long-directory-name-" * 5)
    long_dir.mkdir()
    xdg = tmp_path / "xdg"
    (xdg / "capgate").mkdir(parents=True)
    (xdg / "capgate" / "permissions.json").write_text(json.dumps(
        {"filesystem": {"write": [str(long_dir), "notes"]}}))
    proc = capgate_run(["policy", "validate", "--workspace", str(ws)], home=home, cwd=ws,
                       env_extra={"XDG_CONFIG_HOME": str(xdg)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("capgate:   widened: filesystem.write") and '"notes"' in line for line in lines)
    long_lines = [line for line in lines if len(line) > 100]
    assert all(" " not in line.removeprefix("capgate:").strip() for line in long_lines), long_lines
    assert any(line.startswith("capgate:     /") for line in lines), lines  # (the long entry continued)
