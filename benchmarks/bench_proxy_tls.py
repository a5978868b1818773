"""The inspecting egress proxy (issue 19) against direct HTTPS, same run, on loopback.

Three numbers, each a ratio or a difference measured in one run:

- ``keepalive_1k_ratio``: a 1 KiB GET over a kept-alive connection through the inspecting
  proxy (credential injected, response scrubbed) / the same GET straight to the upstream.
  Target: at most 1.5.
- ``download_100m_ratio``: throughput of a 100 MiB download through the inspecting proxy /
  direct. Target: at least 0.5.
- ``first_request_extra_ms``: the first request of a run through inspection (making the run
  CA, minting the leaf, both TLS handshakes) minus the first request through a plain CONNECT
  tunnel. Target: at most +30 ms.

With curl, also where the inspected time goes: ``proxy_cpu_us_per_request`` (the proxy's CPU
per kept-alive request, median round; compare ``keepalive_us``) and ``proxy_cpu_ms_per_100m``.

The upstream is the tests' HTTPS server (tests/_tls_upstream.py, a Python server in its own
process: it bounds both sides alike). The client is curl where installed (its own process, as an
agent's would be; ``client`` in the output), else http.client in this process, which then shares
the proxy's interpreter lock. Prints one JSON line.

    .venv/bin/python benchmarks/bench_proxy_tls.py
"""

from __future__ import annotations

import http.client
import io
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import report
from _tls_upstream import SECRET, TEST_HOST

import capgate
from capgate.audit import AuditLog
from capgate.credentials import resolve_credentials
from capgate.inspection.relay import Inspection
from capgate.policy.sources import Grants
from capgate.proxy import EgressProxy

BIG = 100 * 1024 * 1024
KEEPALIVE_N = 200
ROUNDS = 5
CURL = shutil.which("curl")
KEEPALIVE_US: tuple[float, float] | None = None  # (direct, inspected) per request, curl's whole run
PROXY_CPU: list[float] = []  # (this process's CPU seconds — the proxy's — of each inspected curl run)
CPU_REPORT: dict[str, int] = {}  # (the proxy's CPU: where an inspected request's time goes)


