"""Shared fixtures: a real temp workspace, a fake HOME holding secrets, an active gate.

An autouse fixture strips proxy variables and capgate's own environment for every test, so
no test can pass because of, or leak through, the developer's environment.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import capgate
from capgate.audit import AuditLog

SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- capgate-test-secret-7f3a"

_SCRUB = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy",
    "CAPGATE_POLICY", "CAPGATE_AUDIT_LOG", "AGENT_IN_SANDBOX", "SOFT_SANDBOX",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with the secrets an attacker wants: ~/.ssh/id_rsa, ~/.aws/credentials, ~/.bashrc."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(SECRET)
    (home / ".bashrc").write_text("# original bashrc\n")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path: Path, fake_home: Path) -> Path:
    """A workspace with a source file, an output dir and a secret-looking .env."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hello')\n")
    (ws / "output").mkdir()
    (ws / ".env").write_text(SECRET)
    return ws


@pytest.fixture
def audit_stream() -> io.StringIO:
    return io.StringIO()


def audit_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def make_gate(workspace: Path, fake_home: Path, audit_stream: io.StringIO, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build a gate from an optional policy dict (loaded with expansion allowed)."""

    def build(policy: dict[str, object] | None = None, *, expand: bool = True) -> capgate.Gate:
        path = None
        if policy is not None:
            path = tmp_path / "policy.json"
            path.write_text(json.dumps({"version": 1, **policy}))
        loaded = capgate.load_policy(path, workspace=workspace, allow_user_expansion=expand)
        return capgate.Gate(loaded, audit=AuditLog(audit_stream))

    return build


@pytest.fixture
def gate(make_gate) -> Iterator[capgate.Gate]:  # type: ignore[no-untyped-def]
    """The default policy for the workspace, active for fs/net/proc."""
    g = make_gate()
    with g:
        yield g
