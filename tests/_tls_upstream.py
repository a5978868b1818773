"""An HTTPS upstream on 127.0.0.1 with its own test CA (made here with cryptography), for the
credential and inspection tests: it records every request's headers, and its endpoints echo
them back (``/echo``), stream (``/stream``, chunked in small pieces), send a large body
(``/bytes/N``), answer gzip-encoded (``/gzip-echo``) or read a posted body (``/upload``).
It also reports which TLS client connected (cipher list size), so a test can tell an inspected
connection (the proxy's client) from a plain tunnel (the child's own)."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TEST_HOST = "api.capgate.test"
OTHER_HOST = "other.capgate.test"
SECRET = "sk-real-SECRET-value-0123456789abcdef"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    """A CA and server certificates for names (valid, expired, self-signed)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("capgate test CA")).issuer_name(_name("capgate test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / "test-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_files(self, names: list[str], *, expired: bool = False, self_signed: bool = False,
                     tag: str = "server") -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired else (
            now - datetime.timedelta(days=1), now + datetime.timedelta(days=10))
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        issuer_key = key if self_signed else self.key
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0]))
            .issuer_name(_name(names[0]) if self_signed else self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        cert_file, key_file = self.dir / f"{tag}.pem", self.dir / f"{tag}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file


class Upstream:
    """A threaded HTTP/1.1 server over TLS on 127.0.0.1 (keep-alive, chunked when streaming)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.seen_sni: list[str | None] = []
        self.ctx.sni_callback = lambda _s, name, _c: self.seen_sni.append(name)  # type: ignore[assignment,func-returns-value]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.release = threading.Event()  # (/wait sends its second event once this is set)
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(20)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (no Nagle stall between head and body)
            tls = self.ctx.wrap_socket(raw, server_side=True)
            reader = tls.makefile("rb")
            while True:
                line = reader.readline(65536)
                if not line:
                    return
                method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers: list[tuple[str, str]] = []
                while True:
                    h = reader.readline(65536).decode("latin-1").rstrip("\r\n")
                    if not h:
                        break
                    name, _, value = h.partition(":")
                    headers.append((name.strip(), value.strip()))
                low = {n.lower(): v for n, v in headers}
                body = b""
                if "content-length" in low:
                    body = reader.read(int(low["content-length"]))
                elif low.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(reader.readline().split(b";")[0], 16)
                        if size == 0:
                            reader.readline()
                            break
                        body += reader.read(size)
                        reader.readline()
                record = {"method": method, "target": target, "headers": headers, "body": body.decode("latin-1"),
                          "cipher": tls.cipher(), "resumed": tls.session_reused}
                self.requests.append(record)
                if not self._respond(tls, method, target, record):
                    return
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            raw.close()

    def _respond(self, tls: ssl.SSLSocket, method: str, target: str, record: dict[str, Any]) -> bool:
        path = target.split("?")[0]
        if path.startswith("/bytes/"):
            size = int(path.split("/")[2])
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\n\r\n"
            if size <= 65536:  # (a small answer in one write, as servers send them)
                tls.sendall(head.encode() + b"x" * size)
                return True
            tls.sendall(head.encode())
            block = b"x" * 65536
            left = size
            while left:
                n = min(left, len(block))
                tls.sendall(block[:n])
                left -= n
            return True
        if path.startswith("/secret/"):
            return self._secret_body(tls, path, target.partition("?")[2])
        echo = json.dumps({"method": method, "target": target, "headers": record["headers"],
                           "body": record["body"]}).encode()
        if path == "/stream":
            # The echo, cut into 7-byte chunks (a secret in it is split across chunks), slowly.
            tls.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n"
                        b"X-Echo-Auth: " + dict((n.lower(), v) for n, v in record["headers"]).get(
                            "authorization", "").encode() + b"\r\n\r\n")
            for i in range(0, len(echo), 7):
                piece = echo[i:i + 7]
                tls.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            tls.sendall(b"0\r\n\r\n")
            return True
        if path == "/wait":
            tls.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
                        b"a\r\ndata: one\n\r\n")
            second = b"data: two\n" if self.release.wait(10) else b"data: late\n"
            tls.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))
            return True
        if path == "/gzip-echo":
            data = gzip.compress(echo)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(data), data))
            return True
        if path == "/short-echo":  # (a server that quotes the start of a bad header, cut at 20 characters)
            auth = dict((n.lower(), v) for n, v in record["headers"]).get("authorization", "").encode()
            body = b"bad authorization: " + auth[:20]
            tls.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        if path in ("/short-echo-late", "/short-echo-late-ok"):
            # The same quote, its body written 50 ms after the head: the relay reads it on its
            # own, past what h11 held with the head (the relay's large-slice path).
            auth = dict((n.lower(), v) for n, v in record["headers"]).get("authorization", "").encode()
            body = b"bad authorization: " + auth[:20] + b"\n" + b"." * 100
            status = b"200 OK" if path.endswith("-ok") else b"401 Unauthorized"
            tls.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(body)))
            time.sleep(0.05)
            tls.sendall(body)
            return True
        if path == "/name-echo":  # (a server that names a response header after a request header's value)
            auth = dict((n.lower(), v) for n, v in record["headers"]).get("authorization", "").encode()
            tls.sendall(b"HTTP/1.1 200 OK\r\nX-Seen-" + auth + b": 1\r\nContent-Length: 0\r\n\r\n")
            return True
        if path == "/bad-header-echo":  # (a broken server: the credential on a header line of its own)
            auth = dict((n.lower(), v) for n, v in record["headers"]).get("authorization", "").encode()
            tls.sendall(b"HTTP/1.1 200 OK\r\n" + auth + b"\r\nContent-Length: 0\r\n\r\n")
            return True
        if path == "/reason-echo":  # (a server that names the credential it refused in its status line)
            auth = dict((n.lower(), v) for n, v in record["headers"]).get("authorization", "").encode()
            tls.sendall(b"HTTP/1.1 401 Bad credential " + auth + b"\r\nContent-Length: 0\r\n\r\n")
            return True
        if method == "HEAD":
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(echo))
            return True
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(echo), echo))
        return True

    @staticmethod
    def _secret_body(tls: ssl.SSLSocket, path: str, query: str) -> bool:
        """``/secret/SIZE/OFF,OFF...``: SIZE bytes of ``x`` with SECRET at each offset, sent in
        64 KiB writes (``?chunked=N``: in chunks of N bytes; ``?gzip=1``: gzip-encoded;
        ``?pace=1``: 50 ms between writes, so a reader's slices end where the writes do;
        ``?close=1``: ``Connection: close``, then closes; ``?extra=1``: stray bytes after the body)."""
        _, _, size_text, offsets = path.split("/", 3)
        body = bytearray(b"x" * int(size_text))
        for off in (int(o) for o in offsets.split(",") if o):
            body[off:off + len(SECRET)] = SECRET.encode()
        options = dict(item.partition("=")[::2] for item in query.split("&") if item)
        if options.get("gzip"):
            body = bytearray(gzip.compress(bytes(body)))
            head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        elif options.get("chunked"):
            piece = int(options["chunked"])
            framed = bytearray()
            for i in range(0, len(body), piece):
                framed += b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
            body = framed + b"0\r\n\r\n"
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        if options.get("close"):
            head = head[:-2] + b"Connection: close\r\n\r\n"
        if options.get("extra"):
            body += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"  # (an answer to nothing)
        tls.sendall(head)
        for i in range(0, len(body), 65536):
            if i and options.get("pace"):
                time.sleep(0.05)
            tls.sendall(body[i:i + 65536])
        return not options.get("close")


@contextmanager
def upstream(tmp_path: Path, names: list[str] | None = None, **kind: bool) -> Iterator[tuple[TestCA, Upstream]]:
    """A test CA and an HTTPS upstream whose certificate names ``names`` (default TEST_HOST,
    OTHER_HOST); ``expired=True`` / ``self_signed=True`` for the certificate-error cases."""
    d = tmp_path / f"tls-{os.urandom(3).hex()}"
    d.mkdir()
    ca = TestCA(d)
    cert, key = ca.server_files(names or [TEST_HOST, OTHER_HOST], **kind)
    server = Upstream(cert, key)
    try:
        yield ca, server
    finally:
        server.close()


if __name__ == "__main__":  # (benchmarks run the upstream in its own process: no shared GIL)
    import sys

    with upstream(Path(sys.argv[1])) as (test_ca, server):
        print(server.port, test_ca.ca_file, flush=True)
        sys.stdin.read()
