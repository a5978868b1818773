"""Embedded use in a new workspace (issue 14): the default write roots appear on first use,
decisions go to the ``capgate`` logger unless ``CAPGATE_AUDIT_LOG`` names a file, and
``capgate.AuditLog`` is public."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import capgate
from capgate import fs


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def test_default_write_roots_are_created_on_first_use(workspace: Path) -> None:
    gate = capgate.Gate(capgate.load_policy(None, workspace=workspace), audit=capgate.AuditLog(open(os.devnull, "w")))
    with gate:
        fs.write_text(str(workspace / "output" / "report.md"), "x")
        fs.write_text(str(workspace / ".cache" / "agent" / "c"), "y")
        with pytest.raises(capgate.PermissionDenied):  # the control: not a write root
            fs.write_text(str(workspace / "src" / "x.py"), "z")
    assert (workspace / "output" / "report.md").read_text() == "x"
    assert (workspace / ".cache" / "agent" / "c").read_text() == "y"
    assert not (workspace / "src").exists()


def test_a_symlink_planted_on_the_way_makes_nothing_outside(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    gate = capgate.Gate(capgate.load_policy(None, workspace=workspace), audit=capgate.AuditLog(open(os.devnull, "w")))
    (workspace / ".cache").symlink_to(outside)  # after the policy was built
    with gate, pytest.raises(OSError):
        fs.write_text(str(workspace / ".cache" / "agent" / "c"), "y")
    assert list(outside.iterdir()) == []


def test_without_an_audit_log_denials_go_to_the_capgate_logger(workspace: Path, caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPGATE_AUDIT_LOG", raising=False)
    (workspace / "a.txt").write_text("a")
    caplog.set_level(logging.INFO, logger="capgate")
    with capgate.Gate(capgate.load_policy(None, workspace=workspace)):
        fs.read_text(str(workspace / "a.txt"))  # allowed: not logged one by one
        with pytest.raises(capgate.PermissionDenied):
            fs.read_text("/etc/shadow")
    records = [r for r in caplog.records if r.name == "capgate"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].getMessage().startswith("fs.read denied: /etc/shadow")
    assert records[0].capgate["rule"] == "filesystem.read"  # type: ignore[attr-defined]


def test_capgate_audit_log_names_a_json_lines_file(workspace: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("CAPGATE_AUDIT_LOG", str(log))
    (workspace / "a.txt").write_text("a")
    gate = capgate.Gate(capgate.load_policy(None, workspace=workspace))
    with gate:
        fs.read_text(str(workspace / "a.txt"))
    gate.audit.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line.get("decision") == "allow" and line.get("op") == "fs.read" for line in lines)


def test_audit_log_is_public() -> None:
    from capgate.audit import AuditLog

    assert capgate.AuditLog is AuditLog and "AuditLog" in capgate.__all__