class _Server:
    """The upstream, run as ``python tests/_tls_upstream.py DIR`` (it prints its port and CA)."""

    def __init__(self, directory: Path) -> None:
        script = Path(__file__).resolve().parent.parent / "tests" / "_tls_upstream.py"
        self.proc = subprocess.Popen([sys.executable, str(script), str(directory)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        port, ca = self.proc.stdout.readline().split()
        self.port, self.ca_file = int(port), Path(ca)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def _policy(ws: Path, port: int) -> capgate.Policy:
    grants = Grants(credential=(f"TOKEN@{TEST_HOST}:{port}/Authorization",), net=(f"127.0.0.1:{port}",),
                    resolve=(f"{TEST_HOST}:{port}:127.0.0.1",))
    return capgate.load_policy(None, workspace=ws, grants=grants)


def _inspection(policy: capgate.Policy, ca_file: Path) -> Inspection:
    return Inspection(resolve_credentials(policy, {"TOKEN": SECRET}), policy.network.request_rules, (str(ca_file),))


def _direct(server: _Server, ca_file: Path) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(ca_file))

    class _Pinned(http.client.HTTPSConnection):
        def connect(self) -> None:  # (the name, dialed at 127.0.0.1: what --resolve does for the proxy)
            sock = socket.create_connection(("127.0.0.1", server.port))
            self.sock = ctx.wrap_socket(sock, server_hostname=TEST_HOST)

    return _Pinned(TEST_HOST, server.port, context=ctx)


def _proxied(proxy: EgressProxy, inspection: Inspection, port: int) -> http.client.HTTPSConnection:
    assert isinstance(proxy.address, tuple)
    ctx = ssl.create_default_context(cadata=inspection.ca.pem.decode())
    conn = http.client.HTTPSConnection(*proxy.address, context=ctx)
    conn.set_tunnel(TEST_HOST, port)
    return conn


def _get(conn: http.client.HTTPSConnection, path: str, auth: str) -> int:
    conn.request("GET", path, headers={"Authorization": auth})
    resp = conn.getresponse()
    total = 0
    while chunk := resp.read(1 << 20):
        total += len(chunk)
    return total


def _keepalive(direct: http.client.HTTPSConnection, proxied: http.client.HTTPSConnection, placeholder: str) -> float:
    for conn, auth in ((direct, f"Bearer {SECRET}"), (proxied, f"Bearer {placeholder}")):
        for _ in range(20):
            _get(conn, "/bytes/1024", auth)
    ratios = []
    for _ in range(ROUNDS):
        times = []
        for conn, auth in ((direct, f"Bearer {SECRET}"), (proxied, f"Bearer {placeholder}")):
            start = time.perf_counter()
            for _ in range(KEEPALIVE_N):
                _get(conn, "/bytes/1024", auth)
            times.append(time.perf_counter() - start)
        ratios.append(times[1] / times[0])
    return statistics.median(ratios)


def _download(direct: http.client.HTTPSConnection, proxied: http.client.HTTPSConnection,
              placeholder: str) -> tuple[float, float, float]:
    ratios, rates = [], []
    for _ in range(3):
        pair = []
        for conn, auth in ((direct, f"Bearer {SECRET}"), (proxied, f"Bearer {placeholder}")):
            start = time.perf_counter()
            assert _get(conn, f"/bytes/{BIG}", auth) == BIG
            pair.append(BIG / (time.perf_counter() - start) / 1e6)
        rates.append(pair)
        ratios.append(pair[1] / pair[0])
    return statistics.median(ratios), statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def _curl(args: list[str], urls: list[str]) -> float:
    """Seconds for one curl process fetching ``urls`` (kept alive) to /dev/null."""
    cmd = [CURL, "-sS", "--fail", *args]
    for url in urls:
        cmd += ["-o", "/dev/null", url]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def _curl_pair(server: _Server, proxy: EgressProxy, inspection: Inspection, bundle: Path, placeholder: str,
               path: str, count: int) -> tuple[float, float]:
    assert isinstance(proxy.address, tuple)
    url = f"https://{TEST_HOST}:{server.port}{path}"
    direct = ["--resolve", f"{TEST_HOST}:{server.port}:127.0.0.1", "--cacert", str(server.ca_file),
              "-H", f"Authorization: Bearer {SECRET}", "--noproxy", "*"]
    proxied = ["--proxy", f"http://{proxy.address[0]}:{proxy.address[1]}", "--cacert", str(bundle),
               "-H", f"Authorization: Bearer {placeholder}"]
    direct_s = _curl(direct, [url] * count)
    cpu = time.process_time()  # (the proxy runs in this process; the client and the upstream do not)
    proxied_s = _curl(proxied, [url] * count)
    PROXY_CPU.append(time.process_time() - cpu)
    return direct_s, proxied_s


def _with_curl(server: _Server, proxy: EgressProxy, inspection: Inspection, tmp: Path,
               placeholder: str) -> tuple[float, float, float, float]:
    bundle = tmp / "bundle.pem"
    bundle.write_bytes(inspection.ca.pem)
    _curl_pair(server, proxy, inspection, bundle, placeholder, "/bytes/1024", 20)  # warm-up
    ratios, per_request = [], []
    PROXY_CPU.clear()
    for _ in range(ROUNDS):
        direct, proxied = _curl_pair(server, proxy, inspection, bundle, placeholder, "/bytes/1024", KEEPALIVE_N)
        ratios.append(proxied / direct)
        per_request.append((direct / KEEPALIVE_N * 1e6, proxied / KEEPALIVE_N * 1e6))
    global KEEPALIVE_US
    KEEPALIVE_US = (statistics.median(p[0] for p in per_request), statistics.median(p[1] for p in per_request))
    CPU_REPORT["proxy_cpu_us_per_request"] = round(statistics.median(PROXY_CPU) / KEEPALIVE_N * 1e6)
    PROXY_CPU.clear()
    rates = []
    for _ in range(3):
        direct, proxied = _curl_pair(server, proxy, inspection, bundle, placeholder, f"/bytes/{BIG}", 1)
        rates.append((BIG / direct / 1e6, BIG / proxied / 1e6))
    dl = statistics.median(r[1] / r[0] for r in rates)
    CPU_REPORT["proxy_cpu_ms_per_100m"] = round(statistics.median(PROXY_CPU) * 1e3)
    return statistics.median(ratios), dl, statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def _first_request(ws: Path, server: _Server, ca_file: Path) -> tuple[float, float]:
    """Median ms of (inspected first request incl. a new run CA) and (plain tunnel first request)."""
    policy = _policy(ws, server.port)
    inspected, tunnel = [], []
    for _ in range(9):
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO()))
        start = time.perf_counter()
        inspection = _inspection(policy, ca_file)  # (the run CA is made at the run's start)
        with EgressProxy(gate, inspection=inspection) as proxy:
            conn = _proxied(proxy, inspection, server.port)
            _get(conn, "/bytes/1024", f"Bearer {inspection.credentials.items[0].placeholder.decode()}")
            inspected.append((time.perf_counter() - start) * 1e3)
            conn.close()
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO()))
        start = time.perf_counter()
        with EgressProxy(gate) as proxy:  # (no inspection: CONNECT 127.0.0.1 is a byte tunnel)
            assert isinstance(proxy.address, tuple)
            ctx = ssl.create_default_context(cafile=str(ca_file))
            sock = socket.create_connection(proxy.address)
            sock.sendall(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.recv(4096)
            tls = ctx.wrap_socket(sock, server_hostname=TEST_HOST)
            tls.sendall(f"GET /bytes/1024 HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n".encode())
            got = b""
            while len(got) < 1024 or b"\r\n\r\n" not in got:
                got += tls.recv(65536)
            tunnel.append((time.perf_counter() - start) * 1e3)
            tls.close()
    return statistics.median(inspected), statistics.median(tunnel)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        server = _Server(Path(tmp))
        try:
            policy = _policy(ws, server.port)
            inspection = _inspection(policy, server.ca_file)
            placeholder = inspection.credentials.items[0].placeholder.decode()
            gate = capgate.Gate(policy, audit=AuditLog(io.StringIO(), log_allowed=False))
            with EgressProxy(gate, inspection=inspection) as proxy:
                if CURL is not None:
                    keepalive, download, direct_mbs, proxy_mbs = _with_curl(server, proxy, inspection, Path(tmp),
                                                                             placeholder)
                else:
                    direct, proxied = _direct(server, server.ca_file), _proxied(proxy, inspection, server.port)
                    keepalive = _keepalive(direct, proxied, placeholder)
                    download, direct_mbs, proxy_mbs = _download(direct, proxied, placeholder)
            first_inspected, first_tunnel = _first_request(ws, server, server.ca_file)
        finally:
            server.close()
    report("proxy_tls", client="curl" if CURL else "http.client", keepalive_1k_ratio=round(keepalive, 2),
           keepalive_target_max=1.5,
           keepalive_us=None if KEEPALIVE_US is None else [round(v) for v in KEEPALIVE_US],
           download_100m_ratio=round(download, 2), download_target_min=0.5, direct_mb_s=round(direct_mbs, 1),
           inspected_mb_s=round(proxy_mbs, 1), first_request_inspected_ms=round(first_inspected, 1),
           first_request_tunnel_ms=round(first_tunnel, 1),
           first_request_extra_ms=round(first_inspected - first_tunnel, 1), first_request_target_max_ms=30,
           **CPU_REPORT)


if __name__ == "__main__":
    main()
