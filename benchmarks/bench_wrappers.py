"""GET of a 1 KiB body from a loopback server: httpx through ``GateTransport`` against httpx's
default transport, in one run, interleaved (target: at most 1.3x). Both keep connections alive;
the gated one also decides every request (URL parse, policy tables, audit counter) and dials
only the checked address. Prints one JSON line.

    .venv/bin/python benchmarks/bench_wrappers.py
"""

from __future__ import annotations

import http.server
import io
import json
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from _common import interleaved, report

import capgate
from capgate.audit import AuditLog
from capgate.wrappers.httpx import GateTransport

N = 300
BODY = b"x" * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else a 40 ms delayed-ACK stall per response hides both clients

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/1k"
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        policy_file = Path(tmp) / "p.json"
        policy_file.write_text(json.dumps({"version": 1, "network": {
            "enabled": True, "allowedAddresses": [f"127.0.0.1:{port}"]}}))
        policy = capgate.load_policy(policy_file, workspace=ws, allow_user_expansion=True)
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO(), level="warning"))
        plain = httpx.Client(trust_env=False)
        gated = httpx.Client(transport=GateTransport())

        def default() -> object:
            return plain.get(url).content

        def gate_transport() -> object:
            return gated.get(url).content

        with gate:
            assert gate_transport() == BODY == default()
            results = interleaved({"default": default, "gate": gate_transport}, n=N)
        plain.close()
        gated.close()
    server.shutdown()
    report(
        "wrappers_httpx_get_1k",
        n=N,
        gate_median_us=results["gate"]["median_us"],
        gate_p95_us=results["gate"]["p95_us"],
        default_median_us=results["default"]["median_us"],
        default_p95_us=results["default"]["p95_us"],
        ratio=round(results["gate"]["median_us"] / results["default"]["median_us"], 2),
    )


if __name__ == "__main__":
    main()
