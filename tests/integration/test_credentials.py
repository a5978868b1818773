"""Credentials at the egress proxy (issue 19), through ``capgate run`` with real TLS on loopback.

The upstream is an HTTPS server on 127.0.0.1 with its own test CA (``--upstream-ca``), reached
by name through ``--resolve``. Children: Python (urllib, requests, httpx), curl and Node, under
the soft and the namespace backends. The claims: the upstream gets the real value, the child
never sees it (environment, responses that echo it, /proc, files), a placeholder sent elsewhere
is a logged denial, SNI/Host must match, request rules hold, bad upstream certificates refuse.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _namespace_helpers import require_namespace_backend
from _soft_helpers import PY, capgate_run, launcher_messages
from _tls_upstream import OTHER_HOST, SECRET, TEST_HOST, Upstream, upstream

PROBE = Path(__file__).with_name("_credential_probe.py")
NODE_FETCH = """
const fs = require('fs');
const [url, hfile] = process.argv.slice(2);
const [name, value] = fs.readFileSync(hfile, 'utf8').trim().split(': ');
fetch(url, {headers: {[name]: value}}).then(r => r.text()).then(t => process.stdout.write(t))
  .catch(e => { console.error(String(e.cause || e)); process.exit(3); });
"""


@pytest.fixture
def tls_upstream(tmp_path: Path) -> Iterator[tuple[Any, Upstream]]:
    with upstream(tmp_path) as pair:
        yield pair


def _backend(name: str) -> str:
    if name == "namespace":
        require_namespace_backend()
    return name


def run_probe(ws: Path, home: Path, server: Upstream, ca_file: Path, action: str, *args: str, backend: str = "soft",
              extra: list[str] | None = None, env: dict[str, str] | None = None,
              python: str = PY) -> tuple[list[dict[str, Any]], Any]:
    shutil.copy(PROBE, ws / "probe.py")
    port = server.port
    audit = ws.parent / f"audit-{action}-{backend}.jsonl"
    cmd = ["run", "--backend", backend, "--audit-log", str(audit),
           "--credential", f"TESTTOKEN@{TEST_HOST}:{port}/Authorization",
           "--resolve", f"{TEST_HOST}:{port}:127.0.0.1", "--resolve", f"{OTHER_HOST}:{port}:127.0.0.1",
           "--allow-net", f"127.0.0.1:{port}", "--allow-net", f"{OTHER_HOST}:{port}",
           "--upstream-ca", str(ca_file), *(extra or []), "--", python, "probe.py", action, str(port), *args]
    done = capgate_run(cmd, home=home, cwd=ws, env_extra={"TESTTOKEN": SECRET, **(env or {})}, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert SECRET not in done.stdout and SECRET not in done.stderr
    assert audit.exists() and SECRET not in audit.read_text()
    done.audit = [json.loads(line) for line in audit.read_text().splitlines()]  # type: ignore[attr-defined]
    return lines, done


def _auth_seen(server: Upstream) -> list[str]:
    return [v for r in server.requests for n, v in r["headers"] if n.lower() == "authorization"]


@pytest.mark.parametrize("backend", ["soft", "namespace"])
def test_upstream_gets_the_secret_and_the_child_only_the_placeholder(ws: Path, home: Path, tls_upstream: Any,
                                                                      backend: str) -> None:
    ca, server = tls_upstream
    lines, done = run_probe(ws, home, server, ca.ca_file, "urllib", backend=_backend(backend))
    assert [line["status"] for line in lines] == [200, 200, 200, 200], done.stderr
    assert _auth_seen(server) and all(v == f"Bearer {SECRET}" for v in _auth_seen(server))
    for line in lines[:3]:  # echo, echo split into 7-byte chunks, gzip echo: scrubbed each time
        assert "capgate-placeholder-" in line["body"], line
        assert SECRET[:20] not in line["body"]
    assert any(r["target"] == "/upload" and len(r["body"]) == 5000 for r in server.requests)  # 100-continue
    requests_logged = [e for e in done.audit if e.get("op") == "net.request"]
    assert {e["path"] for e in requests_logged} >= {"/echo", "/stream", "/gzip-echo", "/upload"}
    assert all(e["host"] == TEST_HOST and "headers" not in e for e in requests_logged)


@pytest.mark.parametrize("client", ["requests", "httpx", "curl", "node"])
def test_other_clients_get_the_secret_injected(ws: Path, home: Path, tls_upstream: Any, client: str) -> None:
    ca, server = tls_upstream
    extra: list[str] = []
    args: list[str] = []
    if client in ("curl", "node"):
        tool = shutil.which(client)
        if tool is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{client} must be installed in CI")
            pytest.skip(f"{client} is not installed")
        extra = ["--allow-run", client]
        if client == "node":
            # undici's HTTP parser is WebAssembly, which reserves ~10 GiB of address space: more than
            # the default memoryMb (an RLIMIT_AS) allows, whatever the proxy does.
            (home / ".config" / "capgate").mkdir(parents=True, exist_ok=True)
            (home / ".config" / "capgate" / "permissions.json").write_text(
                json.dumps({"limits": {"memoryMb": 65536}}))
            (ws / "fetch.js").write_text(NODE_FETCH)
            args = [str(ws / "fetch.js")]
    lines, done = run_probe(ws, home, server, ca.ca_file, client, *args, extra=extra)
    assert lines and all(line["status"] in (200, 0) for line in lines), (lines, done.stderr)
    assert _auth_seen(server) and all(v == f"Bearer {SECRET}" for v in _auth_seen(server))
    assert all("capgate-placeholder-" in line["body"] for line in lines)


@pytest.mark.parametrize("backend", ["soft", "namespace"])
def test_hunters_find_no_secret(ws: Path, home: Path, tls_upstream: Any, backend: str, tmp_path: Path) -> None:
    """Python hunting /proc/*/environ|cmdline|mem, the run dir, HOME, the workspace; the
    native probe (grep, a C-free native hunter) over the same /proc files."""
    ca, server = tls_upstream
    lines, done = run_probe(ws, home, server, ca.ca_file, "hunt", SECRET[::-1], str(ws.parent),
                            backend=_backend(backend))
    assert lines, done.stderr[-3000:]
    hunt = lines[-1]
    assert hunt["own"] is True, hunt  # (the hunter holds a placeholder; its hooks refuse it /proc)
    assert hunt["found"] == [] and hunt["env_has"] == [], hunt
    grep = shutil.which("grep")
    assert grep is not None
    needle = ws / "needle"
    needle.write_text(f"{SECRET[5:30]}\ncapgate-placeholder-\n")  # (a fragment, in a file: no argv holds it)
    script = ws / "native.sh"
    script.write_text(f"#!/bin/sh\nexec {grep} -raoF -f {needle} /proc/[0-9]*/environ /proc/[0-9]*/cmdline "
                      "\"$TMPDIR/..\" \"$HOME\"\n")
    script.chmod(0o755)
    (home / ".config" / "capgate").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "capgate" / "permissions.json").write_text(json.dumps({"process": {"allowShell": True}}))
    done2 = capgate_run(["run", "--backend", backend, "--credential", f"TESTTOKEN@{TEST_HOST}/Authorization",
                         "--allow-read", str(ws), "--allow-run", grep, "--", str(script)], home=home, cwd=ws,
                        env_extra={"TESTTOKEN": SECRET}, timeout=120)
    matches = done2.stdout.splitlines()
    # control: the native hunter reads /proc (its own environment holds the placeholder)
    assert any(m.endswith("/environ:capgate-placeholder-") for m in matches), (done2.stdout, done2.stderr[-2000:])
    assert not any(SECRET[5:30] in m for m in matches), matches


