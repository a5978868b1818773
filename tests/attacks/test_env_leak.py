"""A child printing its environment sees only envPassthrough, HOME, TMPDIR, PATH (and ``env``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capgate import proc
from capgate._sys.clean_env import build_child_env, sanitized_path_dirs

pytestmark = pytest.mark.timeout(30)

HOSTILE = {
    "LD_PRELOAD": "/nonexistent/evil.so", "LD_LIBRARY_PATH": "/tmp/evil", "DYLD_INSERT_LIBRARIES": "x",
    "PYTHONPATH": "/tmp/evil", "PYTHONSTARTUP": "/tmp/evil.py", "PYTHONHOME": "/tmp",
    "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "ALL_PROXY": "socks5://127.0.0.1:9",
    "no_proxy": "*", "AWS_SECRET_ACCESS_KEY": "capgate-test-secret", "GITHUB_TOKEN": "capgate-test-secret",
    "SSH_AUTH_SOCK": "/tmp/agent.sock", "BASH_ENV": "/tmp/evil.sh", "GIT_DIR": "/tmp/evil",
    "NODE_OPTIONS": "--require /tmp/evil.js", "LANG": "C.UTF-8",
}
ALLOWED_NAMES = {"LANG", "LC_ALL", "TERM", "HOME", "TMPDIR", "PATH"}


@pytest.fixture
def hostile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HOSTILE.items():
        monkeypatch.setenv(name, value)


def child_env(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    pairs = [line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line]
    return dict(pairs)  # type: ignore[arg-type]


def test_child_sees_only_the_clean_environment(make_gate, hostile_env, fake_home: Path, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    # even a policy that *lists* the dangerous names does not pass them
    gate = make_gate({"process": {"allowedCommands": ["env"],
                                  "envPassthrough": ["LANG", "LD_PRELOAD", "PYTHONPATH", "HTTPS_PROXY"]}})
    with gate:
        result = proc.run(["env"], env={"LD_LIBRARY_PATH": "/x", "https_proxy": "http://x", "FOO": "bar"})
    env = child_env(result)
    assert set(env) <= ALLOWED_NAMES | {"FOO"}, set(env) - ALLOWED_NAMES
    assert env["FOO"] == "bar" and env["LANG"] == "C.UTF-8"
    assert "capgate-test-secret" not in result.stdout.decode()
    assert env["HOME"] != str(fake_home) and not env["HOME"].startswith(str(workspace))
    assert not os.path.exists(env["TMPDIR"]) and not os.path.exists(env["HOME"])  # removed afterwards
    for entry in env["PATH"].split(":"):
        assert not entry.startswith(str(workspace)) and entry.startswith("/")


def test_tmpdir_is_private_and_empty(make_gate) -> None:  # type: ignore[no-untyped-def]
    gate = make_gate({"process": {"allowedCommands": ["python3"]}})
    code = ("import os,stat; t=os.environ['TMPDIR'];"
            " print(os.listdir(t), oct(stat.S_IMODE(os.stat(os.path.dirname(t)).st_mode)))")
    with gate:
        first = proc.run(["python3", "-c", code])
        second = proc.run(["python3", "-c", code])
    assert first.stdout == b"[] 0o700\n" == second.stdout


def test_build_child_env_filters_passthrough_and_extra(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    gate = make_gate({"process": {"envPassthrough": ["LANG", "LD_PRELOAD", "GIT_SSH_COMMAND", "bad name"]}})
    env = build_child_env(gate.policy, home="/h", tmpdir="/t",
                          extra={"AGENT_IN_SANDBOX": "1", "PYTHONPATH": "/x", "HOME": "/evil", "PATH": "/evil"},
                          base_env={"LANG": "C", "LD_PRELOAD": "/x.so", "GIT_SSH_COMMAND": "id", "TERM": "xterm"})
    assert env == {"LANG": "C", "AGENT_IN_SANDBOX": "1", "HOME": "/h", "TMPDIR": "/t", "PATH": env["PATH"]}
    assert all(not d.startswith(str(workspace)) for d in sanitized_path_dirs(gate.policy, cwd=str(workspace)))
    assert sanitized_path_dirs(gate.policy, cwd="/usr/bin") and "/usr/bin" not in sanitized_path_dirs(
        gate.policy, cwd="/usr/bin")
