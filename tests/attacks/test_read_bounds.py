"""``fs.read_bytes`` asks the kernel for bounded amounts, whatever size a file claims."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import capgate


def test_read_bytes_of_a_huge_sparse_file_never_asks_for_its_claimed_size_at_once(
    gate: capgate.Gate, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``st_size`` is what the file claims: a sparse file claims any size for free, and
    ``os.read(fd, st_size + 1)`` allocates the whole request before reading a byte. A file
    claiming 1 TiB must not make read_bytes ask for 1 TiB (it would fail with MemoryError, or
    take the memory); it reads in bounded chunks. The 64 MiB file here is read to the end."""
    from capgate import fs as fs_mod

    asked: list[int] = []
    real_read = os.read

    def recording_read(fd: int, n: int) -> bytes:
        asked.append(n)
        return real_read(fd, n)

    sparse = workspace / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.truncate(64 << 20)
        fh.seek((64 << 20) - 3)
        fh.write(b"end")
    small = workspace / "small.txt"
    small.write_text("hello")
    monkeypatch.setattr(fs_mod.os, "read", recording_read)
    assert fs_mod.read_bytes(small) == b"hello"  # control: a small file, one exact-size read
    assert asked[0] == 6  # the exact size (+1) first
    asked.clear()
    data = fs_mod.read_bytes(sparse)
    assert len(data) == 64 << 20 and data.endswith(b"end")
    assert max(asked) <= 1 << 20