def test_launcher_environ_block_is_blanked(tmp_path: Path) -> None:
    """The launcher's own /proc/<pid>/environ, read by a sibling process of the same user
    (no Landlock between them): blank after drop_secret_variables; the control before it."""
    import subprocess

    code = ("import sys, os; from capgate._sys.secret_env import drop_secret_variables; "
            "print(os.getpid(), flush=True); sys.stdin.readline(); drop_secret_variables(['TESTTOKEN']); "
            "print('done', flush=True); sys.stdin.readline()")
    proc = subprocess.Popen([PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TESTTOKEN": SECRET})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        pid = int(proc.stdout.readline())
        before = Path(f"/proc/{pid}/environ").read_bytes()
        assert SECRET.encode() in before  # control: the kernel's copy holds it
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        after = subprocess.run(["cat", f"/proc/{pid}/environ"], capture_output=True).stdout
        assert SECRET.encode() not in after
        status = Path(f"/proc/{pid}/status").read_text()
        assert Path(f"/proc/{pid}/environ").stat().st_uid == 0 or "root" in status or os.getuid() == 0
    finally:
        proc.kill()
        proc.wait()


class _Plain(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).seen.append(str(self.headers) + body.decode("latin-1"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _any

    def log_message(self, *_args: object) -> None:
        pass


def test_placeholder_sent_elsewhere_is_a_logged_denial(ws: Path, home: Path, tls_upstream: Any) -> None:
    ca, server = tls_upstream
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    _Plain.seen = []
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        rules = ws / "agent-permissions.json"  # (request rules make OTHER inspected; a workspace file may add them)
        rules.write_text(json.dumps({"network": {"requestRules": [{"host": f"{OTHER_HOST}:{server.port}",
                                                                  "methods": ["GET"]}]}}))
        lines, done = run_probe(ws, home, server, ca.ca_file, "elsewhere", str(plain.server_address[1]),
                                extra=["--allow-net", f"127.0.0.1:{plain.server_address[1]}"])
    finally:
        plain.shutdown()
    by = {line["path"]: line for line in lines}
    assert by["other"]["status"] == 403 and "net.credential" in by["other"]["body"], lines
    assert by["other-url"]["status"] == 403
    assert by["plain"]["status"] == 403 and by["plain-body"]["status"] in (403, -1)
    assert not any("capgate-placeholder-" in s for s in _Plain.seen[:1])  # (the header case never left)
    denials = [e for e in done.audit if e.get("op") == "net.credential"]
    assert len(denials) >= 3 and all(e["decision"] == "deny" for e in denials)
    assert {e["target"].split(":")[0] for e in denials} == {OTHER_HOST, "127.0.0.1"}
    assert not any(n.lower() == "authorization" and SECRET in v for r in server.requests for n, v in r["headers"]
                   if r["target"].startswith("/echo?"))


def test_placeholder_through_an_uninspected_tunnel_arrives_unreplaced(ws: Path, home: Path,
                                                                      tls_upstream: Any) -> None:
    """Benign control: no rules and no credential for OTHER: a byte tunnel (only the test CA,
    not the run CA, verifies it) and the placeholder is a meaningless token there."""
    ca, server = tls_upstream
    lines, done = run_probe(ws, home, server, ca.ca_file, "tunnel", str(ca.ca_file),
                            extra=["--allow-read", str(ca.ca_file)])
    assert lines and lines[0]["status"] == 200, (lines, done.stderr[-2000:])
    assert "capgate-placeholder-" in lines[0]["body"]
    assert _auth_seen(server) and all(v.startswith("Bearer capgate-placeholder-") for v in _auth_seen(server))


def test_sni_and_host_must_match_the_connect_host(ws: Path, home: Path, tls_upstream: Any) -> None:
    ca, server = tls_upstream
    lines, done = run_probe(ws, home, server, ca.ca_file, "fronting")
    assert lines[0]["body"].startswith("refused"), lines  # SNI other, CONNECT api
    assert lines[1]["body"].startswith("HTTP/1.1 403 Forbidden") and "x-capgate-rule: proxy.host" in lines[1]["body"]
    assert server.requests == []
    assert any(e.get("rule") == "proxy.sni" for e in done.audit)
    assert any(e.get("rule") == "proxy.host" for e in done.audit)


def test_request_rules_hold_and_name_the_rule(ws: Path, home: Path, tls_upstream: Any) -> None:
    ca, server = tls_upstream
    (ws / "agent-permissions.json").write_text(json.dumps({"network": {"requestRules": [
        {"host": f"{TEST_HOST}:{server.port}", "methods": ["GET"], "paths": ["/repos/acme/*"]}]}}))
    lines, done = run_probe(ws, home, server, ca.ca_file, "rules")
    status = [line["status"] for line in lines]
    assert status == [200, 403, 403, 403], lines
    assert "network.requestRules[0]" in lines[1]["body"] and "POST" in lines[1]["body"]
    assert [r["target"] for r in server.requests] == ["/repos/acme/tool"]
    logged = [(e["method"], e["path"], e["decision"]) for e in done.audit if e.get("op") == "net.request"]
    assert ("GET", "/repos/acme/tool", "allow") in logged and ("POST", "/repos/acme/tool", "deny") in logged


@pytest.mark.parametrize("kind", ["wrong_name", "self_signed", "expired"])
def test_upstream_certificate_errors_are_refused(ws: Path, home: Path, tmp_path: Path, kind: str) -> None:
    names = ["wrong.example"] if kind == "wrong_name" else [TEST_HOST]
    with upstream(tmp_path, names, self_signed=kind == "self_signed", expired=kind == "expired") as (ca, server):
        lines, done = run_probe(ws, home, server, ca.ca_file, "urllib")
        assert lines[0]["status"] == 502 and "verification" in lines[0]["body"], lines
        assert server.requests == []
        assert any(e.get("event") == "proxy.upstream_tls" for e in done.audit)


@pytest.mark.parametrize("extra", [[], ["--allow-user-expansion"]])
def test_workspace_file_may_not_add_a_credential(ws: Path, home: Path, extra: list[str]) -> None:
    entry = {"host": "api.example.com", "header": "Authorization", "secret": "env:HOME", "childEnv": "TOKEN"}
    (ws / "agent-permissions.json").write_text(json.dumps({"network": {"credentials": [entry]}}))
    done = capgate_run(["policy", "validate", *extra], home=home, cwd=ws)
    assert done.returncode == 2
    assert "network.credentials[0]" in done.stderr and "never add, change or redirect" in done.stderr
    # control: the same entry in the user-level file is accepted and said
    (ws / "agent-permissions.json").unlink()
    (home / ".config" / "capgate").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "capgate" / "permissions.json").write_text(json.dumps({"network": {"credentials": [entry]}}))
    ok = capgate_run(["policy", "validate"], home=home, cwd=ws)
    assert ok.returncode == 0, ok.stderr
    assert "network.credentials[0]" in ok.stdout


def test_workspace_file_may_not_redirect_a_user_credential(ws: Path, home: Path) -> None:
    (home / ".config" / "capgate").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "capgate" / "permissions.json").write_text(json.dumps({"network": {"credentials": [
        {"host": "api.example.com", "header": "Authorization", "secret": "env:T", "childEnv": "T"}]}}))
    (ws / "agent-permissions.json").write_text(json.dumps({"network": {"credentials": [
        {"host": "evil.example.com", "header": "Authorization", "secret": "env:T", "childEnv": "T"}]}}))
    done = capgate_run(["policy", "validate", "--allow-user-expansion"], home=home, cwd=ws)
    assert done.returncode == 2 and "network.credentials[0]" in done.stderr and "evil.example.com" in done.stderr


def test_without_the_extra_a_credential_is_an_error_naming_it(ws: Path, home: Path, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    (shim / "h11").mkdir(parents=True)
    (shim / "h11" / "__init__.py").write_text("raise ImportError('no h11 here', name='h11')\n")
    done = capgate_run(["run", "--credential", "TESTTOKEN@api.example.com/Authorization", "--", "true"], home=home,
                       cwd=ws, env_extra={"TESTTOKEN": SECRET, "PYTHONPATH": str(shim)})
    assert done.returncode == 2
    assert "capgate[proxy-tls]" in done.stderr and "network.credentials[0]" in done.stderr
    # control: with the extra the same command starts (and the banner says what is inspected)
    ok = capgate_run(["run", "--credential", "TESTTOKEN@api.example.com/Authorization", "--", "true"], home=home,
                     cwd=ws, env_extra={"TESTTOKEN": SECRET})
    assert ok.returncode == 0, ok.stderr
    assert any("TLS inspected" in m and "api.example.com:443" in m for m in launcher_messages(ok.stderr))


def test_end_run_switch_stops_the_run_on_a_misused_placeholder(ws: Path, home: Path, tls_upstream: Any) -> None:
    ca, server = tls_upstream
    (home / ".config" / "capgate").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "capgate" / "permissions.json").write_text(
        json.dumps({"network": {"endRunOnCredentialMisuse": True}}))
    (ws / "agent-permissions.json").write_text(json.dumps({"network": {"requestRules": [
        {"host": f"{OTHER_HOST}:{server.port}"}]}}))
    lines, done = run_probe(ws, home, server, ca.ca_file, "elsewhere", "1")
    assert done.returncode == 128 + 15, done.stderr[-2000:]
    assert any("ending the run (network.endRunOnCredentialMisuse)" in m for m in launcher_messages(done.stderr))
    assert len(lines) <= 1  # (the child was stopped at its first misuse)
    assert any(e.get("op") == "net.credential" for e in done.audit)
    assert done.audit[-1]["event"] == "run.end"


@pytest.fixture(scope="module")
def podman_image() -> Iterator[str]:
    from _container_helpers import build_test_image

    yield from build_test_image("podman")


@pytest.mark.container
def test_the_container_backend_injects_too_and_the_child_holds_only_the_placeholder(
        ws: Path, home: Path, tls_upstream: Any, podman_image: str) -> None:
    """The proxy outside the container inspects the credential's host; the child in the
    container trusts the run CA (the run directory is bound at the same path) and holds the
    placeholder. Without the inspection wired in, the child has no placeholder and the
    upstream sees no credential."""
    ca, server = tls_upstream
    lines, done = run_probe(ws, home, server, ca.ca_file, "urllib", backend="container",
                            extra=["--runtime", "podman", "--image", podman_image], python="python3")
    assert [line["status"] for line in lines] == [200, 200, 200, 200], done.stderr[-3000:]
    assert _auth_seen(server) and all(v == f"Bearer {SECRET}" for v in _auth_seen(server))
    assert all("capgate-placeholder-" in line["body"] and SECRET[:20] not in line["body"] for line in lines[:3])
    assert any(e.get("event") == "proxy.inspection" for e in done.audit)
