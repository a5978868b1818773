"""Adversarial review, round 6: the embedded API (``capgate.Gate``, ``gate.check``, ``capgate.fs``).

Each test asserts the secure (or correct) behaviour; each was marked ``xfail(strict=True)``
while its hole existed, and the mark was removed with the fix. Every
refusal test has a benign control beside it (the allowed case works). Everything is real: temp
files and directories, the real policy loader, real threads and a real asyncio loop.

Reference semantics for deny patterns (``tests/unit/test_path_matcher_property.py``): a path is
denied when it or an ancestor matches the gitignore pattern, as a file or as a directory.
"""

from __future__ import annotations

import _thread
import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate import fs
from capgate import gate as gate_mod
from capgate.audit import AuditLog
from capgate.ops import FS_READ


def _gate(workspace: Path, tmp_path: Path, deny_read: list[str]) -> capgate.Gate:
    """A restrict-only user policy (no expansion) that only adds ``denyRead`` entries."""
    path = tmp_path / "deny-policy.json"
    path.write_text(json.dumps({"filesystem": {"denyRead": deny_read}}))
    policy = capgate.load_policy(path, workspace=workspace)
    return capgate.Gate(policy, audit=AuditLog(None, level="warning"))


def _read_rule(g: capgate.Gate, path: Path) -> str:
    """What ``fs`` does with ``path`` under ``g``: 'allowed' or the rule that refused it."""
    with g:
        try:
            if path.is_dir():
                fs.listdir(path)
            else:
                fs.read_bytes(path)
        except capgate.PermissionDenied as exc:
            return exc.rule
    return "allowed"


# --------------------------------------------------------------------------------------
# deny matcher (capgate/paths.py) against gitignore semantics
# --------------------------------------------------------------------------------------


def test_glob_component_ending_in_space_under_any_depth_dir_pattern(workspace: Path, tmp_path: Path) -> None:
    secret = workspace / "key " / "id.txt"
    secret.parent.mkdir()
    secret.write_text("secret")
    g = _gate(workspace, tmp_path, ["**/ke? /**"])
    # control: a file the pattern does not cover stays readable
    assert _read_rule(g, workspace / "src" / "app.py") == "allowed"
    assert g.check(FS_READ, str(secret)).allowed is False
    assert _read_rule(g, secret) == "filesystem.denyRead[0]"


def test_double_star_star_double_star_tail_denies_nested_files(workspace: Path, tmp_path: Path) -> None:
    secret = workspace / "secrets" / "a" / "b" / "key.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("secret")
    g = _gate(workspace, tmp_path, ["secrets/**/*/**"])
    assert _read_rule(g, workspace / "src" / "app.py") == "allowed"  # control
    assert g.check(FS_READ, str(secret)).allowed is False
    assert _read_rule(g, secret) == "filesystem.denyRead[0]"


def test_trailing_space_in_a_deny_entry_still_denies_the_name(workspace: Path, tmp_path: Path) -> None:
    notes = workspace / "notes.txt"
    notes.write_text("private")
    try:
        g = _gate(workspace, tmp_path, ["notes.txt "])
    except capgate.PolicyError:
        return  # refusing the entry outright is an acceptable fix too
    assert _read_rule(g, workspace / "src" / "app.py") == "allowed"  # control
    assert g.check(FS_READ, str(notes)).allowed is False
    assert _read_rule(g, notes) == "filesystem.denyRead[0]"


def test_slash_double_star_denies_listing_the_directory_itself(workspace: Path, tmp_path: Path) -> None:
    secrets_dir = workspace / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "prod-db-password.txt").write_text("secret")
    # controls: the same directory under the other spellings of the pattern is denied
    assert _read_rule(_gate(workspace, tmp_path, ["secret*/**"]), secrets_dir) == "filesystem.denyRead[0]"
    assert _read_rule(_gate(workspace, tmp_path, ["**/secrets/**"]), secrets_dir) == "filesystem.denyRead[0]"
    g = _gate(workspace, tmp_path, ["secrets/**"])
    assert _read_rule(g, secrets_dir / "prod-db-password.txt") == "filesystem.denyRead[0]"
    assert _read_rule(g, workspace / "src") == "allowed"  # control: another directory lists
    assert _read_rule(g, secrets_dir) == "filesystem.denyRead[0]"


# --------------------------------------------------------------------------------------
# gates and threads (capgate/gate.py, capgate/_gate_threads.py)
# --------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cwd, outside the workspace: the ambient gate (defaults, cwd as workspace) reads it."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text("outside the workspace")
    monkeypatch.chdir(out)
    monkeypatch.setattr(gate_mod, "_ambient", None)
    return out


def test_low_level_thread_started_inside_a_gate_never_gets_the_ambient_gate(
    make_gate: Any, workspace: Path, outside: Path
) -> None:
    results: dict[str, str] = {}
    go, done = threading.Event(), threading.Event()

    def body() -> None:
        go.wait(10)
        try:
            fs.read_text(outside / "secret.txt")
            results["late"] = "allowed"
        except capgate.PermissionDenied as exc:
            results["late"] = exc.rule
        finally:
            done.set()

    strict = make_gate()
    with strict:
        with pytest.raises(capgate.PermissionDenied):  # control: refused inside the gate
            fs.read_text(outside / "secret.txt")
        _thread.start_new_thread(body, ())
    go.set()
    assert done.wait(10)
    assert results["late"] != "allowed"


def test_two_asyncio_tasks_can_each_use_the_same_gate(make_gate: Any, workspace: Path) -> None:
    g = make_gate()
    app = workspace / "src" / "app.py"

    async def task(hold: float) -> str:
        with g:
            await asyncio.sleep(hold)
            return fs.read_text(app)

    async def main() -> list[Any]:
        # A enters first and leaves first; B enters second and leaves last.
        return await asyncio.gather(task(0.01), task(0.05), return_exceptions=True)

    try:
        results = asyncio.run(main())
        stuck = g in gate_mod._active
    finally:
        gate_mod._active.pop(g, None)  # never leak a stuck gate into later tests
    assert results == ["print('hello')\n", "print('hello')\n"]
    assert not stuck


# --------------------------------------------------------------------------------------
# fs: the _lexical fast path (capgate/fs.py)
# --------------------------------------------------------------------------------------


class _OddStr(str):
    """A ``str`` subclass whose ``in`` answers False (a buggy or hostile ``__contains__``):
    ``coerce_path`` passes subclasses through unchanged."""

    def __contains__(self, item: object) -> bool:
        return False


def test_a_str_subclass_cannot_skip_normalization(make_gate: Any, workspace: Path, fake_home: Path,
                                                  tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "table.csv").write_text("a,b\n")
    g = make_gate({"filesystem": {"read": [".", str(data)]}})
    dotted = str(data) + "/.." * str(data).count("/") + str(fake_home / ".aws" / "credentials")
    with g:
        assert fs.read_text(_OddStr(str(data / "table.csv"))) == "a,b\n"  # control: the subclass works
        with pytest.raises(capgate.PermissionDenied):  # control: the plain spelling is denied
            fs.read_text(dotted)
        with pytest.raises(capgate.PermissionDenied):
            fs.read_text(_OddStr(dotted))
