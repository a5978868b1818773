"""Egress proxy throughput on loopback: a 50 MB HTTP body fetched directly and through the
proxy (CONNECT tunnel, as HTTPS clients use it, and absolute-URI forwarding), same run,
interleaved. Target: the proxy at no less than half the direct rate. Prints one JSON line.

    .venv/bin/python benchmarks/bench_proxy.py
"""

from __future__ import annotations

import io
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import report

import capgate
from capgate.audit import AuditLog
from capgate.proxy import EgressProxy

SIZE = 50 * 1024 * 1024
ROUNDS = 5
BODY = b"x" * SIZE


def serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def answer(conn: socket.socket) -> None:
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % SIZE)
        conn.sendall(memoryview(BODY))


def read_all(sock: socket.socket) -> int:
    buf = bytearray(1024 * 1024)
    total = 0
    while n := sock.recv_into(buf):
        total += n
    return total


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    return data


def direct(port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_all(s)
    assert got > SIZE
    return time.perf_counter() - start


def tunnel(proxy: tuple[str, int], port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection(proxy) as s:
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % port)
        assert read_head(s).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_all(s)
    assert got > SIZE
    return time.perf_counter() - start


def forward(proxy: tuple[str, int], port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection(proxy) as s:
        s.sendall(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % port)
        got = read_all(s)
    assert got > SIZE
    return time.perf_counter() - start


def main() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        policy_file = Path(tmp) / "p.json"
        policy_file.write_text(json.dumps({"version": 1, "network": {
            "enabled": True, "allowedAddresses": [f"127.0.0.1:{port}"]}}))
        policy = capgate.load_policy(policy_file, workspace=ws, allow_user_expansion=True)
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO()))
        with EgressProxy(gate) as proxy:
            assert isinstance(proxy.address, tuple)
            address = proxy.address
            for fn in (lambda: direct(port), lambda: tunnel(address, port), lambda: forward(address, port)):
                fn()  # warm-up
            times: dict[str, list[float]] = {"direct": [], "connect": [], "forward": []}
            for _ in range(ROUNDS):
                times["direct"].append(direct(port))
                times["connect"].append(tunnel(address, port))
                times["forward"].append(forward(address, port))
    listener.close()
    mb = SIZE / 1e6
    rate = {name: mb / statistics.median(values) for name, values in times.items()}
    report(
        "proxy_throughput",
        n=ROUNDS,
        body_mb=round(mb, 1),
        direct_mb_s=round(rate["direct"]),
        connect_mb_s=round(rate["connect"]),
        forward_mb_s=round(rate["forward"]),
        median_us=round(statistics.median(times["connect"]) * 1e6),
        p95_us=round(max(times["connect"]) * 1e6),
        ratio=round(rate["connect"] / rate["direct"], 2),
        forward_ratio=round(rate["forward"] / rate["direct"], 2),
        target_ratio=0.5,
    )


if __name__ == "__main__":
    main()
