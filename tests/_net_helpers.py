"""Shared pieces for the network tests: policies with a network section, loopback servers
that record every connection, and the shared hostile-input corpus."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import capgate
from capgate.audit import AuditLog
from capgate.resolver import StaticResolver
from capgate.testing import corpus

NET_CORPUS_FILE = Path(capgate.__file__).parent / "testing" / "corpus" / "net.json"


def net_corpus() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(NET_CORPUS_FILE.read_text(encoding="utf-8"))
    assert data["inputs"] == corpus("net")  # the harness sees the same list
    return data


def make_net_gate(
    tmp_path: Path,
    network: dict[str, Any],
    *,
    resolver: Callable[[str, int], list[str]] | None = None,
    audit: io.StringIO | None = None,
    name: str = "net-policy.json",
) -> capgate.Gate:
    """A gate whose policy file holds ``network`` (loaded for real, expansion allowed)."""
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "network": network}))
    policy = capgate.load_policy(path, workspace=ws, allow_user_expansion=True)
    return capgate.Gate(policy, audit=AuditLog(audit if audit is not None else io.StringIO()), resolver=resolver)


def corpus_gate(tmp_path: Path, audit: io.StringIO | None = None) -> capgate.Gate:
    data = net_corpus()
    return make_net_gate(tmp_path, data["policy"]["network"], resolver=StaticResolver(data["resolver"]), audit=audit)


def audit_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


class RecordingTCPServer:
    """A bare TCP listener on 127.0.0.1 that counts connections (and never answers)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                self.received += conn.recv(65536)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class LoopbackHTTPServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with per-path handlers; it records each
    request (method, path, headers, body) and each accepted connection."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                outer.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                route = outer.routes.get(self.path.split("?")[0])
                if route is not None:
                    route(self)
                    return
                payload = f"hello {self.command} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                outer.connections += 1
                super().process_request(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _read_chunked(rfile: Any) -> bytes:
    out = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return out
        out += rfile.read(size)
        rfile.readline()


def redirect_to(location: str, status: int = 302) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route
