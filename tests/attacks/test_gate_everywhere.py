"""One answer everywhere (issue 10, items 6c and 6d): threads started inside ``with gate:`` are
decided by that gate — never by the fallback gate built from the cwd — and a malformed path is
a ``PermissionDenied`` with rule ``fs.path`` from every ``fs`` function, as from ``gate.check``."""

from __future__ import annotations

import _thread
import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate import fs
from capgate import gate as gate_mod

# --------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory outside the workspace that is also the cwd: the fallback gate (defaults,
    cwd as workspace) would allow reading it, the activated gate must not."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text("outside the workspace")
    monkeypatch.chdir(out)
    # A fresh process as far as the fallback is concerned: no ambient gate built yet, no gate
    # ever activated (each test below activates the gates it is about).
    monkeypatch.setattr(gate_mod, "_ambient", None)
    monkeypatch.setattr(gate_mod, "_activated", False)
    return out


def _reader(results: dict[str, str], tag: str, path: Path) -> Callable[[], None]:
    def read() -> None:
        try:
            fs.read_text(path)
            results[tag] = "allowed"
        except capgate.PermissionDenied as exc:
            results[tag] = exc.rule
    return read


def test_a_thread_started_inside_the_gate_is_decided_by_it(gate: capgate.Gate, workspace: Path, outside: Path) -> None:
    results: dict[str, str] = {}
    for tag, path in (("outside", outside / "secret.txt"), ("inside", workspace / "src" / "app.py")):
        t = threading.Thread(target=_reader(results, tag, path))
        t.start()
        t.join()
    assert results == {"outside": "filesystem.read", "inside": "allowed"}


def test_timer_and_run_overriding_subclasses_inherit_the_gate(
    gate: capgate.Gate, workspace: Path, outside: Path
) -> None:
    results: dict[str, str] = {}

    class Worker(threading.Thread):
        def run(self) -> None:
            _reader(results, "subclass", outside / "secret.txt")()

    w = Worker()
    w.start()
    w.join()
    timer = threading.Timer(0, _reader(results, "timer", outside / "secret.txt"))
    timer.start()
    timer.join()
    ok = threading.Timer(0, _reader(results, "timer-control", workspace / "src" / "app.py"))
    ok.start()
    ok.join()
    assert results == {"subclass": "filesystem.read", "timer": "filesystem.read", "timer-control": "allowed"}


def test_executor_work_runs_under_the_submitters_gate(make_gate: Any, workspace: Path, outside: Path) -> None:
    """Worker threads are reused: each item must run under the gate of whoever submitted it,
    not of whoever created the worker."""
    strict = make_gate()
    wide = make_gate({"filesystem": {"read": [".", str(outside)]}})
    results: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        with wide:
            pool.submit(_reader(results, "wide", outside / "secret.txt")).result()
        with strict:
            pool.submit(_reader(results, "strict", outside / "secret.txt")).result()
            list(pool.map(lambda f: f(), [_reader(results, "strict-map", outside / "secret.txt")]))
            pool.submit(_reader(results, "strict-control", workspace / "src" / "app.py")).result()
    assert results == {
        "wide": "allowed",
        "strict": "filesystem.read",
        "strict-map": "filesystem.read",
        "strict-control": "allowed",
    }


def test_run_in_executor_inherits_the_gate(gate: capgate.Gate, workspace: Path, outside: Path) -> None:
    results: dict[str, str] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _reader(results, "executor", outside / "secret.txt"))
        await asyncio.to_thread(_reader(results, "to_thread", outside / "secret.txt"))
        await loop.run_in_executor(None, _reader(results, "control", workspace / "src" / "app.py"))

    asyncio.run(main())
    assert results == {"executor": "filesystem.read", "to_thread": "filesystem.read", "control": "allowed"}


def test_a_thread_without_a_gate_is_refused_while_one_is_active(
    make_gate: Any, workspace: Path, outside: Path, audit_stream: Any
) -> None:
    """Started before the gate (so it inherited nothing): refused, not the fallback gate."""
    go, done = threading.Event(), threading.Event()
    results: dict[str, str] = {}

    def body() -> None:
        go.wait(10)
        try:
            fs.read_text(outside / "secret.txt")
            results["early"] = "allowed"
        except capgate.PermissionDenied as exc:
            results["early"] = exc.rule
        done.set()

    early = threading.Thread(target=body)
    early.start()
    with make_gate():
        go.set()
        assert done.wait(10)
    early.join()
    assert results == {"early": "gate.thread"}
    assert '"rule": "gate.thread"' in audit_stream.getvalue()
    # Once a gate has been used, another thread never falls back to the ambient gate: it
    # cannot be told apart from a thread started inside the gate by C code (see below).
    results.clear()
    go.clear()
    done.clear()
    later = threading.Thread(target=body)
    later.start()
    go.set()
    later.join()
    assert results == {"early": "gate.thread"}
    # Controls: the main thread falls back to the ambient gate (cwd as workspace) when no gate
    # is active, and a thread that enters a gate itself is decided by it.
    assert fs.read_text(outside / "secret.txt") == "outside the workspace"
    own = make_gate()

    def entering() -> None:
        with own:
            _reader(results, "entering", outside / "secret.txt")()
            _reader(results, "entering-control", workspace / "src" / "app.py")()

    t = threading.Thread(target=entering)
    t.start()
    t.join()
    assert results == {"early": "gate.thread", "entering": "filesystem.read", "entering-control": "allowed"}


