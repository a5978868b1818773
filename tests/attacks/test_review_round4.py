"""Adversarial review, round 4 (embedded API: fs, egress proxy).

Every test asserts the SECURE behaviour: a failing test marks a hole that exists today.
Real temp dirs and real loopback sockets only; every socket has a timeout and is closed.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from capgate import fs
from capgate.proxy import EgressProxy
from tests.conftest import SECRET


# =====================================================================================
# 1. pathspec translates '**' in the middle of a pattern to '.+' / '.*' without DOTALL:
#    a directory name holding a newline makes the deny pattern miss.
# =====================================================================================
def test_double_star_deny_read_holds_for_names_with_newline(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    for sub in ("plain", "a\nb"):
        d = workspace / "data" / sub
        d.mkdir(parents=True)
        (d / "secret.txt").write_text(SECRET)
    g = make_gate({"filesystem": {"denyRead": ["data/**/secret.txt"]}}, expand=False)
    with g:
        with pytest.raises(PermissionError):
            fs.read_text("data/plain/secret.txt")   # the pattern works for ordinary names
        with pytest.raises(PermissionError):
            fs.read_text("data/a\nb/secret.txt")    # ...and must for a name with a newline


def test_double_star_deny_write_holds_for_names_with_newline(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / "src" / "x\ny").mkdir(parents=True)
    g = make_gate({"filesystem": {"write": ["."], "denyWrite": ["src/**/generated.py"]}})
    with g:
        with pytest.raises(PermissionError):
            fs.write_text("src/generated.py", "x")
        try:
            fs.write_text("src/x\ny/generated.py", "import os  # planted\n")
        except PermissionError:
            pass
    assert not (workspace / "src" / "x\ny" / "generated.py").exists(), "denyWrite 'src/**/generated.py' bypassed"


# =====================================================================================
# 2. An open fs.open(..., "w") file is a visible sibling temp file (listdir shows it).
#    fs.rename moves it to a real name before close(): the bytes were never charged to
#    outputQuotaMb (charging happens only in close()), so N open writers commit N x cap.
# =====================================================================================
def test_output_quota_holds_when_temp_files_are_renamed_out(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"limits": {"maxFileSizeMb": 1, "outputQuotaMb": 1}}, expand=False)
    chunk = b"x" * (1024 * 1024 - 16)  # under the per-file cap each
    with g:
        handles = []
        for i in range(3):
            fh = fs.open(f"output/f{i}", "wb")
            fh.write(chunk)
            fh.flush()
            handles.append(fh)
        temps = [n for n in fs.listdir("output") if n.endswith(".tmp")]
        for i, name in enumerate(temps):
            try:
                fs.rename(f"output/{name}", f"output/kept{i}")
            except PermissionError:
                pass
        for fh in handles:
            try:
                fh.close()
            except OSError:
                pass
    committed = sum(p.stat().st_size for p in (workspace / "output").iterdir() if p.is_file())
    assert committed <= 1024 * 1024, f"{committed} bytes committed under a 1 MB outputQuotaMb"


# =====================================================================================
# 3. Egress proxy: the request head is parsed strictly (CRLF only), but chunk-size lines
#    and trailers of a chunked body are forwarded verbatim. A chunk extension holding bare
#    LFs carries a second request (other Host) to an upstream that accepts bare LF.
# =====================================================================================
def _capture_server() -> tuple[socket.socket, list[bytes], threading.Thread]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(5)
    got: list[bytes] = []

    def run() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.settimeout(2)
        data = b""
        try:
            while b"\r\n\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        got.append(data)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv, got, t


def test_proxy_chunk_framing_cannot_carry_bare_lf_request(make_gate) -> None:  # type: ignore[no-untyped-def]
    srv, got, t = _capture_server()
    port = srv.getsockname()[1]
    g = make_gate({"network": {"enabled": True, "allowedAddresses": [f"127.0.0.1:{port}"]}})
    smuggled = b"GET /admin HTTP/1.1\nHost: internal.example\n\n"
    try:
        with EgressProxy(g, header_timeout=3.0, idle_timeout=3.0, connect_timeout=3.0) as proxy:
            assert isinstance(proxy.address, tuple)
            c = socket.create_connection(proxy.address, timeout=5)
            try:
                c.sendall(
                    f"POST http://127.0.0.1:{port}/ok HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n".encode()
                    + b"0;x\n\n" + smuggled + b"\r\n"   # one 'chunk line' to the proxy
                    + b"\r\n"                           # end of trailers
                )
                try:
                    while c.recv(4096):
                        pass
                except OSError:
                    pass
            finally:
                c.close()
            t.join(6)
    finally:
        srv.close()
    upstream = b"".join(got)
    assert b"Host: internal.example" not in upstream, (
        "proxy forwarded a bare-LF chunk line carrying a second request: " + repr(upstream[-200:])
    )
