"""A fast stand-in for ``capgate.fs`` over pyfakefs, for tool authors' unit tests.

Each function asks the real gate (same policy, same canonicalization through the patched
``os.path.realpath``) and then acts with plain ``open``/``os`` calls, which pyfakefs fakes.
It proves a tool *asks* the right questions quickly; it does not prove the race-free opening
(openat2, descriptor checks), which pyfakefs cannot fake — use the real ``capgate_gate``.
"""

from __future__ import annotations

import builtins
import os
import shutil
from typing import Any

import pytest

from capgate.errors import PermissionDenied
from capgate.gate import current_gate
from capgate.ops import FS_DELETE, FS_READ, FS_WRITE

__all__ = ["install"]


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
