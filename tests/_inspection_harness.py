"""An inspecting egress proxy in process, and a client that talks through an inspected
tunnel to it (CONNECT, then TLS trusting the run CA): shared by the review tests of the
relay (real loopback TLS, a real upstream from ``_tls_upstream``)."""

from __future__ import annotations

import ssl

from _tls_upstream import Upstream

from capgate.inspection.relay import Inspection
from capgate.proxy import EgressProxy


class InspectedRun:
    def __init__(self, proxy: EgressProxy, inspection: Inspection, server: Upstream) -> None:
        self.proxy, self.inspection, self.server = proxy, inspection, server
        self.placeholder = inspection.credentials.items[0].placeholder.decode()

    def raw(self, host: str, request: bytes) -> bytes:
        """``request`` sent as is through an inspected tunnel to ``host``; the whole answer."""
        import socket

        assert isinstance(self.proxy.address, tuple)
        sock = socket.create_connection(self.proxy.address, timeout=10)
        try:
            sock.sendall(f"CONNECT {host}:{self.server.port} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            ctx = ssl.create_default_context(cadata=self.inspection.ca.pem.decode())
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                tls.sendall(request)
                out = b""
                while True:
                    try:
                        data = tls.recv(65536)
                    except (ssl.SSLError, OSError):
                        break
                    if not data:
                        break
                    out += data
                return out
        finally:
            sock.close()

    def get(self, host: str, target: str, extra: str = "") -> bytes:
        port = self.server.port
        return self.raw(host, f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n"
                        .encode())
