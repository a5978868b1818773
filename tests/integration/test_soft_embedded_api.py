"""design.md, launcher step 5: inside ``capgate run``, ``from capgate import fs, net, proc`` is
the second layer's own API. A soft-sandboxed Python child uses all three, under the default
policy and under one allowing git and a loopback endpoint; each answer is the policy's, and
the launcher's audit log holds the child's decisions. Real command, real loopback server."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._net_helpers import LoopbackHTTPServer
from tests.integration._soft_helpers import PY, audit_lines, capgate_run, empty_home

CHILD = """
from capgate import fs, net, proc

def attempt(label, fn):
    try:
        print(label, "OK", fn())
    except PermissionError as exc:
        print(label, "DENIED", exc.rule)
    except Exception as exc:
        print(label, "ERROR", type(exc).__name__, exc)

def write_with_open():
    with fs.open("output/opened.txt", "w") as fh:
        fh.write("through fs.open")
    return fs.read_text("output/opened.txt")

attempt("fs.write_text", lambda: fs.write_text("output/report.txt", "hello"))
attempt("fs.read_text", lambda: fs.read_text("output/report.txt"))
attempt("fs.open", write_with_open)
attempt("fs.write_bytes-again", lambda: fs.write_bytes("output/report.txt", b"replaced"))
attempt("fs.listdir", lambda: ",".join(sorted(fs.listdir("output"))))
attempt("fs.mkdir", lambda: fs.mkdir("output/sub/deeper", parents=True))
attempt("fs.remove", lambda: fs.remove("output/opened.txt"))
attempt("fs.write-source", lambda: fs.write_text("src.txt", "rewritten"))
attempt("proc.git", lambda: proc.run(["git", "status", "--porcelain"]).returncode)
attempt("net.fetch", lambda: net.fetch("http://127.0.0.1:{port}/embedded", timeout=10).text())
"""


@pytest.fixture
def server() -> Iterator[LoopbackHTTPServer]:
    srv = LoopbackHTTPServer()
    yield srv
    srv.close()


def _run(tmp_path: Path, port: int, policy: dict[str, object] | None) -> tuple[dict[str, str], str, Path, Path]:
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    (ws / "src.txt").write_text("source\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "child.py").write_text(textwrap.dedent(CHILD.format(port=port)))
    args = ["run", "--workspace", str(ws)]
    if policy is not None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps({"version": 1, **policy}))
        args += ["--policy", str(path), "--allow-user-expansion"]
    result = capgate_run([*args, "--", PY, str(ws / "child.py")], home=home, cwd=ws, timeout=60)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    return lines, result.stdout + result.stderr, home, ws


def _child_decisions(home: Path) -> list[dict[str, object]]:
    return [e for e in audit_lines(home) if e.get("source") == "child"]


def _fs_answers_hold(lines: dict[str, str], out: str, ws: Path) -> None:
    assert lines["fs.write_text"] == "OK 5", out
    assert lines["fs.read_text"] == "OK hello", out
    assert lines["fs.open"] == "OK through fs.open", out
    assert lines["fs.write_bytes-again"] == "OK 8", out
    assert lines["fs.listdir"] == "OK opened.txt,report.txt", out  # no temp file left behind
    assert lines["fs.mkdir"] == "OK None", out
    assert lines["fs.remove"] == "OK None", out
    assert lines["fs.write-source"] == "DENIED filesystem.write", out
    assert (ws / "output" / "report.txt").read_bytes() == b"replaced"
    assert (ws / "output" / "sub" / "deeper").is_dir()
    assert (ws / "src.txt").read_text() == "source\n"
    assert sorted(p.name for p in (ws / "output").iterdir()) == ["report.txt", "sub"]


def test_embedded_api_under_the_default_policy(tmp_path: Path, server: LoopbackHTTPServer) -> None:
    lines, out, home, ws = _run(tmp_path, server.port, None)
    _fs_answers_hold(lines, out, ws)
    assert lines["proc.git"] == "DENIED process.allowedCommands", out
    assert lines["net.fetch"] == "DENIED network.enabled", out
    assert server.connections == 0
    decisions = _child_decisions(home)
    writes = [e for e in decisions if e.get("op") == "fs.write" and str(e.get("target")).endswith("/output/report.txt")]
    assert writes and all(e["decision"] == "allow" for e in writes)
    assert any(e.get("op") == "fs.write" and e.get("decision") == "deny" and str(e.get("target")).endswith("src.txt")
               for e in decisions)
    assert any(e.get("op") == "proc.exec" and e.get("decision") == "deny" and e.get("target") == "git"
               for e in decisions)
    assert any(e.get("op") == "net.connect" and e.get("decision") == "deny" for e in decisions)
    # Using the API logs no refusal of capgate's own machinery (ctypes, cgroups, temp names).
    refused = {(e.get("op"), e.get("rule")) for e in decisions if e.get("decision") == "deny"}
    assert refused == {("fs.write", "filesystem.write"), ("proc.exec", "process.allowedCommands"),
                       ("net.connect", "network.enabled")}, refused


def test_embedded_api_with_git_and_a_loopback_endpoint(tmp_path: Path, server: LoopbackHTTPServer) -> None:
    policy = {"process": {"allowedCommands": ["git"]},
              "network": {"enabled": True, "allowedAddresses": [f"127.0.0.1:{server.port}"]}}
    lines, out, home, ws = _run(tmp_path, server.port, policy)
    _fs_answers_hold(lines, out, ws)
    assert lines["proc.git"] == "OK 0", out
    assert lines["net.fetch"] == "OK hello GET /embedded", out
    assert [r["path"] for r in server.requests] == ["/embedded"]
    decisions = _child_decisions(home)
    runs = [e for e in decisions if e.get("op") == "proc.exec" and e.get("target") == "git"]
    assert runs and all(e["decision"] == "allow" for e in runs), runs
    assert any(e.get("event") == "child.proc.run" and e.get("child_exit_status") == 0 for e in audit_lines(home))
    assert any(e.get("op") == "net.connect" and e.get("decision") == "allow"
               and str(e.get("target", "")).startswith(f"127.0.0.1:{server.port}") for e in decisions)
    refused = [e for e in decisions if e.get("decision") == "deny"]
    assert [(e["op"], e["rule"]) for e in refused] == [("fs.write", "filesystem.write")], refused
