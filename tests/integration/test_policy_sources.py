"""Who may widen the policy (design.md, "Policy sources"), through the real ``capgate`` command:
the workspace file only narrows; the user-level file and the command-line grants widen; deny
lists always win; the user-level file is refused where someone else (the agent) could write it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, capgate_run, launcher_messages

WIDENING = {"network": {"enabled": True, "allowedDomains": ["api.example.com"]},
            "process": {"allowedCommands": ["git"], "allowShell": True},
            "limits": {"cpuSeconds": 100000}}


def user_file(home: Path, body: dict[str, object], mode: int = 0o600) -> Path:
    path = home / ".config" / "capgate" / "permissions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    path.chmod(mode)
    return path


def test_restrict_only_refusal_lists_every_entry_and_the_three_ways(ws: Path, home: Path) -> None:
    (ws / "agent-permissions.json").write_text(json.dumps(WIDENING))
    proc = capgate_run(["policy", "validate", "--workspace", str(ws)], home=home, cwd=ws)
    assert proc.returncode == 2
    err = proc.stderr
    for line in ('network.enabled: true', 'network.allowedDomains[0]: "api.example.com"',
                 'process.allowedCommands[0]: "git"', "process.allowShell: true", "limits.cpuSeconds: 100000"):
        assert line in err, err
    assert "~/.config/capgate/permissions.json" in err
    assert "--allow-net api.example.com" in err and "--allow-run git" in err
    assert "--allow-user-expansion" in err
    assert "True" not in err and "allow_user_expansion" not in err
    # control: a file that only narrows is fine
    (ws / "agent-permissions.json").write_text(json.dumps({"filesystem": {"write": ["output"]}}))
    ok = capgate_run(["policy", "validate", "--workspace", str(ws)], home=home, cwd=ws)
    assert ok.returncode == 0 and "restrict-only" in ok.stdout, ok.stderr


def test_user_level_file_widens_without_the_flag_and_says_so(ws: Path, home: Path) -> None:
    denied = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws)], home=home, cwd=ws)
    assert denied.returncode == 1, denied.stdout + denied.stderr
    path = user_file(home, {"process": {"allowedCommands": ["git"]}})
    allowed = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws)], home=home, cwd=ws)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    dry = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--internal", "--", PY, "-c", "pass"],
                      home=home, cwd=ws)
    assert dry.returncode == 0, dry.stderr
    assert f'process.allowedCommands[0]: "git" (from user-level file {path})' in "\n".join(
        launcher_messages(dry.stderr))
    assert {"entry": 'process.allowedCommands[0]: "git"', "from": f"user-level file {path}"} in \
        json.loads(dry.stdout)["widened"]


def test_xdg_config_home_names_the_user_level_file(ws: Path, home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "capgate").mkdir(parents=True)
    (xdg / "capgate" / "permissions.json").write_text(json.dumps({"process": {"allowedCommands": ["git"]}}))
    allowed = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws)], home=home, cwd=ws,
                          env_extra={"XDG_CONFIG_HOME": str(xdg)})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def _symlinked(home: Path, tmp_path: Path) -> Path:
    real = tmp_path / "elsewhere.json"
    real.write_text(json.dumps({"process": {"allowedCommands": ["git"]}}))
    link = home / ".config" / "capgate" / "permissions.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    return link


@pytest.mark.parametrize("how", ["symlink", "group-writable", "world-writable"])
def test_an_unsafe_user_level_file_is_refused_naming_it(ws: Path, home: Path, tmp_path: Path, how: str) -> None:
    if how == "symlink":
        path = _symlinked(home, tmp_path)
    else:
        path = user_file(home, {"process": {"allowedCommands": ["git"]}},
                         0o620 if how == "group-writable" else 0o602)
    proc = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws)], home=home, cwd=ws)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(path) in proc.stderr and "user-level policy file" in proc.stderr
    run = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "open('output/ran', 'w')"], home=home, cwd=ws)
    assert run.returncode == 2 and not (ws / "output" / "ran").exists()


def test_a_user_level_file_inside_the_workspace_is_refused(ws: Path, home: Path) -> None:
    xdg = ws / "conf"
    (xdg / "capgate").mkdir(parents=True)
    (xdg / "capgate" / "permissions.json").write_text(json.dumps({"process": {"allowedCommands": ["git"]}}))
    proc = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws)], home=home, cwd=ws,
                       env_extra={"XDG_CONFIG_HOME": str(xdg)})
    assert proc.returncode == 2 and "inside the workspace" in proc.stderr, proc.stderr


def test_a_user_level_file_inside_a_write_root_is_refused(ws: Path, home: Path) -> None:
    path = user_file(home, {})
    proc = capgate_run(["check", "fs.write", str(ws / "output" / "x"), "--workspace", str(ws),
                        "--allow-write", str(home)], home=home, cwd=ws)
    assert proc.returncode == 2 and f"{path} lies inside the write root" in proc.stderr, proc.stderr
    # control: the same grant without a user-level file is fine
    path.unlink()
    ok = capgate_run(["check", "fs.write", str(home / "x"), "--workspace", str(ws), "--allow-write", str(home)],
                     home=home, cwd=ws)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_the_agent_cannot_write_the_user_level_file(ws: Path, home: Path) -> None:
    path = user_file(home, {"process": {"allowedCommands": ["git"]}})
    before = path.read_text()
    code = (f"import sys\ntry:\n    open({str(path)!r}, 'w').write('{{}}')\nexcept PermissionError:\n"
            "    sys.exit(7)\n")
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)
    assert proc.returncode == 7, proc.stderr
    assert path.read_text() == before
    # control: the child writes its output root
    ok = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "open('output/x', 'w').write('y')"],
                     home=home, cwd=ws)
    assert ok.returncode == 0 and (ws / "output" / "x").read_text() == "y", ok.stderr


def test_grants_widen_a_real_run(ws: Path, home: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    code = f"open({str(notes / 'n.txt')!r}, 'w').write('x')"
    denied = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)
    assert denied.returncode != 0 and not (notes / "n.txt").exists()
    ok = capgate_run(["run", "--workspace", str(ws), "--allow-write", str(notes), "--", PY, "-c", code],
                     home=home, cwd=ws)
    assert ok.returncode == 0, ok.stderr
    assert (notes / "n.txt").read_text() == "x"
    assert f'widened: filesystem.write: "{notes}" (from --allow-write {notes})' in "\n".join(
        launcher_messages(ok.stderr))


def test_allow_env_passes_a_variable_through(ws: Path, home: Path) -> None:
    code = "import os, sys; sys.exit(0 if os.environ.get('MY_TOKEN_NAME') == 'v' else 9)"
    without = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws,
                          env_extra={"MY_TOKEN_NAME": "v"})
    assert without.returncode == 9
    granted = capgate_run(["run", "--workspace", str(ws), "--allow-env", "MY_TOKEN_NAME", "--", PY, "-c", code],
                          home=home, cwd=ws, env_extra={"MY_TOKEN_NAME": "v"})
    assert granted.returncode == 0, granted.stderr


def test_allow_net_turns_the_network_on_and_offline_wins(ws: Path, home: Path) -> None:
    base = ["check", "net.connect", "api.example.com:443", "--workspace", str(ws)]
    off = capgate_run(base, home=home, cwd=ws)
    assert off.returncode == 1 and "rule: network.enabled" in off.stdout, off.stdout
    granted = capgate_run([*base, "--allow-net", "api.example.com"], home=home, cwd=ws)
    # past the policy: what is left is DNS (no network beyond loopback here)
    assert "rule: network.enabled" not in granted.stdout and granted.returncode in (0, 1), granted.stderr
    show = capgate_run(["policy", "show", "--workspace", str(ws), "--allow-net", "api.example.com"], home=home, cwd=ws)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["network"]["enabled"] is True and "api.example.com" in show.stdout
    offline = capgate_run(["policy", "show", "--workspace", str(ws), "--allow-net", "api.example.com", "--offline"],
                          home=home, cwd=ws)
    assert offline.returncode == 0 and '"enabled": false' in offline.stdout, offline.stderr
    user_file(home, {"network": {"enabled": True, "allowedDomains": ["api.example.com"]}})
    offline = capgate_run([*base, "--offline"], home=home, cwd=ws)
    assert offline.returncode == 1 and "off" in offline.stdout, offline.stdout


def test_allow_net_takes_an_address(ws: Path, home: Path) -> None:
    base = ["check", "net.connect", "127.0.0.1:8080", "--workspace", str(ws)]
    assert capgate_run(base, home=home, cwd=ws).returncode == 1
    ok = capgate_run([*base, "--allow-net", "127.0.0.1:8080"], home=home, cwd=ws)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_the_workspace_file_narrows_what_a_grant_widened(ws: Path, home: Path) -> None:
    granted = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws), "--allow-run", "git"],
                          home=home, cwd=ws)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    (ws / "agent-permissions.json").write_text(json.dumps({"process": {"allowedCommands": []}}))
    narrowed = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws), "--allow-run", "git"],
                           home=home, cwd=ws)
    assert narrowed.returncode == 1, narrowed.stdout + narrowed.stderr


def test_deny_wins_over_a_grant_and_the_user_level_file(ws: Path, home: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("secret")
    user_file(home, {"filesystem": {"read": [".", str(home)]}})
    proc = capgate_run(["check", "fs.read", str(home / ".ssh" / "id_rsa"), "--workspace", str(ws),
                        "--allow-read", str(home / ".ssh")], home=home, cwd=ws)
    assert proc.returncode == 1 and "denyRead" in proc.stdout, proc.stdout + proc.stderr
    control = capgate_run(["check", "fs.read", str(home / "notes.txt"), "--workspace", str(ws)], home=home, cwd=ws)
    assert control.returncode == 0, control.stdout + control.stderr


def test_a_bad_grant_names_the_flag(ws: Path, home: Path) -> None:
    proc = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws), "--allow-run", "./tool"],
                       home=home, cwd=ws)
    assert proc.returncode == 2 and "--allow-run ./tool" in proc.stderr, proc.stderr
    ok = capgate_run(["check", "proc.exec", "git", "--workspace", str(ws), "--allow-run", "git"], home=home, cwd=ws)
    assert ok.returncode == 0


def test_grants_inside_a_sandbox_are_refused(ws: Path, home: Path, tmp_path: Path) -> None:
    show = capgate_run(["policy", "show", "--internal", "--workspace", str(ws)], home=home, cwd=ws)
    effective = tmp_path / "effective.json"
    effective.write_text(show.stdout)
    inside = {"AGENT_IN_SANDBOX": "1", "CAPGATE_POLICY": str(effective)}
    refused = capgate_run(["check", "proc.exec", "git", "--allow-run", "git"], home=home, cwd=ws, env_extra=inside)
    assert refused.returncode == 2 and "nothing widens the policy a sandbox was given" in refused.stderr
    control = capgate_run(["check", "proc.exec", "git"], home=home, cwd=ws, env_extra=inside)
    assert control.returncode == 1, control.stdout + control.stderr
