"""The egress proxy: the only way out for sandboxed children, with the gate's network rules.

``EgressProxy(gate)`` is a small HTTP proxy — ``CONNECT host:port`` for HTTPS (a byte tunnel)
and absolute-URI forwarding (``GET http://host/path``) for plain HTTP — that asks the gate's
``NetworkRules`` about every destination, logs each decision to the gate's audit log (one
``net.connect`` line, ``via="proxy"``), answers ``403`` with the reason and rule on a denial, and
otherwise dials exactly the checked address (pinned, no second lookup). It listens on a loopback
TCP port (a non-loopback bind is refused unless ``listen_any``: the ``capgate proxy`` command in
its own pod) or on a Unix socket (mode 0600). With ``upstream=(host, port)`` it decides each
destination by name and sends it on as a ``CONNECT`` through that upstream egress proxy (the
cluster's, which applies the same policy again) instead of dialing::

    with EgressProxy(gate) as proxy:          # 127.0.0.1, a free port
        env["HTTPS_PROXY"] = proxy.url        # http://127.0.0.1:PORT

What it enforces besides the rules:

- **Bounded.** At most ``max_connections`` clients at once (others get ``503`` at once); the
  request head must arrive within ``header_timeout`` seconds in total (no slow-loris) and within
  ``max_header_bytes``; a tunnel with no traffic in either direction for ``idle_timeout``
  seconds is closed. Every client has its own thread, so a slow or malformed client cannot stall
  the others.
- **Strict parsing.** One request line, ``CRLF`` only, no obsolete line folding, no
  ``Content-Length`` together with ``Transfer-Encoding``, conflicting lengths refused, ``Host``
  rewritten to the checked host and hop-by-hop headers (``Proxy-*``, ``Connection``-listed) not
  forwarded, so a request cannot be smuggled to another virtual host. Plain HTTP is forwarded
  one request per connection (``Connection: close`` upstream).

- **Inspection where the policy needs it.** With an ``inspection``
  (``capgate.inspection.relay.Inspection``), a CONNECT to a host with a credential or request
  rules is answered with TLS from the per-run CA and relayed request by request (SNI and
  ``Host`` checked, rules applied, the placeholder swapped for the secret); see
  ``capgate.inspection``. A credential placeholder in a plain-HTTP request (target, header or
  body) is never replaced: a ``net.credential`` denial.

Not enforced: what travels inside any other CONNECT tunnel (TLS: the SNI and Host inside it are
not inspected, so domain fronting on a shared front end is outside a connect-level gate, and a
placeholder in it is only a meaningless token), and who the local client is — any local
process that can reach the loopback port gets the same rules.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import queue
import re
import socket
import stat
import threading
import time
from typing import Any

from capgate import ops
from capgate.decision import Decision
from capgate.errors import PermissionDenied
from capgate.gate import Gate
from capgate.net import _tunnel, dial
from capgate.netrules import Endpoint, NetworkRules, Target, TargetError, parse_target

__all__ = ["EgressProxy"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOP_BY_HOP = {
    "connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "expect", "content-length",
}
_RELAY_CHUNK = 256 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS_TEXT = {
    400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def _header_safe(text: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)[:300]


class EgressProxy:
    """An HTTP egress proxy applying ``gate``'s network rules.

    ``host``/``port``: loopback TCP address to listen on (port 0 picks a free one), or
    ``unix_path`` to listen on a Unix socket instead. Limits: ``max_connections``,
    ``header_timeout``, ``idle_timeout``, ``connect_timeout`` (seconds), ``max_header_bytes``.
    """

    def __init__(
        self,
        gate: Gate,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unix_path: str | None = None,
        max_connections: int = 64,
        header_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_header_bytes: int = 32 * 1024,
        listen_any: bool = False,
        upstream: tuple[str, int] | None = None,
        inspection: Any = None,
    ) -> None:
        self.gate = gate
        self.inspection = inspection
        self.unix_path = unix_path
        if unix_path is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"the egress proxy listens on an IP address, not {host!r}") from None
            if not address.is_loopback and not listen_any:
                raise ValueError(f"the egress proxy listens on loopback only, not {host!r} (listen_any=True is "
                                 "for a proxy in its own pod: `capgate proxy --listen`)")
        self.upstream = upstream
        # Chained to an upstream egress proxy (a pod whose only way out is the cluster's capgate
        # proxy): decide on the name, as a soft-sandboxed child does, and let the upstream —
        # the same policy — resolve and judge the addresses. No lookup happens here, so the pod
        # needs no DNS when the upstream is an IP address.
        self._name_rules: NetworkRules | None = (
            NetworkRules(gate.policy, resolve=False) if upstream is not None else None)
        self._bind_host = host
        self._bind_port = port
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self._slots = threading.BoundedSemaphore(max_connections)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.address: tuple[str, int] | str | None = None
        # Over the cap, clients get a 503 from one refuser thread (bounded queue): it drains
        # what they sent for a moment so the close is not a reset that eats the answer.
        self._refusals: queue.Queue[socket.socket] = queue.Queue(maxsize=64)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` for HTTP(S)_PROXY (``unix:PATH`` for a Unix socket)."""
        if self.address is None:
            raise RuntimeError("the proxy is not started")
        if isinstance(self.address, str):
            return "unix:" + self.address
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> EgressProxy:
        """Bind, listen and serve in a background (daemon) thread. Returns ``self``."""
        if self._listener is not None:
            raise RuntimeError("the proxy is already started")
        if self.unix_path is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                if os.path.lexists(self.unix_path):
                    if not stat.S_ISSOCK(os.lstat(self.unix_path).st_mode):
                        raise FileExistsError(f"{self.unix_path} exists and is not a socket")
                    os.unlink(self.unix_path)
                old = os.umask(0o177)
                try:
                    listener.bind(self.unix_path)
                finally:
                    os.umask(old)
            except BaseException:
                listener.close()
                raise
            self.address = self.unix_path
        else:
            family = socket.AF_INET6 if ":" in self._bind_host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((self._bind_host, self._bind_port))
            except BaseException:
                listener.close()
                raise
            bound = listener.getsockname()
            self.address = (str(bound[0]), int(bound[1]))
        listener.listen(128)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="capgate-proxy", daemon=True)
        self._thread.start()
        threading.Thread(target=self._refuser, name="capgate-proxy-refuser", daemon=True).start()
        self.gate.audit.event("proxy.listening", address=self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, close every open connection, wait for the accept thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._open_lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()
        if self.unix_path is not None and self.address is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)

    def __enter__(self) -> EgressProxy:
        return self.start() if self._listener is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- accept loop --------------------------------------------------------------------
    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, _peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # EMFILE and friends: back off instead of spinning
                continue
            if not self._slots.acquire(blocking=False):
                self.gate.audit.warning("proxy.busy", limit=self.max_connections)
                try:
                    self._refusals.put_nowait(client)
                except queue.Full:
                    _close(client)
                continue
            self._track(client)
            worker = threading.Thread(target=self._handle, args=(client,), name="capgate-proxy-conn", daemon=True)
            try:
                worker.start()
            except RuntimeError:
                self._untrack(client)
                _close(client)
                self._slots.release()

    def _refuser(self) -> None:
        while not self._stopping.is_set():
            try:
                client = self._refusals.get(timeout=0.2)
            except queue.Empty:
                continue
            _refuse(client, 503, "too many connections to the egress proxy")

    def _track(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)

    # -- one client ---------------------------------------------------------------------
    def _handle(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            try:
                head, rest = self._read_head(client)
                method, target_text, headers = _parse_head(head)
                upstream = self._serve_request(client, method, target_text, headers, rest)
            except _BadRequest as exc:
                if exc.status != 403:
                    decision = Decision.deny(exc.reason, "proxy.request", "<request>")
                    self.gate.record(ops.NET_CONNECT, "<malformed proxy request>", decision, via="proxy")
                _send_error(client, exc.status, exc.reason)
            except OSError:
                pass
        finally:
            if upstream is not None:
                self._untrack(upstream)
                _close(upstream)
            self._untrack(client)
            _close(client)
            self._slots.release()

    def _read_head(self, client: socket.socket) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + self.header_timeout
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                if end + 4 > self.max_header_bytes:
                    raise _BadRequest(431, "request head too large")
                return bytes(buf[:end]), bytes(buf[end + 4 :])
            if len(buf) > self.max_header_bytes:
                raise _BadRequest(431, "request head too large")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _BadRequest(408, "request head not received in time")
            client.settimeout(remaining)
            try:
                chunk = client.recv(8192)
            except TimeoutError:
                raise _BadRequest(408, "request head not received in time") from None
            if not chunk:
                raise OSError("client closed before sending a request")
            buf += chunk

    def _decide(self, target: Target, method: str) -> Endpoint:
        try:
            rules: NetworkRules = self._name_rules or self.gate.network_rules
            decision, endpoint = rules.decide_parsed(target)
        except Exception as exc:  # fail closed
            decision, endpoint = Decision.deny(f"error while deciding: {exc}", "network.error", target.host), None
        shown = decision.target or target.host
        if decision.allowed and endpoint is None:
            decision = Decision.deny("no checked endpoint", "network.error", shown)
        self.gate.record(ops.NET_CONNECT, shown, decision, via="proxy", method=method)
        if not decision.allowed or endpoint is None:
            raise _Denied(shown, decision)
        return endpoint

    def _serve_request(
        self, client: socket.socket, method: str, target_text: str, headers: list[tuple[str, str]], rest: bytes
    ) -> socket.socket | None:
        if method == "CONNECT":
            try:
                target = parse_target(target_text)
            except TargetError as exc:
                raise _BadRequest(400, f"bad CONNECT target: {exc}") from None
            if target.scheme is not None or ":" not in target_text:
                raise _BadRequest(400, "CONNECT needs host:port")
        else:
            if not target_text.lower().startswith("http://"):
                if target_text.lower().startswith("https://"):
                    raise _BadRequest(400, "use CONNECT for https")
                raise _BadRequest(400, "this is a proxy: send an absolute http:// URI or CONNECT")
            try:
                target = parse_target(target_text)
            except TargetError as exc:
                raise _BadRequest(400, f"bad request target: {exc}") from None
        try:
            endpoint = self._decide(target, method)
        except _Denied as denied:
            _send_denied(client, denied)
            return None
        if method == "CONNECT" and self.inspection is not None and self.inspection.inspects(endpoint.host,
                                                                                             endpoint.port):
            if rest:
                raise _BadRequest(400, "data sent before the CONNECT was answered")
            self._inspect(client, endpoint)
            return None
        if method != "CONNECT" and self.inspection is not None:
            self._check_placeholders(target_text, headers, endpoint)
        try:
            if self.upstream is not None:
                upstream = _tunnel(self.upstream, endpoint, self.connect_timeout)
            else:
                upstream = dial(endpoint, self.connect_timeout)
        except PermissionDenied as exc:
            self.gate.audit.warning("proxy.upstream_refused", target=str(endpoint), error=str(exc)[:200])
            raise _BadRequest(502, f"the upstream egress proxy refused {endpoint}: {exc.reason}") from None
        except OSError as exc:
            self.gate.audit.warning("proxy.upstream_error", target=str(endpoint), error=str(exc)[:200])
            raise _BadRequest(502, f"cannot reach {endpoint}: {exc.strerror or exc}") from None
        self._track(upstream)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if method == "CONNECT":
            with contextlib.suppress(OSError):  # (no Nagle stall on small TLS records; not on Unix sockets)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            self._relay(client, upstream)
        else:
            self._forward_http(client, upstream, method, target, endpoint, headers, rest)
        return upstream

    # -- plain HTTP ---------------------------------------------------------------------
    def _forward_http(
        self,
        client: socket.socket,
        upstream: socket.socket,
        method: str,
        target: Target,
        endpoint: Endpoint,
        headers: list[tuple[str, str]],
        rest: bytes,
    ) -> None:
        names = {name.lower() for name, _ in headers}
        lengths = {value.strip() for name, value in headers if name.lower() == "content-length"}
        encodings = [value.strip().lower() for name, value in headers if name.lower() == "transfer-encoding"]
        if encodings and lengths:
            raise _BadRequest(400, "both Content-Length and Transfer-Encoding")
        if len(lengths) > 1:
            raise _BadRequest(400, "conflicting Content-Length headers")
        if encodings and encodings != ["chunked"]:
            raise _BadRequest(400, "only 'Transfer-Encoding: chunked' is supported")
        length = 0
        if lengths:
            text = next(iter(lengths))
            if not text.isdigit() or len(text) > 18:
                raise _BadRequest(400, "bad Content-Length")
            length = int(text)
        listed = set()
        for name, value in headers:
            if name.lower() == "connection":
                listed |= {item.strip().lower() for item in value.split(",")}
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        authority = host if endpoint.port == 80 else f"{host}:{endpoint.port}"
        lines = [f"{method} {target.path} HTTP/1.1", f"Host: {authority}"]
        for name, value in headers:
            low = name.lower()
            if low in _HOP_BY_HOP or low in listed:
                continue
            lines.append(f"{name}: {value}")
        if lengths:
            lines.append(f"Content-Length: {length}")
        if encodings:
            lines.append("Transfer-Encoding: chunked")
        lines.append("Connection: close")
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if "expect" in names and any(
            name.lower() == "expect" and value.strip().lower() == "100-continue" for name, value in headers
        ):
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader = _Reader(client, rest, self.idle_timeout, self._body_watch(endpoint))
        if encodings:
            _copy_chunked(reader, upstream)
        elif length:
            _copy_exact(reader, upstream, length)
        self._relay_one_way(upstream, client)

    # -- credentials and inspection -----------------------------------------------------
    def _inspect(self, client: socket.socket, endpoint: Endpoint) -> None:
        from capgate.inspection.relay import InspectedConnection

        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        InspectedConnection(self.inspection, self.gate, client, endpoint, idle_timeout=self.idle_timeout,
                            header_timeout=self.header_timeout, connect_timeout=self.connect_timeout,
                            max_header_bytes=self.max_header_bytes, dial=self._dialer()).serve()

    def _dialer(self) -> Any:
        """How an inspected connection reaches its host: directly, or — chained to an upstream
        egress proxy — through a CONNECT there (a pod's only way out is the cluster's proxy)."""
        upstream = self.upstream
        if upstream is None:
            return dial
        return lambda endpoint, timeout: _tunnel(upstream, endpoint, timeout)

    def _misuse(self, endpoint: Endpoint, where: str, placeholder: bytes) -> _BadRequest:
        creds = self.inspection.credentials.items
        owner = next((c for c in creds if c.placeholder == placeholder), None)
        name = owner.credential.child_env if owner else "?"
        target = f"{endpoint.host}:{endpoint.port}"
        reason = f"the placeholder of ${name} was sent to {target} in {where} (plain HTTP); it is never replaced there"
        rule = owner.credential.key if owner else "network.credentials"
        self.gate.record(ops.NET_CREDENTIAL, target, Decision.deny(reason, rule, target), via="proxy", credential=name)
        if self.inspection.on_misuse is not None:
            self.inspection.on_misuse(reason)
        return _BadRequest(403, f"net.credential denied: {reason} [rule {rule}]")

    def _check_placeholders(self, target_text: str, headers: list[tuple[str, str]], endpoint: Endpoint) -> None:
        for placeholder in self.inspection.placeholders():
            text = placeholder.decode("ascii")
            if text in target_text:
                raise self._misuse(endpoint, "the request target", placeholder)
            if any(text in value for _name, value in headers):
                raise self._misuse(endpoint, "a request header", placeholder)

    def _body_watch(self, endpoint: Endpoint) -> Any:
        if self.inspection is None or not self.inspection.placeholders():
            return None
        from capgate.inspection.scrub import StreamScanner

        scanner = StreamScanner(self.inspection.placeholders())

        def watch(data: bytes) -> None:
            found = scanner.feed(data)
            if found:
                raise self._misuse(endpoint, "the request body", found[0])

        return watch

    # -- byte relays --------------------------------------------------------------------
    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        """Copy both ways until both sides finish or the tunnel idles out."""
        activity = [time.monotonic()]
        other = threading.Thread(target=self._pump, args=(b, a, activity), daemon=True, name="capgate-proxy-pump")
        other.start()
        self._pump(a, b, activity)
        other.join(timeout=self.idle_timeout + 5)

    def _relay_one_way(self, src: socket.socket, dst: socket.socket) -> None:
        self._pump(src, dst, [time.monotonic()])

    def _pump(self, src: socket.socket, dst: socket.socket, activity: list[float]) -> None:
        buf = bytearray(_RELAY_CHUNK)
        view = memoryview(buf)
        src.settimeout(self.idle_timeout)
        dst.settimeout(self.idle_timeout)
        try:
            while not self._stopping.is_set():
                try:
                    n = src.recv_into(buf)
                except TimeoutError:
                    if time.monotonic() - activity[0] >= self.idle_timeout:
                        break
                    continue
                if n == 0:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(view[:n])
                activity[0] = time.monotonic()
        except OSError:
            pass
        # error or idle: tear the tunnel down both ways
        _shutdown(src)
        _shutdown(dst)


class _Denied(Exception):
    def __init__(self, shown: str, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.shown = shown
        self.decision = decision


class _Reader:
    """Buffered reads from the client after the head (with what arrived along with it)."""

    def __init__(self, sock: socket.socket, initial: bytes, timeout: float, watch: Any = None) -> None:
        self.sock = sock
        self.buf = bytearray(initial)
        self.watch = watch  # sees every byte of the body before it is sent on (placeholders)
        sock.settimeout(timeout)
        if watch is not None and initial:
            watch(initial)

    def _fill(self) -> None:
        chunk = self.sock.recv(_RELAY_CHUNK)
        if not chunk:
            raise _BadRequest(400, "client closed in the middle of the body")
        if self.watch is not None:
            self.watch(chunk)
        self.buf += chunk

    def read_some(self, limit: int) -> bytes:
        if not self.buf:
            self._fill()
        out = bytes(self.buf[:limit])
        del self.buf[:limit]
        return out

    def read_line(self, limit: int = 4096) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[: end + 2])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > limit:
                raise _BadRequest(400, "chunk line too long")
            self._fill()


def _copy_exact(reader: _Reader, dst: socket.socket, length: int) -> None:
    while length > 0:
        data = reader.read_some(min(length, _RELAY_CHUNK))
        dst.sendall(data)
        length -= len(data)


_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:;[\x20-\x7e\t]*)?\r\n\Z")
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\x20-\x7e\t]*\r\n\Z")


