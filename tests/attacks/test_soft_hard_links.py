"""Hard links planted in the workspace, under the real ``capgate run``: the soft hooks give the
gate's answer (rule ``filesystem.hardLinks``) through every way a Python program opens or
changes a file in place, and a plain file beside each is the benign control.

``ws/planted`` shares its inode with a secret in the real HOME (read side); ``ws/output/
planted`` shares its inode with a file in the real HOME that a write through the link would
change (write side). Nothing may be read from the one or change the other.
"""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

import capgate
from capgate.audit import AuditLog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY, audit_lines, capgate_run

SECRET = "capgate-hard-link-secret-7c2d"
HOME_NOTES = "notes in the real home, never to change\n"

# (label, action): every Python way of reading a file or changing it in place. ``{p}`` is the
# path (relative to the workspace, the child's cwd) and ``{d}``/``{n}`` its directory and name.
READS = [
    ("open", "open({p!r}).read()"),
    ("open-rb", "open({p!r}, 'rb').read()"),
    ("io.open", "io.open({p!r}).read()"),
    ("io.FileIO", "io.FileIO({p!r}).read()"),
    ("io.open_code", "io.open_code({p!r}).read()"),
    ("os.open", "os.read(os.open({p!r}, os.O_RDONLY), 100)"),
    ("os.open-dir_fd", "os.read(os.open({n!r}, os.O_RDONLY, dir_fd=os.open({d!r}, os.O_RDONLY)), 100)"),
    ("os.open-dir_fd-O_PATH", "os.read(os.open({n!r}, os.O_RDONLY, dir_fd=os.open({d!r}, os.O_PATH)), 100)"),
    ("pathlib", "pathlib.Path({p!r}).read_bytes()"),
    ("shutil.copyfile", "shutil.copyfile({p!r}, 'output/copied-' + {n!r})"),
    ("capgate.fs", "capgate.fs.read_text({p!r})"),
]
WRITES = [
    ("open-w", "open({p!r}, 'w').write('X')"),
    ("open-a", "open({p!r}, 'a').write('X')"),
    ("open-r+", "open({p!r}, 'r+').write('X')"),
    ("os.open-TRUNC", "os.write(os.open({p!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), b'X')"),
    ("os.open-dir_fd", "os.write(os.open({n!r}, os.O_WRONLY, dir_fd=os.open({d!r}, os.O_RDONLY)), b'X')"),
    ("pathlib", "pathlib.Path({p!r}).write_text('X')"),
    ("os.truncate", "os.truncate({p!r}, 0)"),
    ("os.chmod", "os.chmod({p!r}, 0o600)"),
    ("os.utime", "os.utime({p!r}, (1, 1))"),
    ("shutil.copyfile-dst", "shutil.copyfile('src.txt', {p!r})"),
    ("sqlite3", "sqlite3.connect({p!r}).close()"),  # a connect opens the file read-write
]

CHILD = """
import io, os, pathlib, shutil, sqlite3, capgate.fs

def attempt(kind, label, path, action):
    d, n = os.path.split(os.path.abspath(path))
    try:
        result = eval(action.format(p=path, d=d, n=n))
    except PermissionError as exc:
        print(kind, label, path, "blocked", getattr(exc, "rule", "?"))
    except Exception as exc:
        print(kind, label, path, "error", type(exc).__name__, exc)
    else:
        print(kind, label, path, "DONE", repr(result)[:80])

for label, action in {reads!r}:
    attempt("read", label, "planted", action)
    attempt("read", label, "plain.txt", action)
for label, action in {writes!r}:
    attempt("write", label, "output/planted", action)
    attempt("write", label, "output/plain.txt", action)
try:
    os.link({secret!r}, "output/linked")  # a hard link to a denied file, made by the child
    print("link DONE")
except PermissionError as exc:
    print("link blocked", exc.rule)
"""


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_rsa"
    secret.write_text(SECRET)
    notes = home / "notes.txt"
    notes.write_text(HOME_NOTES)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    (ws / "plain.txt").write_text("plain workspace file\n")
    (ws / "src.txt").write_text("source\n")
    (ws / "output" / "plain.txt").write_text("plain output file\n")
    os.link(secret, ws / "planted")
    os.link(notes, ws / "output" / "planted")
    return {"home": home, "ws": ws, "secret": secret, "notes": notes}


def _run(world: dict[str, Path]) -> tuple[dict[tuple[str, str, str], str], str, str]:
    script = world["ws"].parent / "agent.py"  # outside the workspace: not an input the child can read
    script.write_text(textwrap.dedent(CHILD.format(reads=READS, writes=WRITES, secret=str(world["secret"]))))
    proc = capgate_run(["run", "--workspace", str(world["ws"]), "--", PY, str(script)],
                       home=world["home"], cwd=world["ws"])
    results = {}
    for line in proc.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] in ("read", "write"):
            results[(parts[0], parts[1], parts[2])] = parts[3]
    return results, proc.stdout, proc.stderr


def test_hard_links_get_the_gates_answer_through_every_way_to_open(world: dict[str, Path]) -> None:
    results, out, err = _run(world)
    for kind, table, planted, plain in (("read", READS, "planted", "plain.txt"),
                                        ("write", WRITES, "output/planted", "output/plain.txt")):
        for label, _action in table:
            assert results.get((kind, label, planted)) == "blocked filesystem.hardLinks", (kind, label, out + err)
            assert results.get((kind, label, plain), "").startswith("DONE"), (kind, label, out + err)
    assert SECRET not in out + err
    assert world["notes"].read_text() == HOME_NOTES
    assert world["notes"].stat().st_mode & 0o777 != 0o600
    assert "link blocked" in out, out + err
    assert not (world["ws"] / "output" / "linked").exists()
    assert not (world["ws"] / "output" / "copied-planted").exists()
    denials = [e for e in audit_lines(world["home"]) if e.get("rule") == "filesystem.hardLinks"]
    assert {e["op"] for e in denials} == {"fs.read", "fs.write"}
    assert all(e["decision"] == "deny" for e in denials)


def test_the_hooks_and_gate_check_give_one_answer(world: dict[str, Path]) -> None:
    """The rule and reason in the child's audit line are the ones ``gate.check`` gives."""
    results, out, err = _run(world)
    assert results[("read", "open", "planted")] == "blocked filesystem.hardLinks", out + err
    policy = capgate.load_policy(None, workspace=world["ws"])
    stream = io.StringIO()
    decision = capgate.Gate(policy, audit=AuditLog(stream)).check("fs.read", "planted")
    assert not decision.allowed and decision.rule == "filesystem.hardLinks"
    child = [e for e in audit_lines(world["home"])
             if e.get("rule") == "filesystem.hardLinks" and e.get("op") == "fs.read"]
    assert child and child[0]["reason"] == decision.reason
    assert json.loads(stream.getvalue().splitlines()[-1])["rule"] == "filesystem.hardLinks"
