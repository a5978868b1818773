"""A fast stand-in for ``capgate.fs`` over pyfakefs, for tool authors' unit tests.

Each function asks the real gate (same policy, same canonicalization through the patched
``os.path.realpath``) and then acts with plain ``open``/``os`` calls, which pyfakefs fakes.
It proves a tool *asks* the right questions quickly; it does not prove the race-free opening
(openat2, descriptor checks), which pyfakefs cannot fake — use the real ``capgate_gate``.

pyfakefs fakes ``os`` only in the modules ``sys.modules`` lists when it starts, hands its fake
``os`` to modules first imported while it runs and drops those again when it stops. capgate
loads ``capgate.fs`` and the policy loader lazily and keeps them as package attributes
(``capgate.fs``, ``capgate.policy.load``) and in the package's lazy cache
(``capgate.load_policy``), so ``prepare()`` and ``forget_loaded_while_patched()`` keep those
references and ``sys.modules`` in step around the patching (see ``capgate_fast_fs``).
"""

from __future__ import annotations

import builtins
import importlib
import os
import shutil
import sys
from collections.abc import Mapping
from types import FunctionType, ModuleType
from typing import Any

import pytest

from capgate.errors import PermissionDenied
from capgate.gate import current_gate
from capgate.ops import FS_DELETE, FS_READ, FS_WRITE

__all__ = ["forget_loaded_while_patched", "install", "prepare"]


def _checked(op: str, path: Any) -> str:
    gate = current_gate()
    decision = gate.check(op, path)
    canonical = decision.target or gate.canonical_path(path)
    if not decision.allowed:
        raise PermissionDenied(op, gate.show(canonical), decision.reason, decision.rule)
    return canonical


def read_bytes(path: Any) -> bytes:
    with builtins.open(_checked(FS_READ, path), "rb") as fh:
        return fh.read()


def read_text(path: Any, encoding: str = "utf-8", errors: str = "strict") -> str:
    return read_bytes(path).decode(encoding, errors)


def write_bytes(path: Any, data: bytes) -> int:
    with builtins.open(_checked(FS_WRITE, path), "wb") as fh:
        return fh.write(data)


def write_text(path: Any, text: str, encoding: str = "utf-8", errors: str = "strict") -> int:
    write_bytes(path, text.encode(encoding, errors))
    return len(text)


def open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    op = FS_READ if set(mode) <= set("rbt") else FS_WRITE
    return builtins.open(_checked(op, path), mode, *args, **kwargs)


def listdir(path: Any = ".") -> list[str]:
    return os.listdir(_checked(FS_READ, path))


def exists(path: Any) -> bool:
    return os.path.exists(_checked(FS_READ, path))


def stat(path: Any) -> os.stat_result:
    return os.stat(_checked(FS_READ, path))


def mkdir(path: Any, *, parents: bool = False, exist_ok: bool = False, mode: int = 0o777) -> None:
    target = _checked(FS_WRITE, path)
    if parents:
        os.makedirs(target, mode, exist_ok=exist_ok)
    elif not (exist_ok and os.path.isdir(target)):
        os.mkdir(target, mode)


def remove(path: Any) -> None:
    os.remove(_checked(FS_DELETE, path))


def rename(src: Any, dst: Any) -> None:
    os.rename(_checked(FS_DELETE, src), _checked(FS_WRITE, dst))


def rmtree(path: Any) -> None:
    gate = current_gate()
    target = _checked(FS_DELETE, path)
    if gate.recursive_delete_root(target) is None:
        raise gate.deny(
            FS_DELETE, gate.show(target), "recursive delete is not allowed here", "filesystem.recursiveDelete"
        )
    shutil.rmtree(target)


_NAMES = ("read_bytes", "read_text", "write_bytes", "write_text", "open", "listdir", "exists", "stat", "mkdir",
          "remove", "rename", "rmtree")


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap ``capgate.fs`` functions for these for the rest of the test."""
    import capgate.fs as real

    for name in _NAMES:
        monkeypatch.setattr(real, name, globals()[name])


# What the fixture and the fake functions run: imported before pyfakefs starts, so that none is
# first imported under it (``capgate._sys.openat2`` probes the kernel at import, the policy
# loader would keep pyfakefs' fake ``os`` after the test).
_PRELOAD = ("capgate.fs", "capgate.policy.load", "capgate.policy.schema", "capgate.policy.dump", "capgate.addresses",
            "capgate.hosts")


def _is_capgate(name: object) -> bool:
    return isinstance(name, str) and (name == "capgate" or name.startswith("capgate."))


def _capgate_modules() -> list[ModuleType]:
    return [m for n, m in list(sys.modules.items()) if _is_capgate(n) and isinstance(m, ModuleType)]


def _reattach_dropped_modules() -> None:
    """Register again the capgate modules the package still hands out but ``sys.modules`` lost.

    pytester's in-process runs restore ``sys.modules`` afterwards, dropping the capgate modules
    first imported during the run while ``capgate.fs`` or ``capgate.load_policy`` still lead to
    them: pyfakefs would not patch them, and ``import capgate.fs`` would build a second copy.
    """
    stack = _capgate_modules()
    seen = {id(m) for m in stack}
    while stack:
        for value in list(vars(stack.pop()).values()):
            if not isinstance(value, ModuleType) or id(value) in seen or not _is_capgate(value.__name__):
                continue
            seen.add(id(value))
            sys.modules.setdefault(value.__name__, value)
            if sys.modules[value.__name__] is value:  # follow only what is now the registered module
                stack.append(value)


def prepare() -> dict[str, ModuleType]:
    """Before pyfakefs starts: make the capgate modules in use registered and loaded.

    Returns the ``sys.modules`` of that moment, for ``forget_loaded_while_patched``.
    """
    _reattach_dropped_modules()
    for name in _PRELOAD:
        importlib.import_module(name)
    import capgate

    if capgate.fs is not sys.modules["capgate.fs"] or not _is_registered(capgate.load_policy):
        raise RuntimeError(
            "capgate_fast_fs: this process holds two copies of capgate.fs or capgate.policy.load "
            "(sys.modules was edited); pyfakefs would patch only one of them"
        )
    return dict(sys.modules)


def _is_registered(fn: Any) -> bool:
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    return isinstance(module, ModuleType) and getattr(fn, "__globals__", None) is vars(module)


def forget_loaded_while_patched(before: Mapping[str, ModuleType]) -> None:
    """After pyfakefs stopped: drop capgate's references to modules first imported under it.

    pyfakefs removed those modules from ``sys.modules`` (they hold its fake ``os``), but a
    package attribute or lazy cache (``capgate.net``, ``capgate.load_policy``) would keep
    handing them to the next, real-filesystem, test; without it they load afresh.
    """
    for module in _capgate_modules():
        for attr, value in list(vars(module).items()):
            if isinstance(value, ModuleType):
                stale = _is_capgate(value.__name__) and before.get(value.__name__) is not value
            elif isinstance(value, FunctionType):
                stale = _is_capgate(value.__module__) and value.__module__ not in before
            else:
                continue
            if stale:
                delattr(module, attr)
