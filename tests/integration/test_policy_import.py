"""``capgate policy import --from srt FILE`` (issue 14): an Anthropic sandbox-runtime settings
file becomes a capgate policy that ``capgate policy validate`` accepts and the gate enforces,
and stderr names everything it could not carry over. Through the real ``capgate`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import capgate_run, launcher_messages

# A settings file as a developer using srt has it (~/.srt-settings.json), with entries of every
# kind: ones capgate takes as they are, ones it must translate and ones it cannot express.
SRT_SETTINGS = {
    "network": {
        "allowedDomains": ["github.com", "*.github.com", "api.github.com:443", "pypi.org", "*.npmjs.org",
                           "localhost", "127.0.0.1:8080", "*.github.io"],
        "deniedDomains": ["malicious.example.com", "github.com:22"],
        "deniedDomainReasons": {"github.com:22": "SSH pushes are blocked; use https"},
        "allowUnixSockets": ["/var/run/docker.sock"],
        "allowLocalBinding": True,
    },
    "filesystem": {
        "denyRead": ["~/.ssh", "~/.aws/credentials", "secrets/"],
        "allowRead": ["~/.ssh/known_hosts"],
        "allowWrite": [".", "~/.cache/pip"],
        "denyWrite": [".env", "config/production.json"],
        "allowGitConfig": True,
    },
    "ignoreViolations": {"*": ["/usr/bin"]},
    "enableWeakerNestedSandbox": False,
}


def _settings(tmp_path: Path, data: object = SRT_SETTINGS) -> Path:
    path = tmp_path / "srt-settings.json"
    path.write_text(json.dumps(data))
    return path


def _user_file(home: Path) -> Path:
    target = home / ".config" / "capgate" / "permissions.json"
    target.parent.mkdir(parents=True, mode=0o700)
    return target


def test_import_prints_a_policy_and_says_what_it_cannot_express(ws: Path, home: Path, tmp_path: Path) -> None:
    proc = capgate_run(["policy", "import", "--from", "srt", str(_settings(tmp_path))], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    policy = json.loads(proc.stdout)
    assert policy["filesystem"]["denyRead"] == ["~/.ssh", "~/.aws/credentials", "secrets/"]
    assert policy["filesystem"]["write"] == [".", "~/.cache/pip"]
    assert policy["network"]["enabled"] is True
    assert "*.github.io" not in policy["network"]["allowedDomains"]  # (capgate refuses a public-suffix wildcard)
    assert "127.0.0.1:8080" in policy["network"]["allowedAddresses"]
    assert {"domain": "github.com:22", "reason": "SSH pushes are blocked; use https"} in (
        policy["network"]["deniedDomains"])
    notes = "\n".join(launcher_messages(proc.stderr))
    for named in ("ignoreViolations", "filesystem.allowGitConfig", "network.allowLocalBinding", '"*.github.io"',
                  "srt reads everywhere except denyRead", "process.allowedCommands", "allowedPorts"):
        assert named in notes, (named, notes)
    assert "enableWeakerNestedSandbox" in notes
    assert all(len(line) <= 100 for line in proc.stderr.splitlines())


def test_the_imported_policy_validates_and_is_enforced(ws: Path, home: Path, tmp_path: Path) -> None:
    target = _user_file(home)
    proc = capgate_run(["policy", "import", "--from", "srt", str(_settings(tmp_path)), "-o", str(target)],
                       home=home, cwd=ws)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert "wrote" in proc.stderr
    valid = capgate_run(["policy", "validate"], home=home, cwd=ws)
    assert valid.returncode == 0, valid.stderr
    assert "widening entries from trusted sources" in "\n".join(launcher_messages(valid.stdout))
    # The gate decides by it: what srt allowed is allowed, what it denied is denied.
    # (loopback only: no test reaches beyond 127.0.0.1, and check resolves names)
    assert capgate_run(["check", "net.connect", "127.0.0.1:8080"], home=home, cwd=ws).returncode == 0
    assert capgate_run(["check", "net.connect", "127.0.0.1:9090"], home=home, cwd=ws).returncode == 1
    assert capgate_run(["check", "fs.write", str(ws / "notes.txt")], home=home, cwd=ws).returncode == 0
    assert capgate_run(["check", "fs.write", str(ws / ".env")], home=home, cwd=ws).returncode == 1
    assert capgate_run(["check", "fs.read", str(ws / "secrets" / "token")], home=home, cwd=ws).returncode == 1
    assert capgate_run(["check", "fs.read", str(ws / "src.py")], home=home, cwd=ws).returncode == 0
    # The same file as a workspace policy loads with --allow-user-expansion (and only with it).
    target.unlink()
    local = ws / "from-srt.json"
    assert capgate_run(["policy", "import", "--from", "srt", str(_settings(tmp_path)), "-o", str(local)],
                       home=home, cwd=ws).returncode == 0
    assert capgate_run(["policy", "validate", "--policy", str(local), "--allow-user-expansion"], home=home,
                       cwd=ws).returncode == 0
    assert capgate_run(["policy", "validate", "--policy", str(local)], home=home, cwd=ws).returncode == 2


def test_output_is_never_overwritten_without_force(ws: Path, home: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    out = ws / "policy.json"
    out.write_text("keep me")
    refused = capgate_run(["policy", "import", "--from", "srt", str(settings), "-o", str(out)], home=home, cwd=ws)
    assert refused.returncode == 2 and "use --force" in refused.stderr
    assert out.read_text() == "keep me"
    forced = capgate_run(["policy", "import", "--from", "srt", str(settings), "-o", str(out), "--force"],
                         home=home, cwd=ws)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(out.read_text())["version"] == 1


def test_a_deny_all_keeps_the_network_off(ws: Path, home: Path, tmp_path: Path) -> None:
    data = {"network": {"allowedDomains": [], "deniedDomains": ["*"]},
            "filesystem": {"denyRead": [], "allowWrite": ["output"], "denyWrite": []}}
    proc = capgate_run(["policy", "import", "--from", "srt", str(_settings(tmp_path, data))], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    policy = json.loads(proc.stdout)
    assert policy["network"] == {"enabled": False, "allowedDomains": []}
    assert policy["filesystem"]["write"] == ["output"]
    assert 'deniedDomains "*"' in " ".join(launcher_messages(proc.stderr))


def test_a_file_that_is_not_srt_settings_is_refused(ws: Path, home: Path, tmp_path: Path) -> None:
    out = ws / "policy.json"
    proc = capgate_run(["policy", "import", "--from", "srt", str(_settings(tmp_path, {"version": 1})), "-o",
                        str(out)], home=home, cwd=ws)
    assert proc.returncode == 2 and "not an srt settings file" in proc.stderr
    assert not out.exists()
    usage = capgate_run(["policy", "import", str(_settings(tmp_path))], home=home, cwd=ws)
    assert usage.returncode == 2 and "needs --from srt" in usage.stderr
    stray = capgate_run(["policy", "show", "--from", "srt"], home=home, cwd=ws)
    assert stray.returncode == 2 and "are for policy import" in stray.stderr
