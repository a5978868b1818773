"""The gate: decisions, fail-closed, activation by context, audit events, summary."""

from __future__ import annotations

import contextvars
import io
import threading
from pathlib import Path

import pytest

import capgate
from capgate import fs
from capgate.audit import MAX_DISTINCT, AuditLog
from tests.conftest import audit_lines


def test_check_never_raises_and_names_rule(gate: capgate.Gate) -> None:
    d = gate.check("fs.read", "~/.ssh/id_rsa")
    assert (d.allowed, d.rule, d.reason) == (False, "filesystem.denyRead[0]", "denyRead '~/.ssh'")
    assert gate.check("fs.read", "src/app.py").allowed
    assert not gate.check("no.such.op", "x").allowed
    assert not gate.check("fs.read", object()).allowed


def test_internal_error_while_deciding_is_a_denial(gate: capgate.Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object) -> object:
        raise RuntimeError("matcher exploded")

    monkeypatch.setattr(gate._paths, "decide", boom)
    d = gate.check("fs.read", "src/app.py")
    assert not d.allowed and d.rule == "gate.error" and "matcher exploded" in d.reason
    with pytest.raises(PermissionError):
        fs.read_text("src/app.py")


def test_activation_nests_and_restores(make_gate) -> None:  # type: ignore[no-untyped-def]
    outer, inner = make_gate(), make_gate({"filesystem": {"read": ["src"]}})
    with outer:
        assert capgate.current_gate() is outer
        with inner:
            assert capgate.current_gate() is inner
            with pytest.raises(PermissionError):
                fs.read_text(".env")
        assert capgate.current_gate() is outer


def test_activation_is_per_context(make_gate) -> None:  # type: ignore[no-untyped-def]
    g = make_gate()
    seen: list[object] = []
    with g:
        ctx = contextvars.copy_context()
    t = threading.Thread(target=lambda: seen.append(ctx.run(capgate.current_gate)))
    t.start()
    t.join()
    assert seen == [g]


def test_every_decision_is_an_audit_event(gate: capgate.Gate, audit_stream: io.StringIO) -> None:
    fs.read_text("src/app.py")
    with pytest.raises(PermissionError):
        fs.read_text("~/.ssh/id_rsa")
    lines = audit_lines(audit_stream)
    assert [(e["op"], e["decision"]) for e in lines] == [("fs.read", "allow"), ("fs.read", "deny")]
    deny = lines[1]
    assert deny["target"] == "~/.ssh/id_rsa" and deny["level"] == "warning"
    assert deny["rule"] == "filesystem.denyRead[0]" and "timestamp" in deny


def test_denial_summary_counts_op_and_target(gate: capgate.Gate) -> None:
    for _ in range(3):
        gate.check("fs.read", "~/.ssh/id_rsa")
    gate.check("fs.write", "src/app.py")
    summary = gate.denial_summary()
    assert summary[0] == ("fs.read", "~/.ssh/id_rsa", 3)
    assert summary[1][0] == "fs.write" and summary[1][2] == 1


def test_summary_memory_is_bounded(workspace: Path) -> None:
    log = AuditLog(io.StringIO())
    gate = capgate.Gate(capgate.load_policy(None, workspace=workspace), audit=log)
    for i in range(MAX_DISTINCT + 50):
        gate.check("fs.read", f"/nonexistent/{i}")
    assert len(log.summary()) == MAX_DISTINCT and log.overflow == 50 and log.denied == MAX_DISTINCT + 50


def test_ambient_gate_uses_cwd_defaults(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import capgate.gate as gate_mod

    monkeypatch.setattr(gate_mod, "_ambient", None)
    monkeypatch.chdir(workspace)
    assert fs.read_text("src/app.py") == "print('hello')\n"
    with pytest.raises(PermissionError):
        fs.write_text("src/app.py", "x")


def test_ambient_gate_uses_capgate_policy_env(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    import json

    import capgate.gate as gate_mod

    body = tmp_path / "p.json"
    body.write_text(json.dumps({"version": 1, "filesystem": {"read": ["src"]}}))
    effective = tmp_path / "effective.json"
    effective.write_text(capgate.load_policy(body, workspace=workspace).to_json())
    monkeypatch.setattr(gate_mod, "_ambient", None)
    monkeypatch.setenv("CAPGATE_POLICY", str(effective))
    assert fs.read_text("src/app.py")
    with pytest.raises(PermissionError):
        fs.read_text(str(workspace / "README.md"))


# --------------------------------------------------------------------------------------
# the ``with`` stack is per context (asyncio tasks), and is never left stuck
# --------------------------------------------------------------------------------------


def test_interleaved_asyncio_tasks_each_keep_their_own_gate(make_gate) -> None:  # type: ignore[no-untyped-def]
    """Three tasks of one thread, two of them sharing a gate, entered a-b-c and left a-c-b: each
    task sees its own gate at every step, and no gate is left active."""
    import asyncio

    import capgate.gate as gate_mod

    first, second = make_gate(), make_gate({"filesystem": {"read": ["src"]}})
    seen: list[tuple[str, object]] = []

    async def task(name: str, g: capgate.Gate, hold: float) -> None:
        with g:
            await asyncio.sleep(hold)
            seen.append((name, capgate.current_gate()))
        seen.append((name + "-after", gate_mod._current.get()))

    async def main() -> None:
        await asyncio.gather(task("a", first, 0.01), task("b", first, 0.05), task("c", second, 0.03))

    asyncio.run(main())
    assert seen == [("a", first), ("a-after", None), ("c", second), ("c-after", None), ("b", first),
                    ("b-after", None)]
    assert first not in gate_mod._active and second not in gate_mod._active
    # control: the main thread's context was never touched
    assert gate_mod._current.get() is None


def test_leaving_a_gate_in_another_thread_is_an_error_and_never_leaves_it_active(  # type: ignore[no-untyped-def]
    make_gate,
) -> None:
    import capgate.gate as gate_mod

    g = make_gate()
    entered, left = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def other() -> None:
        g.__enter__()
        entered.set()
        left.wait(10)
        seen["still"] = gate_mod._current.get()  # where it was entered, the gate stays current
        g.__exit__(None, None, None)  # control: leaving it where it was entered works
        seen["after"] = gate_mod._current.get()

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(10)
    with pytest.raises(RuntimeError, match="not entered in this context"):
        g.__exit__(None, None, None)
    assert g not in gate_mod._active
    left.set()
    t.join()
    assert seen == {"still": g, "after": None}
    assert g not in gate_mod._active


def test_gates_left_out_of_order_raise_and_restore_the_stack(make_gate) -> None:  # type: ignore[no-untyped-def]
    import capgate.gate as gate_mod

    outer, inner = make_gate(), make_gate()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match="out of order"):
        outer.__exit__(None, None, None)
    assert capgate.current_gate() is inner  # the open inner block still decides
    assert outer not in gate_mod._active and inner in gate_mod._active
    inner.__exit__(None, None, None)
    assert gate_mod._current.get() is None and inner not in gate_mod._active
