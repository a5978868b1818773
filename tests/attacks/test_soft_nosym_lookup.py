"""The soft hooks' no-symlink lookup (``capgate.soft._lexical_canonical``) under the real
``capgate run``.

For a path the kernel confirms has no symlink in it (openat2 ``RESOLVE_NO_SYMLINKS``), the
hooks take the path as written, made absolute and normalised, as its canonical path instead
of asking /proc. Every spelling that normalisation must get right, and every path that must
fall back to /proc (a symlink on the way, a /proc magic link), is tried here against a real
denied file; the libc ``syscall`` the hooks hold must not be callable by the program.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY, capgate_run

SECRET = "capgate-nosym-secret-77c2"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "data" / "sub").mkdir(parents=True)
    (ws / "output").mkdir()
    (ws / ".env").write_text(SECRET)  # denied by the default ``.env*`` pattern
    (ws / "secret").mkdir()
    (ws / "secret" / "key").write_text(SECRET)  # denied by the workspace-anchored ``secret/**``
    (ws / "data" / "ok.txt").write_text("fine")
    os.symlink("../.env", ws / "data" / "alias")  # a file symlink to the secret
    os.symlink(str(ws), ws / "data" / "up")  # a directory symlink on the way
    return ws


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run(tmp_path: Path, ws: Path, body: str) -> tuple[str, str, Path]:
    script = ws / "agent.py"
    script.write_text(textwrap.dedent(body))
    audit = tmp_path / "audit.jsonl"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": 1, "filesystem": {"denyRead": ["secret/**"]}}))
    proc = capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--audit-log", str(audit), "--",
                        PY, str(script)], home=home, cwd=ws)
    return proc.stdout, proc.stderr, audit


def test_every_spelling_of_a_denied_file_is_denied(tmp_path: Path, ws: Path) -> None:
    spellings = [
        ".env", "./.env", "data/../.env", "data/sub/../../.env", ".//.env", "data//..//.env",
        f"{ws}/data/../.env", f"/{ws}/.env", f"//{ws}//data/./../.env",  # absolute, doubled slashes
        "data/alias", "data/up/.env", "data/up/data/../.env",  # symlinks: the /proc fallback
        "/proc/self/cwd/.env", f"/proc/self/root{ws}/.env",  # magic links: the /proc fallback
        # Anchored at the workspace: only a correctly normalised path matches ``secret/**``.
        "secret/key", "data/../secret/key", "./secret//key", f"//{ws}/secret/key", f"{ws}/data/../secret/./key",
        "data/up/secret/key", "secret/../secret/key",
    ]
    out, err, _audit = _run(tmp_path, ws, f"""
        import os
        for p in {spellings!r}:
            try:
                print("LEAK", p, open(p).read())
            except PermissionError:
                print("blocked")
        os.chdir("data")
        for p in ("../.env", "sub/../../.env", "./../.env", "../secret/key", "sub/../../secret/key"):
            try:
                print("LEAK", p, open(p).read())
            except PermissionError:
                print("blocked")
        print("benign", open("./sub/../ok.txt").read())
    """)
    assert SECRET not in out + err
    assert "LEAK" not in out, out + err
    assert out.count("blocked") == len(spellings) + 5, out + err
    assert "benign fine" in out, out + err


def test_allowed_reads_are_logged_under_their_canonical_path(tmp_path: Path, ws: Path) -> None:
    out, err, audit = _run(tmp_path, ws, """
        for p in ("data/./ok.txt", "data//ok.txt", "data/sub/../ok.txt", "./data/ok.txt"):
            print(open(p).read())
    """)
    assert out.split() == ["fine"] * 4, out + err
    canonical = str(ws.resolve() / "data" / "ok.txt")
    reads = [r["target"] for r in _audit(audit) if r.get("op") == "fs.read" and "ok.txt" in str(r.get("target"))]
    assert reads and set(reads) == {canonical}, reads


def test_the_hooks_libc_syscall_is_still_bounded_by_the_kernel_layer(tmp_path: Path, ws: Path) -> None:
    """The hooks hold a libc ``syscall`` for their lookups. Like every object of the hooks, a
    program written against capgate can dig it out (the module docstring says so); what it
    can then do is still bounded by the kernel layer: no write outside the write roots."""
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = ws / "output" / "made-by-syscall"
    out, err, _audit_path = _run(tmp_path, ws, f"""
        import ctypes
        from capgate import soft
        open("data/ok.txt").read()  # the hooks build their lookup on the first open
        cells = [c.cell_contents for c in (soft._nosym_open.__closure__ or ())]
        syscall = next(c for c in cells if isinstance(c, ctypes._CFuncPtr))
        syscall.argtypes = None
        for target in ({str(outside / "made-by-syscall").encode()!r}, {str(inside).encode()!r}):
            print(syscall(258, -100, target, 0o700))  # mkdirat(AT_FDCWD, target, 0700)
    """)
    assert out.split() == ["-1", "0"], out + err  # outside: EACCES from Landlock; output/: allowed
    assert not (outside / "made-by-syscall").exists()
    assert inside.is_dir()
