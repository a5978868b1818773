"""The system's identification and configuration files every toolchain reads are readable to
a sandboxed child — from both layers, hooks and Landlock — and its secrets stay denied."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, audit_lines, capgate_run

from capgate import launcher
from capgate.paths import is_within

SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh/ssh_config", "/etc/ssh/ssh_host_ed25519_key",
           "/etc/ssl/private/server.key", "/etc/ssl/private/server.crt", "/etc/pki/tls/private/server.key",
           "/etc/machine-id")


def _fs_denials(home: Path) -> list[str]:
    return [str(line["target"]) for line in audit_lines(home) if line.get("decision") == "deny"
            and line.get("op") == "fs.read"]


def test_every_reviewed_system_file_is_readable_to_both_layers_and_no_secret_is() -> None:
    """One list feeds the hooks' runtime read roots and Landlock's system roots: what the
    hooks allow, the kernel allows; what is secret, neither does."""
    hooks = launcher.runtime_read_roots()
    kernel = launcher.system_read_roots()
    files = launcher.system_files()
    assert "/etc/pip.conf" in files or not os.path.exists("/etc/pip.conf")
    for path in files:
        assert any(is_within(path, root) for root in hooks), path
        if os.path.exists(path):
            assert any(is_within(path, root) for root in kernel), path
    for secret in SECRETS:
        assert not any(is_within(secret, root) for root in hooks), secret
        assert not any(is_within(secret, root) for root in kernel), secret


def test_a_system_file_other_users_cannot_read_is_not_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public = tmp_path / "public.conf"
    private = tmp_path / "private.conf"
    for path, mode in ((public, 0o644), (private, 0o600)):
        path.write_text("[global]\n")
        path.chmod(mode)
    monkeypatch.setattr(launcher, "SYSTEM_FILES", (str(public), str(private), str(tmp_path / "missing-release")))
    assert launcher.system_files() == (str(public), str(tmp_path / "missing-release"))


def test_python_reads_system_files_and_not_secrets(ws: Path, home: Path) -> None:
    """The control (identification files, pip.conf, ld.so.cache) and the denials, through the
    hooks; a missing release file is ENOENT, as the kernel layer would say."""
    wanted = [p for p in ("/etc/os-release", "/etc/debian_version", "/etc/hostname", "/etc/timezone",
                          "/etc/ld.so.cache", "/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/etc/services")
              if os.path.exists(p)]
    code = (
        "import json, sys\n"
        "out = {}\n"
        f"for p in {[*wanted, '/etc/mageia-release', *SECRETS]!r}:\n"
        "    try:\n"
        "        open(p, 'rb').read(1); out[p] = 'read'\n"
        "    except PermissionError:\n"
        "        out[p] = 'denied'\n"
        "    except FileNotFoundError:\n"
        "        out[p] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    done = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", code], home=home, cwd=ws)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert {p: seen[p] for p in wanted} == dict.fromkeys(wanted, "read")
    assert seen["/etc/mageia-release"] == "missing"
    for secret in SECRETS:
        assert seen[secret] in ("denied", "missing") and (seen[secret] == "denied" or not os.path.lexists(secret))
    assert "/etc/shadow" in _fs_denials(home) and "/etc/ssh/ssh_config" in _fs_denials(home)


def test_native_programs_read_the_same_system_files(ws: Path, home: Path) -> None:
    """Landlock (the layer a native program meets) agrees: identification files read, secrets
    refused."""
    done = capgate_run(["run", "--workspace", str(ws), "--", "/bin/cat", "/etc/os-release", "/etc/debian_version"],
                       home=home, cwd=ws)
    assert done.returncode == 0 and "ID=" in done.stdout, done.stderr
    for secret in ("/etc/shadow", "/etc/ssh/ssh_config"):
        refused = capgate_run(["run", "--workspace", str(ws), "--", "/bin/cat", secret], home=home, cwd=ws)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, secret


def _wheel(where: Path) -> Path:
    """A minimal pure-Python wheel ``demo-1.0`` (enough for pip to resolve and plan it)."""
    files = {
        "demo/__init__.py": b"",
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: capgate-tests\nRoot-Is-Purelib: true\n"
                                    b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("demo-1.0.dist-info/RECORD,,")
    path = where / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("demo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.mark.parametrize("args", [["--version"], ["list"], ["install", "--dry-run", "--no-index", "--find-links",
                                                            "wheels", "demo"]])
def test_pip_works_under_the_default_policy(ws: Path, home: Path, args: list[str]) -> None:
    (ws / "wheels").mkdir()
    _wheel(ws / "wheels")
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = capgate_run(["run", "--workspace", str(ws), "--", PY, "-m", "pip", *args], home=home, cwd=ws,
                       env_extra=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if args[0] == "install":
        assert "Would install demo-1.0" in done.stdout
    if args[0] == "list":
        assert "pip " in done.stdout
    etc = [t for t in _fs_denials(home) if t.startswith(("/etc/", "/usr/lib/os-release"))]
    assert etc == [], etc
