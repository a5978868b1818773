"""A refused or failed write never costs the old content (issue 10, item 2).

Every writing API and mode (``write_text``, ``write_bytes``, ``fs.open`` in w, wb, w+, wb+, a,
ab, x, xb, r+, rb+) x every cause that stops a write part-way (``maxFileSizeMb``,
``outputQuotaMb``, disk full, the caller's own exception, a ``PermissionDenied`` from
``write()`` followed by ``close()``) x every way of ending the file (a ``with`` block, an
explicit ``close()`` in a ``finally``, many small writes then ``close()``): the target keeps
its old bytes exactly, ``x`` leaves no file, and no temp file is left in the directory. Real
files throughout; disk full is a real 256 KiB tmpfs in a private mount namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import capgate
from capgate import fs
from tests.attacks import _write_failure_cases as wf

MB = 1024 * 1024
CASE_IDS = [c.id for c in wf.cases()]


def _assert_all_hold(results: dict[str, list[str]]) -> None:
    broken = {case: problems for case, problems in results.items() if problems}
    assert not broken, json.dumps(broken, indent=1)
    assert results  # the matrix ran


def test_file_size_cap_never_costs_the_old_content(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"limits": {"maxFileSizeMb": 1}}):
        _assert_all_hold(wf.matrix(str(workspace / "output"), "output", 2 * MB))


def test_output_quota_never_costs_the_old_content(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"limits": {"outputQuotaMb": 1}}) as gate:
        results = wf.matrix(str(workspace / "output"), "output", 3 * MB // 2)
        assert gate.bytes_written == 0  # nothing was charged for the discarded files
    _assert_all_hold(results)


def test_callers_exception_never_costs_the_old_content(gate: capgate.Gate, workspace: Path) -> None:
    results = wf.matrix(str(workspace / "output"), "output", 10_000, raise_inside=True,
                        select=lambda c: c.ending == "with")
    _assert_all_hold(results)


@pytest.mark.parametrize("mode", wf.MODES)
def test_a_later_write_after_a_refused_one_cannot_commit_a_partial_file(
    mode: str, make_gate, workspace: Path  # type: ignore[no-untyped-def]
) -> None:
    """The caller catches the refusal, writes something small and closes: the file's content
    is unknowable after a failed write, so the old bytes stay and the later write fails too."""
    path = workspace / "output" / "target.txt"
    case = wf.Case(f"open:{mode}", "close-in-finally")
    wf.prepare(str(path), case)
    big = b"n" * (2 * MB) if "b" in mode else "n" * (2 * MB)
    small = b"small" if "b" in mode else "small"
    with make_gate({"limits": {"maxFileSizeMb": 1}}):
        fh = fs.open("output/target.txt", mode)
        with pytest.raises(capgate.PermissionDenied):
            fh.write(big)
        with pytest.raises(OSError, match="earlier write"):
            fh.write(small)
            fh.flush()
        fh.close()
    assert wf.judge(str(path), case, set(os.listdir(path.parent)) - {"target.txt"}, RuntimeError()) == []


@pytest.mark.parametrize("case", [c for c in wf.cases()], ids=CASE_IDS)
def test_control_the_same_writes_succeed_within_the_limits(case: wf.Case, make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """Benign control for the whole matrix: under the limits every case commits its data."""
    path = workspace / "output" / "target.txt"
    wf.prepare(str(path), case)
    with make_gate({"limits": {"maxFileSizeMb": 1}}):
        assert wf.run(case, "output/target.txt", 100_000) is None
    data = path.read_bytes()
    expected_new = 100_000 if ("a" not in case.mode and "r" not in case.mode) else None
    if expected_new is not None:
        assert data == b"n" * expected_new
    elif "a" in case.mode:
        assert data == wf.OLD + b"n" * 100_000
    else:  # r+: overwrites from the start
        assert data == b"n" * 100_000
    assert sorted(os.listdir(path.parent)) == ["target.txt"]


_ENOSPC_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[3])
    import capgate
    from capgate.audit import AuditLog
    from tests.attacks import _write_failure_cases as wf
    ws, out = sys.argv[1], sys.argv[2]
    st = os.statvfs(out)
    assert st.f_blocks * st.f_frsize <= 512 * 1024, "not the small tmpfs"
    policy = capgate.load_policy(None, workspace=ws)
    with capgate.Gate(policy, audit=AuditLog(open(os.devnull, "w"))):
        results = wf.matrix(out, "output", 400 * 1024)
        # Control, on the same full-size tmpfs: a write that fits commits.
        ok = wf.Case("write_bytes", "api")
        wf.prepare(os.path.join(out, "target.txt"), ok)
        control = wf.run(ok, "output/target.txt", 1000)
        data = open(os.path.join(out, "target.txt"), "rb").read()
    print(json.dumps({"results": results, "control": repr(control), "control_size": len(data)}))
    """
)


def test_disk_full_never_costs_the_old_content(workspace: Path) -> None:
    """ENOSPC from a real 256 KiB tmpfs mounted on ``output/`` inside a private user and
    mount namespace (works as root and as an unprivileged user)."""
    out = workspace / "output"
    root = Path(__file__).resolve().parents[2]
    script = (
        f"mount -t tmpfs -o size=256k capgate-enospc {out} && "
        f'exec {sys.executable} -c "$0" {workspace} {out} {root}'
    )
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c", script,
         _ENOSPC_SCRIPT],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["control"] == "None" and report["control_size"] == 1000
    for case, problems in report["results"].items():
        # ENOSPC must be what stopped it, seen by the caller (or the cap for nothing here).
        assert problems == [], f"{case}: {problems}"
    assert len(report["results"]) == len(CASE_IDS)


@pytest.mark.parametrize("mode", ["w", "wb", "x"])
def test_an_unclosed_writer_is_discarded_with_a_warning(mode: str, gate: capgate.Gate, workspace: Path) -> None:
    """``fs.open(p, "w").write(data)``: the write works on the live object, nothing lands
    because nothing closed it, and Python's ResourceWarning says so."""
    target = workspace / "output" / "unclosed.txt"
    if mode != "x":
        target.write_bytes(wf.OLD)
    data = b"new" if "b" in mode else "new"
    with pytest.warns(ResourceWarning, match="never closed"):
        assert fs.open("output/unclosed.txt", mode).write(data) == 3  # type: ignore[arg-type]
        import gc

        gc.collect()
    assert (not target.exists()) if mode == "x" else target.read_bytes() == wf.OLD
    assert sorted(os.listdir(target.parent)) == ([] if mode == "x" else ["unclosed.txt"])
    # Control: closed, it commits.
    fh = fs.open("output/unclosed.txt", "w")
    fh.write("closed")
    fh.close()
    assert target.read_text() == "closed"