def _copy_chunked(reader: _Reader, dst: socket.socket) -> None:
    """Copy a chunked body, re-framed by us: each size line is sent as plain hex (extensions
    dropped) and trailers are checked then dropped, so no byte of the client's framing reaches
    the upstream as-is — a bare LF in a chunk line or trailer cannot start a second request."""
    while True:
        line = reader.read_line()
        match = _CHUNK_LINE.match(line)
        if match is None:
            raise _BadRequest(400, "bad chunk size line")
        size = int(match.group(1), 16)
        dst.sendall(b"%x\r\n" % size)
        if size == 0:
            while True:  # trailers (checked, not forwarded), then the empty line
                trailer = reader.read_line()
                if trailer == b"\r\n":
                    dst.sendall(b"\r\n")
                    return
                if _TRAILER_LINE.match(trailer) is None:
                    raise _BadRequest(400, "bad trailer line")
        _copy_exact(reader, dst, size)
        crlf = reader.read_line(2)
        if crlf != b"\r\n":
            raise _BadRequest(400, "chunk not followed by CRLF")
        dst.sendall(crlf)


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "non-ASCII bytes in the request head") from None
    if "\x00" in text:
        raise _BadRequest(400, "NUL in the request head")
    lines = text.split("\r\n")
    if any("\n" in line or "\r" in line for line in lines):
        raise _BadRequest(400, "bare CR or LF in the request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(400, "malformed request line")
    method, target = parts[0], parts[1]
    if not _TOKEN.match(method) or not method.isupper():
        raise _BadRequest(400, "malformed method")
    if not target:
        raise _BadRequest(400, "empty request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line or line[0] in " \t":
            raise _BadRequest(400, "obsolete line folding or empty header line")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise _BadRequest(400, f"malformed header line {line[:60]!r}")
        if any(ord(ch) < 0x20 and ch != "\t" for ch in value) or "\x7f" in value:
            raise _BadRequest(400, "control character in a header value")
        headers.append((name, value.strip()))
        if len(headers) > 200:
            raise _BadRequest(431, "too many header lines")
    return method, target, headers


def _send_error(sock: socket.socket, status: int, reason: str) -> None:
    body = f"capgate egress proxy: {reason}\n".encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        sock.settimeout(2.0)
        sock.sendall(head.encode("ascii") + body)
    _linger(sock)


def _send_denied(sock: socket.socket, denied: _Denied) -> None:
    decision = denied.decision
    body = f"capgate: net.connect denied: {denied.shown} ({decision.reason}) [rule {decision.rule}]\n"
    data = body.encode("utf-8", "replace")
    head = (
        "HTTP/1.1 403 Forbidden\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"X-Capgate-Rule: {_header_safe(decision.rule)}\r\n"
        f"X-Capgate-Reason: {_header_safe(decision.reason)}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        sock.settimeout(2.0)
        sock.sendall(head.encode("ascii") + data)
    _linger(sock)


def _refuse(sock: socket.socket, status: int, reason: str) -> None:
    with contextlib.suppress(OSError):
        sock.settimeout(0.5)
        body = f"capgate egress proxy: {reason}\n".encode()
        sock.sendall(
            f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode() + body
        )
    _linger(sock)
    _close(sock)


def _linger(sock: socket.socket) -> None:
    """Half-close and read what the client still sends, briefly (at most 0.5 s, 1 MiB), so
    closing with unread bytes does not reset the connection before it reads our answer."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 0.5
        drained = 0
        while drained < 1 << 20:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            drained += len(chunk)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.close()
