"""One inspected CONNECT: the child's TLS ended here, HTTP/1.1 (h11) relayed request by request.

Sequence per client connection: TLS handshake with the run CA's certificate for the CONNECT
host (SNI must equal it), then for each request: ``Host`` must equal the CONNECT host and the
target be origin-form; an ``Upgrade`` (WebSocket) is refused (the relay cannot inspect what
follows it); the request rules decide (``net.request`` in the audit log: method, host, path —
never the query, headers or body); a placeholder of a credential of *another* host in the
target, a header or the body is a ``net.credential`` denial; this host's placeholder is
replaced by the real value in the credential's header only. The request then goes over a kept-
alive TLS connection to the address the gate pinned, verified against the system store and
``--upstream-ca``; the answer comes back streamed, and for a host with credentials with every
real value replaced by its placeholder (status line, headers and body; the upstream is asked for
``Accept-Encoding: identity``, gzip/deflate are decoded, any other encoding is refused as
unscrubbable). ``Expect: 100-continue`` is answered here. Bodies are never buffered whole.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h11

from capgate import ops
from capgate.decision import Decision
from capgate.inspection.ca import SNI_ATTRIBUTE, RunCA
from capgate.inspection.pieces import PIECES_BUDGET, BodyScrubber, scrub_text
from capgate.inspection.rules import check_request, request_path
from capgate.inspection.scrub import StreamScanner

if TYPE_CHECKING:
    from capgate.credentials import CredentialSet, LiveCredential
    from capgate.gate import Gate
    from capgate.netrules import Endpoint
    from capgate.policy.model import RequestRule

__all__ = ["InspectedConnection", "Inspection"]

_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate", b"te",
        b"trailer", b"upgrade", b"expect"}
_READ = 256 * 1024
_TLS_RECORD = 16 * 1024  # (the largest TLS plaintext record)
_DIRECT = 64 * 1024  # (a body slice this large is sent as it is, not copied into the held writes)


@dataclass
class Inspection:
    """What the proxy needs to inspect: the run CA, the live credentials, the request rules, the
    upstream TLS context, and what to do when a placeholder goes where it must not."""

    credentials: CredentialSet
    rules: Sequence[RequestRule]
    upstream_ca: Sequence[str] = ()
    on_misuse: Callable[[str], None] | None = None  # ends the run (network.endRunOnCredentialMisuse)
    ca: RunCA = field(init=False)
    upstream: ssl.SSLContext = field(init=False)
    # The last TLS session with each inspected host:port (verified when it was made): the next
    # connection there resumes it instead of a full handshake. Shared by the proxy's threads.
    sessions: dict[tuple[str, int], ssl.SSLSession] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.ca = RunCA(sorted(self.hosts()))
        self.upstream = upstream_context(self.upstream_ca)

    def hosts(self) -> set[str]:
        return {c.host for c in self.credentials.items} | {r.host for r in self.rules}

    def inspects(self, host: str, port: int) -> bool:
        host = host.lower()
        return bool(self.credentials.for_host(host, port)) or any(
            r.host == host and r.port == port for r in self.rules)

    def placeholders(self) -> list[bytes]:
        return [c.placeholder for c in self.credentials.items]


def upstream_context(extra_cas: Sequence[str] = ()) -> ssl.SSLContext:
    """TLS to inspected upstreams: certificate and host-name verification (TLS 1.2 or newer)
    against the system's trust store plus ``extra_cas`` (``--upstream-ca``). The store is
    taken as OpenSSL's hashed certificate directory when there is one — looked up per
    certificate, where ``create_default_context`` parses the whole bundle first (30-150 ms
    here, on the first request's path) — and as the default files otherwise; a
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` the launcher was given is loaded as well."""
    import os

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (check_hostname, CERT_REQUIRED)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    paths = ssl.get_default_verify_paths()
    hashed = next((d for d in (paths.capath, paths.openssl_capath) if d and _has_hash_links(d)), None)
    if hashed is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.load_verify_locations(capath=hashed)
        # The default bundle file is the same store as the hashed directory (update-ca-certificates
        # writes both): loading it again, when SSL_CERT_FILE names it, would undo the saving.
        defaults = {os.path.realpath(f) for f in (paths.cafile, paths.openssl_cafile) if f}
        defaults.add(os.path.realpath(hashed))
        for name, kind in ((paths.openssl_cafile_env, "cafile"), (paths.openssl_capath_env, "capath")):
            value = os.environ.get(name)
            if value and os.path.exists(value) and os.path.realpath(value) not in defaults:
                ctx.load_verify_locations(**{kind: value})
    for path in extra_cas:
        ctx.load_verify_locations(cafile=path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _has_hash_links(directory: str) -> bool:
    import os

    try:
        return any(name.endswith(".0") and len(name) == 10 for name in os.listdir(directory))
    except OSError:
        return False


class _Refused(Exception):
    def __init__(self, status: int, text: str, rule: str = "") -> None:
        super().__init__(text)
        self.status, self.text, self.rule = status, text, rule


class InspectedConnection:
    """Serve one client connection that asked ``CONNECT host:port`` for an inspected host."""

    def __init__(self, inspection: Inspection, gate: Gate, client: socket.socket, endpoint: Endpoint, *,
                 idle_timeout: float, header_timeout: float, connect_timeout: float, max_header_bytes: int,
                 dial: Callable[[Endpoint, float], socket.socket]) -> None:
        self.inspection = inspection
        self.gate = gate
        self.client = client
        self.endpoint = endpoint
        self.host = endpoint.host.lower()
        self.port = endpoint.port
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self._dial = dial
        self.mine: tuple[LiveCredential, ...] = inspection.credentials.for_host(self.host, self.port)
        self.foreign = [c.placeholder for c in inspection.credentials.items if c not in self.mine]
        self._pending: list[tuple[socket.socket, bytearray]] = []  # (writes held until a read would wait)
        self._up_sock: ssl.SSLSocket | None = None
        self._up: h11.Connection | None = None
        self._tls: ssl.SSLSocket | None = None
        self._session_kept = False  # (this upstream connection's TLS session is in inspection.sessions)
        self._pairs = [(c.value, c.placeholder) for c in self.mine]  # (real value -> placeholder, in answers)
        # (header names come lower-cased from h11: a value there is looked for lower-cased too)
        self._name_pairs = [(c.value.lower(), c.placeholder.lower()) for c in self.mine]
        # (header name as h11 gives it, lower-case; placeholder; real value) for each credential of this host
        self._swaps = [(c.credential.header.lower().encode("ascii"), c.placeholder, c.value) for c in self.mine]
        # One receive buffer for both legs (one thread, reads never overlap): TLS records land in
        # it with recv_into, not in a fresh 256 KiB bytes object per read.
        self._buf = bytearray(_READ)
        self._view = memoryview(self._buf)

    # -- entry --------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            tls = self._handshake()
            if tls is None:
                return
            self._tls = tls
            self._loop(tls)
        finally:
            self._close_upstream()
            if self._tls is not None:
                with contextlib.suppress(OSError):
                    self._tls.close()

    def _handshake(self) -> ssl.SSLSocket | None:
        ctx = self.inspection.ca.server_context(self.host)  # (its SNI callback refuses another name)
        self.client.settimeout(self.header_timeout)
        # (a response goes out as head, body pieces and end: small writes that Nagle's algorithm
        # would hold for the client's delayed ACK, 40 ms per keep-alive request)
        with contextlib.suppress(OSError):  # (a Unix socket, from the namespace backend's forwarder)
            self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = ctx.wrap_socket(self.client, server_side=True, do_handshake_on_connect=False)
        unset = object()
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            sni = getattr(tls, SNI_ATTRIBUTE, unset)
            if isinstance(sni, str) and sni.lower().rstrip(".") != self.host:
                self._deny_connect(f"TLS server name {sni!r} is not the CONNECT host {self.host} (domain "
                                   "fronting)", "proxy.sni")
            else:
                self.gate.audit.warning("proxy.client_tls", target=f"{self.host}:{self.port}", error=str(exc)[:200])
            with contextlib.suppress(OSError):
                tls.close()
            return None
        if not isinstance(getattr(tls, SNI_ATTRIBUTE, None), str) and not _is_ip(self.host):
            self._deny_connect("no TLS server name (SNI) sent for an inspected host", "proxy.sni")
            tls.close()
            return None
        tls.settimeout(self.idle_timeout)
        return tls

    def _deny_connect(self, reason: str, rule: str) -> None:
        self.gate.record(ops.NET_CONNECT, f"{self.host}:{self.port}", Decision.deny(reason, rule,
                         f"{self.host}:{self.port}"), via="proxy")

    # -- requests -----------------------------------------------------------------------
    def _loop(self, tls: ssl.SSLSocket) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        while True:
            try:
                event = self._next_event(conn, tls)
            except h11.RemoteProtocolError as exc:
                self._answer(conn, tls, exc.error_status_hint, f"malformed request: {exc}")
                return
            except OSError:
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or a protocol state with nothing to serve)
            try:
                keep = self._exchange(conn, tls, event)
            except _Refused as refused:
                self._answer(conn, tls, refused.status, refused.text, refused.rule)
                return
            except h11.RemoteProtocolError as exc:
                self._answer(conn, tls, exc.error_status_hint, f"malformed request: {exc}")
                return
            except (OSError, h11.LocalProtocolError):
                return
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _exchange(self, conn: h11.Connection, tls: ssl.SSLSocket, request: h11.Request) -> bool:
        method = request.method.decode("ascii")
        target = request.target.decode("ascii", "replace")
        path = request_path(target)
        # (h11's Headers is a Sequence read item by item through __getitem__: one pass into a list)
        items = list(request.headers)
        self._check_target(request, items, target)
        decision = check_request(self.inspection.rules, self.host, self.port, method, path,
                                 [name.decode("latin-1") for name, _value in items])
        self.gate.record(ops.NET_REQUEST, f"{method} {self.host}{path}", decision, via="proxy", method=method,
                         host=self.host, path=path)
        if not decision.allowed:
            raise _Refused(403, f"net.request denied: {method} {self.host}{path} ({decision.reason}) "
                                f"[rule {decision.rule}]", decision.rule)
        headers = self._request_headers(request, items)
        if conn.they_are_waiting_for_100_continue:
            # (answered here: Expect is not sent on)
            tls.sendall(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")  # (at once)
        up, up_sock = self._upstream()
        self._out(up_sock, up.send(h11.Request(method=request.method, target=request.target, headers=headers)))
        scanner: StreamScanner | None = None
        while True:
            event = self._next(conn, tls)
            if isinstance(event, h11.Data):
                if scanner is None:
                    scanner = StreamScanner(self.foreign)
                found = scanner.feed(bytes(event.data))
                if found:
                    self._misuse(found[0], "the request body")
                    self._close_upstream()
                    raise _Refused(403, self._misuse_text("the request body"), "net.credential")
                self._out(up_sock, up.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self._out(up_sock, up.send(h11.EndOfMessage()))
                break
            else:
                raise OSError("client went away in the middle of a request")
        return self._relay_response(conn, tls, up, up_sock, method)

    def _check_target(self, request: h11.Request, items: list[tuple[bytes, bytes]], target: str) -> None:
        if request.method == b"CONNECT" or not target.startswith("/"):
            raise _Refused(400, "only origin-form requests (a path) go through an inspected tunnel, not "
                                f"{target[:80]!r}")
        hosts = [v for n, v in items if n == b"host"]
        if len(hosts) != 1 or not _same_host(hosts[0].decode("ascii", "replace"), self.host, self.port):
            shown = hosts[0].decode("ascii", "replace")[:100] if hosts else "(none)"
            reason = f"Host {shown!r} is not the CONNECT host {self.host}:{self.port} (domain fronting)"
            self.gate.record(ops.NET_REQUEST, f"{request.method.decode()} {shown}", Decision.deny(reason, "proxy.host",
                             shown), via="proxy", host=shown)
            raise _Refused(403, f"net.request denied: {reason}", "proxy.host")
        if any(n == b"upgrade" for n, _ in items):
            reason = "Upgrade (WebSocket) is not relayed on an inspected host"
            self.gate.record(ops.NET_REQUEST, f"{request.method.decode()} {self.host}{request_path(target)}",
                             Decision.deny(reason, "proxy.upgrade", self.host), via="proxy")
            raise _Refused(403, f"net.request denied: {reason}", "proxy.upgrade")

    def _request_headers(self, request: h11.Request, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        foreign = self.foreign
        found = [p for p in foreign if p in request.target]
        out: list[tuple[bytes, bytes]] = []
        listed = {item.strip().lower() for n, v in items if n == b"connection" for item in v.split(b",")}
        swaps = self._swaps
        # h11 framed the body by Transfer-Encoding and sends it on chunked: a Content-Length
        # beside it would let a server that frames by length read the rest as a request the
        # rules never saw (RFC 9112 6.3: an intermediary removes it).
        chunked = any(n == b"transfer-encoding" for n, _ in items)
        for name, value in items:
            if foreign:
                found += [p for p in foreign if p in value]
            if name in _HOP or name in listed or (chunked and name == b"content-length"):
                continue
            if swaps:
                if name == b"accept-encoding":
                    continue
                for header, placeholder, real in swaps:
                    if name == header and placeholder in value:
                        value = value.replace(placeholder, real)
            out.append((name, value))
        if found:
            where = "the request target" if any(p in request.target for p in found) else "a request header"
            self._misuse(found[0], where)
            raise _Refused(403, self._misuse_text(where), "net.credential")
        if swaps:
            out.append((b"accept-encoding", b"identity"))  # (what comes back must be scrubbable)
        return out

    def _misuse(self, placeholder: bytes, where: str) -> None:
        owner = next((c for c in self.inspection.credentials.items if c.placeholder == placeholder), None)
        name = owner.credential.child_env if owner else "?"
        target = f"{self.host}:{self.port}"
        reason = (f"the placeholder of ${name} (for {owner.host if owner else '?'}) was sent to {target} in {where}; "
                  "it is never replaced there")
        self.gate.record(ops.NET_CREDENTIAL, target, Decision.deny(reason, owner.credential.key if owner else
                         "network.credentials", target), via="proxy", credential=name)
        if self.inspection.on_misuse is not None:
            self.inspection.on_misuse(reason)

    def _misuse_text(self, where: str) -> str:
        return f"net.credential denied: a credential placeholder in {where} for {self.host}, which is not its host"

    # -- the response -------------------------------------------------------------------
    def _relay_response(self, conn: h11.Connection, tls: ssl.SSLSocket, up: h11.Connection,
                        up_sock: ssl.SSLSocket, method: str) -> bool:
        try:
            return self._relay_response_events(conn, tls, up, up_sock, method)
        except h11.RemoteProtocolError:
            # (h11's message quotes the upstream's offending line, which may hold the real
            # value: never passed on, and never taken for the client's malformed request)
            self._close_upstream()
            raise _Refused(502, f"{self.host}:{self.port} sent a malformed HTTP response; refused") from None

    def _relay_response_events(self, conn: h11.Connection, tls: ssl.SSLSocket, up: h11.Connection,
                               up_sock: ssl.SSLSocket, method: str) -> bool:
        pairs = self._pairs
        while True:
            event = self._next(up, up_sock)
            if isinstance(event, h11.InformationalResponse):
                continue  # (100 was answered here; 101 cannot happen: Upgrade is refused)
            if isinstance(event, h11.Response):
                break
            raise OSError("upstream closed before answering")
        response = event
        items = list(response.headers)
        name_pairs = self._name_pairs
        # (names too: a server may name a header after a value it was sent; review round 9, finding 4)
        headers = [(scrub_text(n, name_pairs), scrub_text(v, pairs)) if pairs else (n, v) for n, v in items
                   if n not in _HOP and n != b"transfer-encoding"]
        bodiless = method == "HEAD" or response.status_code in (204, 304)
        replacer: BodyScrubber | None = None
        decoder: Any = None
        if pairs and not bodiless:
            encodings = [v.strip().lower() for n, v in headers if n == b"content-encoding"]
            if any(e not in (b"identity", b"gzip", b"x-gzip", b"deflate") for e in encodings) or len(encodings) > 1:
                self._close_upstream()
                raise _Refused(502, f"{self.host} answered with Content-Encoding {encodings!r}, which the proxy "
                                    "cannot scrub of the credential; refused")
            if encodings and encodings[0] != b"identity":
                decoder = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)
            # Same-length placeholders (credentials.make_placeholder) keep an identity body's
            # length; otherwise the body goes out chunked (h11 frames it: no Content-Length).
            resized = decoder is not None or any(len(old) != len(new) for old, new in pairs)
            dropped = (b"content-length", b"content-encoding") if resized else (b"content-encoding",)
            headers = [(n, v) for n, v in headers if n not in dropped]
            # Pieces of a value too (a server quoting a cut header): all of an error answer,
            # the first PIECES_BUDGET bytes of any other.
            replacer = BodyScrubber(pairs, budget=None if response.status_code >= 400 else PIECES_BUDGET)
        # (the reason phrase is the upstream's text too: a server may name the credential it refused)
        reason = scrub_text(bytes(response.reason), pairs) if pairs else response.reason
        self._out(tls, conn.send(h11.Response(status_code=response.status_code, headers=headers, reason=reason)))
        length = None if bodiless else _content_length(items)
        if length is not None:
            # The body's framing is a Content-Length h11 has validated: its bytes go from the
            # upstream socket to the client in large slices, counted here, without an h11 event
            # per read (h11 still frames and counts what goes to the client).
            reusable = self._relay_counted(conn, tls, up, up_sock, length, decoder, replacer)
            reusable = reusable and _keeps_alive(response, items) and up.our_state is h11.DONE
        else:
            reusable = self._relay_events(conn, tls, up, up_sock, decoder, replacer)
        if not self._session_kept:
            # (once per connection: reading SSLSocket.session costs ~0.25 ms. TLS 1.3: the session
            # is known once the server's ticket has been read, i.e. after the first answer)
            session = up_sock.session
            if session is not None:
                self.inspection.sessions[(self.host, self.port)] = session
                self._session_kept = True
        if reusable:
            self._up = h11.Connection(h11.CLIENT)  # (the socket stays; a fresh parser for the next answer)
        else:
            self._close_upstream()
        return True

    def _relay_counted(self, conn: h11.Connection, tls: ssl.SSLSocket, up: h11.Connection,
                       up_sock: ssl.SSLSocket, length: int, decoder: Any, replacer: BodyScrubber | None) -> bool:
        """Relay a ``length``-byte body: what h11 already holds, then reads straight into the
        connection's buffer. Returns whether the upstream connection can serve another request
        (it sent nothing past the body)."""
        held, _closed = up.trailing_data
        extra = len(held) > length
        if held:
            self._body(conn, tls, memoryview(held)[:length], decoder, replacer)
        left = length - min(len(held), length)
        while left:
            self._flush()  # (what is held goes out before a read may wait)
            n = _fill(up_sock, self._view[:min(left, _READ)])
            if n == 0:
                raise OSError("upstream closed in the middle of a response")
            left -= n
            if decoder is None and replacer is not None:  # (scrubbed in the buffer: no copy)
                out = replacer.feed_buffer(self._buf, n)
                if out:
                    self._send_body(conn, tls, out)
            else:
                self._body(conn, tls, self._view[:n], decoder, replacer)
        self._body_end(conn, tls, decoder, replacer)
        return not extra

    def _relay_events(self, conn: h11.Connection, tls: ssl.SSLSocket, up: h11.Connection,
                      up_sock: ssl.SSLSocket, decoder: Any, replacer: BodyScrubber | None) -> bool:
        """Relay a chunked (or close-delimited, or empty) body as h11 decodes it."""
        while True:
            event = self._next(up, up_sock)
            if isinstance(event, h11.Data):
                self._body(conn, tls, event.data, decoder, replacer)
            elif isinstance(event, h11.EndOfMessage):
                self._body_end(conn, tls, decoder, replacer)
                break
            else:
                raise OSError("upstream closed in the middle of a response")
        return up.our_state is h11.DONE and up.their_state is h11.DONE

    def _body(self, conn: h11.Connection, tls: ssl.SSLSocket, data: Any, decoder: Any,
              replacer: BodyScrubber | None) -> None:
        """One slice of a response body to the client: decoded, scrubbed, framed by h11."""
        if decoder is not None:
            # (bounded: a small compressed slice may not expand into an unbounded buffer)
            out = decoder.decompress(data, _READ)
            self._scrubbed(conn, tls, out, replacer)
            while decoder.unconsumed_tail:
                out = decoder.decompress(decoder.unconsumed_tail, _READ)
                self._scrubbed(conn, tls, out, replacer)
            return
        self._scrubbed(conn, tls, data, replacer)

    def _scrubbed(self, conn: h11.Connection, tls: ssl.SSLSocket, data: Any, replacer: BodyScrubber | None) -> None:
        if replacer is not None:
            data = replacer.feed(bytes(data))
        if data:
            self._send_body(conn, tls, data)

    def _body_end(self, conn: h11.Connection, tls: ssl.SSLSocket, decoder: Any,
                  replacer: BodyScrubber | None) -> None:
        tail = b""
        if decoder is not None:
            tail = decoder.flush()
        if replacer is not None:
            tail = replacer.feed(tail) + replacer.flush()
        if tail:
            self._send_body(conn, tls, tail)
        self._out(tls, conn.send(h11.EndOfMessage()))
        self._flush()

    def _send_body(self, conn: h11.Connection, tls: ssl.SSLSocket, data: Any) -> None:
        """h11 frames (Content-Length counted, or chunked) without copying the data; a large
        slice goes out as it is, a small one joins the held writes (one TLS record with the head)."""
        for piece in conn.send_with_data_passthrough(h11.Data(data=data)) or ():
            if len(piece) >= _DIRECT:
                self._flush()
                tls.sendall(piece)
            else:
                self._out(tls, piece)

    # -- writes: coalesced until a read would block (one TLS record per burst, not per piece) --
    def _out(self, sock: socket.socket, data: Any) -> None:
        if not data:
            return
        for held, buf in self._pending:
            if held is sock:
                buf += data
                if len(buf) >= _READ:
                    self._flush()
                return
        self._pending.append((sock, bytearray(data)))

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for sock, buf in pending:
            sock.sendall(buf)

    def _next(self, conn: h11.Connection, sock: socket.socket) -> Any:
        """The next event of ``conn``; what is held goes out first if reading must wait (so a
        streamed response keeps flowing and the upstream sees the request before we wait)."""
        event = conn.next_event()
        if event is h11.NEED_DATA:
            self._flush()
            return self._next_event(conn, sock)
        return h11.ConnectionClosed() if event is h11.PAUSED else event

    def _next_event(self, conn: h11.Connection, sock: socket.socket) -> Any:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                # (h11 appends it to its own buffer: a memoryview is copied once, as bytes would be)
                conn.receive_data(self._view[:_fill(sock, self._view)])  # type: ignore[arg-type]
                continue
            if event is h11.PAUSED:
                return h11.ConnectionClosed()
            return event

    # -- the upstream -------------------------------------------------------------------
    def _upstream(self) -> tuple[h11.Connection, ssl.SSLSocket]:
        if self._up is not None and self._up_sock is not None and self._up.our_state is h11.IDLE:
            if not _readable(self._up_sock):
                return self._up, self._up_sock
            # (between answers an upstream has nothing to say: it closed the connection, or sent
            # bytes nobody asked for, which must not be read as the next request's answer)
        self._close_upstream()
        try:
            raw = self._dial(self.endpoint, self.connect_timeout)
        except OSError as exc:
            raise _Refused(502, f"cannot reach {self.endpoint}: {exc.strerror or exc}") from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock = self.inspection.upstream.wrap_socket(raw, server_hostname=self.host,
                                                        session=self.inspection.sessions.get((self.host, self.port)))
        except (ssl.SSLError, OSError) as exc:
            raw.close()
            reason = getattr(exc, "verify_message", None) or str(exc)
            self.gate.audit.warning("proxy.upstream_tls", target=f"{self.host}:{self.port}", error=str(reason)[:200])
            raise _Refused(502, f"TLS to {self.host}:{self.port} failed verification: {reason}") from None
        sock.settimeout(self.idle_timeout)
        self._up_sock, self._up = sock, h11.Connection(h11.CLIENT)
        self._session_kept = False
        return self._up, sock

    def _close_upstream(self) -> None:
        self._pending = [(sock, buf) for sock, buf in self._pending if sock is not self._up_sock]
        if self._up_sock is not None:
            with contextlib.suppress(OSError):
                self._up_sock.close()
        self._up_sock = self._up = None

    # -- answers ------------------------------------------------------------------------
    def _answer(self, conn: h11.Connection, tls: ssl.SSLSocket, status: int, text: str, rule: str = "") -> None:
        # (every answer of the proxy's own is scrubbed too: whatever text it quotes, no value leaves)
        body = scrub_text(f"capgate egress proxy: {text}\n".encode("utf-8", "replace"),
                          [(c.value, c.placeholder) for c in self.inspection.credentials.items])
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if rule:
            headers.append((b"x-capgate-rule", rule.encode("ascii", "replace")[:300]))
        try:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                reason = {400: b"Bad Request", 403: b"Forbidden", 502: b"Bad Gateway"}.get(status, b"Error")
                tls.sendall(conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b"")
                tls.sendall(conn.send(h11.Data(data=body)) or b"")
                tls.sendall(conn.send(h11.EndOfMessage()) or b"")
        except (OSError, h11.LocalProtocolError):
            pass


def _fill(sock: socket.socket, view: memoryview) -> int:
    """Wait for data, then take what else has already arrived (up to ``len(view)``) without
    waiting, all into ``view``: a TLS socket returns one record (16 KiB) per read, and one pass
    of the relay per record would cap a download at the relay's per-pass cost. An unclean TLS
    close reads as the end of the stream (0)."""
    try:
        n = sock.recv_into(view)
    except ssl.SSLError:
        return 0
    if n < _TLS_RECORD or n >= len(view) or not isinstance(sock, ssl.SSLSocket):
        return n  # (a short record: a small message, most likely all there is)
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        while n < len(view):
            more = sock.recv_into(view[n:])
            if not more:
                break
            n += more
    except (ssl.SSLWantReadError, BlockingIOError, ssl.SSLError, OSError):
        pass  # (nothing more yet; an error shows again on the next, blocking read)
    finally:
        sock.settimeout(timeout)
    return n


def _readable(sock: ssl.SSLSocket) -> bool:
    """Whether ``sock`` has anything to read now (data, or the peer's close)."""
    if sock.pending():
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _content_length(items: list[tuple[bytes, bytes]]) -> int | None:
    """The body length when a response is framed by ``Content-Length`` (h11 has checked the
    value and that several agree), ``None`` when it is chunked or ends with the connection —
    RFC 9112 6.3 in the order h11 applies it (Transfer-Encoding beats Content-Length)."""
    length = None
    for name, value in items:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length


def _keeps_alive(response: h11.Response, items: list[tuple[bytes, bytes]]) -> bool:
    """Whether the upstream may take another request on this connection after ``response``."""
    if response.http_version != b"1.1":
        return False
    return not any(n == b"connection" and b"close" in (t.strip().lower() for t in v.split(b","))
                   for n, v in items)


def _same_host(value: str, host: str, port: int) -> bool:
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = value.partition(":")
    if name.rstrip(".") != host:
        return False
    return port_text == str(port) or (not port_text and port == 443)


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