def test_before_any_gate_a_thread_uses_the_ambient_gate(outside: Path) -> None:
    """Control for the rule above: a program that never activates a gate keeps the ambient
    gate (cwd as workspace) in every thread."""
    results: dict[str, str] = {}
    t = threading.Thread(target=_reader(results, "thread", outside / "secret.txt"))
    t.start()
    t.join()
    assert results == {"thread": "allowed"}


def _c_thread(function: Callable[[], None]) -> None:
    """Start ``function`` the way a C library does: the original ``_thread.start_new_thread``
    (``threading`` keeps a reference to it), so no Python-level patch sees the thread start
    and it begins with an empty context."""
    threading._start_new_thread(function, ())  # type: ignore[attr-defined]


@pytest.mark.parametrize("starter", ["c", "_thread"])
def test_a_low_level_thread_started_inside_a_gate_never_gets_the_ambient_gate(
    starter: str, make_gate: Any, workspace: Path, outside: Path
) -> None:
    """``_thread.start_new_thread`` inside the gate runs under it; a thread started by C code
    cannot, and is refused (``gate.thread``) both while the gate is active and after it exits."""
    results: dict[str, str] = {}
    inside, go, done = threading.Event(), threading.Event(), threading.Event()

    def body() -> None:
        try:
            _reader(results, "during", outside / "secret.txt")()
            _reader(results, "during-control", workspace / "src" / "app.py")()
            inside.set()
            go.wait(10)
            _reader(results, "after", outside / "secret.txt")()
        finally:
            done.set()

    with make_gate():
        (_c_thread if starter == "c" else lambda f: _thread.start_new_thread(f, ()))(body)
        assert inside.wait(10)
    go.set()
    assert done.wait(10)
    if starter == "c":
        assert results == {"during": "gate.thread", "during-control": "gate.thread", "after": "gate.thread"}
    else:
        assert results == {"during": "filesystem.read", "during-control": "allowed", "after": "filesystem.read"}
    # control: the main thread, with no gate active, still has the ambient gate
    assert fs.read_text(outside / "secret.txt") == "outside the workspace"


def test_nested_gates_in_threads_restore_their_own_stack(make_gate: Any, workspace: Path, outside: Path) -> None:
    """One gate entered in two threads at once: each thread's exit restores its own outer gate."""
    g = make_gate()
    inner_ready, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def other() -> None:
        with g:
            inner_ready.set()
            release.wait(10)
        seen["after"] = capgate.gate._current.get()

    t = threading.Thread(target=other)
    t.start()
    assert inner_ready.wait(10)
    with g:
        pass
    release.set()
    t.join()
    assert capgate.gate._current.get() is None
    assert seen["after"] is None


# --------------------------------------------------------------------------------------
# malformed paths
# --------------------------------------------------------------------------------------
MALFORMED: list[object] = ["\ud800", "src/\udbff\udfff-not-a-pair?\ud800", "a\x00b", "", b"src/app.py", 42, None]

CALLS: dict[str, Callable[[object], object]] = {
    "read_text": fs.read_text,  # type: ignore[dict-item]
    "read_bytes": fs.read_bytes,  # type: ignore[dict-item]
    "open-r": lambda p: fs.open(p),  # type: ignore[arg-type]
    "open-w": lambda p: fs.open(p, "w"),  # type: ignore[arg-type]
    "write_text": lambda p: fs.write_text(p, "x"),  # type: ignore[arg-type]
    "write_bytes": lambda p: fs.write_bytes(p, b"x"),  # type: ignore[arg-type]
    "listdir": fs.listdir,  # type: ignore[dict-item]
    "stat": fs.stat,  # type: ignore[dict-item]
    "exists": fs.exists,  # type: ignore[dict-item]
    "mkdir": fs.mkdir,  # type: ignore[dict-item]
    "remove": fs.remove,  # type: ignore[dict-item]
    "rmtree": fs.rmtree,  # type: ignore[dict-item]
    "rename-src": lambda p: fs.rename(p, "output/x"),  # type: ignore[arg-type]
    "rename-dst": lambda p: fs.rename("output/a", p),  # type: ignore[arg-type]
    "chmod": lambda p: fs.chmod(p, 0o600),  # type: ignore[arg-type]
    "utime": fs.utime,  # type: ignore[dict-item]
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("path", MALFORMED, ids=repr)
def test_malformed_paths_are_permission_denied_fs_path(call: str, path: object, gate: capgate.Gate) -> None:
    with pytest.raises(capgate.PermissionDenied) as info:
        CALLS[call](path)
    assert info.value.rule == "fs.path"
    decision = gate.check("fs.read", path)
    assert not decision.allowed
    assert decision.rule == "fs.path"


def test_surrogate_escaped_bytes_are_a_valid_name(gate: capgate.Gate, workspace: Path) -> None:
    """Control: a name holding a byte that is not UTF-8 (spelled the way os.fsdecode spells it)
    is an ordinary path, readable and writable where the policy allows."""
    name = os.fsdecode(b"output/caf\xe9.txt")
    fs.write_text(name, "ok")
    assert fs.read_text(name) == "ok"
    assert gate.check("fs.read", name).allowed
