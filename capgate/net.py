"""Gated network access: ``check``, pinned ``connect`` and ``fetch`` (HTTP/HTTPS).

Every call asks the active gate (``capgate.gate.current_gate()``) through
``NetworkRules.decide*`` and logs that one decision to the audit log; a denial raises
``capgate.PermissionDenied``. What is enforced:

- **Pinned connections.** The decision resolves the name once and judges every address; the
  socket is then dialed to exactly those addresses (``Endpoint.addresses``) — no second lookup,
  so a rebinding DNS answer between check and use reaches nothing.
- **TLS against the name that was checked.** HTTPS wraps the pinned socket with SNI and
  certificate verification against the checked host name (``check_hostname`` and
  ``CERT_REQUIRED`` are required of any ``ssl_context`` you pass).
- **Redirects by hand.** ``fetch`` follows at most ``max_redirects`` (default 5) redirects, each
  hop parsed and decided again before anything is dialed; credentials (``Authorization``,
  ``Cookie``) are dropped when a redirect changes origin.
- **Bounded.** The body is capped at ``max_bytes`` (``ResponseTooLarge``), the whole fetch at a
  deadline of ``timeout`` per socket operation and ``4 * timeout`` overall; no
  ``Accept-Encoding`` is sent, so no decompression bombs.
- **No proxy variables.** ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` are never read: the
  connection goes where the gate said. (The launcher clears them for children.)
- The ``Host`` header is always the checked host; a caller-supplied ``Host`` is refused.

Not enforced: what the allowed server does with the request, and domain fronting inside TLS on a
shared front end (the gate decides on host and address, not on the server's routing).
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import sys
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from capgate import ops
from capgate.addresses import format_hostport
from capgate.decision import Decision
from capgate.errors import PermissionDenied
from capgate.gate import Gate, current_gate
from capgate.netrules import Endpoint, NetworkRules, Target, TargetError, parse_target

__all__ = [
    "Endpoint",
    "Headers",
    "Response",
    "ResponseTooLarge",
    "TooManyRedirects",
    "check",
    "check_request",
    "connect",
    "dial",
    "fetch",
]

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


class ResponseTooLarge(OSError):
    """The response body is larger than ``max_bytes``."""


class TooManyRedirects(OSError):
    """More redirects than ``max_redirects``."""


class Headers(Mapping[str, str]):
    """Response headers: case-insensitive lookup, repeated fields joined with ``, ``;
    ``get_all(name)`` gives each value, ``items_raw()`` every (name, value) as received."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = tuple(pairs)
        joined: dict[str, list[str]] = {}
        for name, value in pairs:
            joined.setdefault(name.lower(), []).append(value)
        self._joined = {name: ", ".join(values) for name, values in joined.items()}
        self._all = {name: tuple(values) for name, values in joined.items()}

    def __getitem__(self, name: str) -> str:
        return self._joined[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._joined)

    def __len__(self) -> int:
        return len(self._joined)

    def get_all(self, name: str) -> tuple[str, ...]:
        return self._all.get(name.lower(), ())

    def items_raw(self) -> tuple[tuple[str, str], ...]:
        return self._pairs

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"


@dataclass(frozen=True)
class Response:
    """An HTTP response read through the gate: ``status``, ``reason``, ``headers``, ``body``
    (bytes, at most ``max_bytes``), the final ``url`` and the redirect ``history``."""

    status: int
    reason: str
    headers: Headers
    body: bytes
    url: str
    history: tuple[str, ...] = field(default=())

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, else the Content-Type charset, else UTF-8
        (undecodable bytes replaced)."""
        if encoding is None:
            encoding = _charset(self.headers.get("content-type", "")) or "utf-8"
        try:
            return self.body.decode(encoding, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "charset" and value:
            return value.strip().strip('"') or None
    return None


# ---------------------------------------------------------------------------------------------
# Deciding (one decision, one audit line)
# ---------------------------------------------------------------------------------------------


def _decide(gate: Gate, target: str | Target, via: str) -> Endpoint:
    """Decide ``net.connect``, log it once, return the checked endpoint or raise."""
    shown = _shown(target)
    try:
        rules: NetworkRules = gate.network_rules if _soft_sandbox_proxy() is None else _proxy_side_rules(gate)
        if isinstance(target, Target):
            decision, endpoint = rules.decide_parsed(target)
        else:
            decision, endpoint = rules.decide(target)
    except Exception as exc:  # fail closed
        decision, endpoint = Decision.deny(f"error while deciding: {exc}", "network.error", shown), None
    shown = decision.target or shown
    if decision.allowed and endpoint is None:  # a rule table that allowed without an endpoint
        decision = Decision.deny("no checked endpoint", "network.error", shown)
    gate.record(ops.NET_CONNECT, shown, decision, via=via)
    if not decision.allowed or endpoint is None:
        raise PermissionDenied(ops.NET_CONNECT, shown, decision.reason, decision.rule)
    return endpoint


_PROXY_SIDE_RULES: weakref.WeakKeyDictionary[Gate, NetworkRules] = weakref.WeakKeyDictionary()


def _proxy_side_rules(gate: Gate) -> NetworkRules:
    """Inside the soft sandbox this process may not resolve names (a lookup is an exfiltration
    channel); it decides on the name and the egress proxy resolves and judges the addresses."""
    rules = _PROXY_SIDE_RULES.get(gate)
    if rules is None:
        rules = _PROXY_SIDE_RULES[gate] = NetworkRules(gate.policy, resolve=False)
    return rules


def _shown(target: str | Target) -> str:
    if isinstance(target, Target):
        return format_hostport(target.host, target.port)
    if not isinstance(target, str):
        return f"<{type(target).__name__}>"
    text = "".join(ch if 0x20 < ord(ch) < 0x7F or ord(ch) >= 0xA0 else f"\\x{ord(ch):02x}" for ch in target)
    return text[:200]


def check(url_or_host_port: str) -> Endpoint:
    """Decide ``net.connect`` for a URL or ``host:port`` under the current gate.

    Returns the checked ``Endpoint`` (normalized host, port, the addresses judged, in dial
    order); raises ``PermissionDenied`` if denied. The decision is logged.
    """
    return _decide(current_gate(), url_or_host_port, "net.check")


def _soft_sandbox_proxy() -> tuple[str, int] | None:
    """The launcher's egress proxy when this process runs inside the soft sandbox.

    Read from the installed hooks (set by the launcher's boot code), never from an environment
    variable: outside the sandbox nothing may redirect the gated client to another proxy.
    """
    soft = sys.modules.get("capgate.soft")
    hooks = soft.installed() if soft is not None else None
    return hooks.proxy if hooks is not None else None


def _tunnel(proxy: tuple[str, int], endpoint: Endpoint, timeout: float | None) -> socket.socket:
    """A ``CONNECT`` tunnel through the egress proxy, which decides the destination again
    with the same policy and dials its own checked address."""
    sock = socket.create_connection(proxy, timeout=timeout)
    try:
        authority = format_hostport(endpoint.host, endpoint.port)
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: nothing after the header may be consumed
            if not chunk or len(head) > 16384:
                raise OSError(f"the egress proxy closed the tunnel to {authority}")
            head += chunk
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise PermissionDenied(ops.NET_CONNECT, authority, f"egress proxy answered {status_line!r}",
                                   "soft.proxy")
        return sock
    except BaseException:
        sock.close()
        raise


def dial(endpoint: Endpoint, timeout: float | None = DEFAULT_TIMEOUT) -> socket.socket:
    """Connect a TCP socket to the first reachable address of an already checked endpoint.

    Only ``endpoint.addresses`` are dialed (numeric addresses: no name lookup happens here).
    Inside the soft sandbox the connection is a tunnel through the launcher's egress proxy,
    the only way out of it.
    """
    proxy = _soft_sandbox_proxy()
    if proxy is not None:
        return _tunnel(proxy, endpoint, timeout)
    last: OSError | None = None
    deadline = None if timeout is None else time.monotonic() + timeout
    for text in endpoint.addresses:
        ip = ipaddress.ip_address(text)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"connecting to {endpoint} timed out")
                sock.settimeout(remaining)
            sock.connect((str(ip), endpoint.port))
            sock.settimeout(timeout)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    if last is None:
        raise OSError(f"{endpoint} has no checked address to dial")
    raise last


def connect(host: str, port: int, timeout: float | None = DEFAULT_TIMEOUT) -> socket.socket:
    """A TCP socket connected to ``host:port`` if the gate allows it (pinned to the checked
    addresses). Raises ``PermissionDenied`` when denied, ``OSError`` when unreachable."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError("port must be an int")
    if not isinstance(host, str):
        raise TypeError("host must be a str")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    target = Target(None, bare, port)
    if not 1 <= port <= 65535:
        raise _deny_now(current_gate(), _shown(target), f"port {port} is out of range", "network.target")
    endpoint = _decide(current_gate(), target, "net.connect")
    return dial(endpoint, timeout)


def check_request(url: str, *, via: str = "net.check") -> tuple[Target, Endpoint]:
    """Decide one HTTP(S) request URL under the current gate: what ``fetch`` does for each hop,
    and what ``capgate.wrappers`` (httpx, requests, urllib) do for each request and redirect.

    The URL is parsed once (``parse_target``: only ``http``/``https``, no user info, no
    backslashes or control characters) and that parse is decided and logged (``via`` names the
    caller in the audit line). Returns the parsed ``Target`` (scheme and origin-form path to
    send) and the checked ``Endpoint`` (dial only its addresses, verify TLS against its host);
    raises ``PermissionDenied`` otherwise.
    """
    return _check_hop(current_gate(), url, via)


def _check_hop(gate: Gate, url: object, via: str) -> tuple[Target, Endpoint]:
    try:
        target = parse_target(url) if isinstance(url, str) else None
    except TargetError as exc:
        target = None
        reason = f"refused target: {exc}"
    else:
        reason = "only http and https URLs can be fetched"
    if target is None or target.scheme is None:
        raise _deny_now(gate, _shown(url), reason, "network.target")  # type: ignore[arg-type]
    return target, _decide(gate, target, via)


def _deny_now(gate: Gate, shown: str, reason: str, rule: str) -> PermissionDenied:
    return gate.deny(ops.NET_CONNECT, shown, reason, rule, via="net")


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPConnection):
    """``http.client`` over a socket dialed to the checked addresses (TLS optional)."""

    def __init__(self, endpoint: Endpoint, timeout: float, context: ssl.SSLContext | None) -> None:
        default_port = 443 if context is not None else 80
        super().__init__(endpoint.host, endpoint.port, timeout=timeout)
        self.default_port = default_port
        self._endpoint = endpoint
        self._context = context

    def connect(self) -> None:
        sock = dial(self._endpoint, self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._context is not None:
            try:
                sock = self._context.wrap_socket(sock, server_hostname=self._endpoint.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


def _tls_context(ssl_context: ssl.SSLContext | None, cafile: str | None) -> ssl.SSLContext:
    if ssl_context is None:
        ssl_context = ssl.create_default_context(cafile=cafile)
    elif cafile is not None:
        raise ValueError("pass either ssl_context or cafile, not both")
    if not ssl_context.check_hostname or ssl_context.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("capgate.net.fetch verifies certificates: the ssl_context must have check_hostname "
                         "and CERT_REQUIRED")
    return ssl_context


# RFC 9110 token: what a header name may be. "Host " or "Host\t" would otherwise pass a
# plain name comparison and go out as a second Host line that lenient servers route on.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Set from the checked URL and by http.client's own framing; a caller value for any of them
# would let the body be framed as a second request with an unchecked Host (smuggling).
_RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
    "proxy-connection", "expect",
})


def _prepare_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("header names and values must be str")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"the {name} header is set by capgate (from the checked URL and the body) and cannot be "
                             "given")
        if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
            raise ValueError(f"header {name!r} contains a control character (line break, NUL, ...)")
        out[name] = value
    return out


def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    data: bytes | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
) -> Response:
    """Fetch ``url`` (http or https) through the gate; every hop is checked and logged.

    Raises ``PermissionDenied`` for a denied hop (nothing is sent to it), ``ResponseTooLarge``,
    ``TooManyRedirects``, ``TimeoutError`` or another ``OSError`` for transport failures.
    """
    gate = current_gate()
    if not isinstance(method, str) or not method.isalpha() or not method.isupper():
        raise ValueError(f"bad HTTP method {method!r}")
    if isinstance(data, str):
        data = data.encode("utf-8")
    if data is not None and not isinstance(data, bytes):
        raise TypeError("data must be bytes or str")
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    sent_headers = _prepare_headers(headers)
    deadline = time.monotonic() + 4 * timeout
    context: ssl.SSLContext | None = None
    history: list[str] = []
    current = url
    origin: tuple[str | None, str, int] | None = None
    while True:
        target, endpoint = _check_hop(gate, current, "net.fetch")
        hop_origin = (target.scheme, endpoint.host, endpoint.port)
        if origin is not None and hop_origin != origin:
            sent_headers = {k: v for k, v in sent_headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        origin = hop_origin
        if target.scheme == "https" and context is None:
            context = _tls_context(ssl_context, cafile)
        response = _one_request(
            endpoint, target, method, sent_headers, data, timeout, max_bytes, deadline,
            context if target.scheme == "https" else None, current, tuple(history),
        )
        location = response.headers.get("location")
        if response.status not in _REDIRECTS or location is None:
            return response
        if len(history) >= max_redirects:
            raise TooManyRedirects(f"more than {max_redirects} redirects (last: {_shown(location)})")
        history.append(current)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            if method != "HEAD":
                method = "GET"
            data = None
            sent_headers = {k: v for k, v in sent_headers.items()
                            if k.lower() not in ("content-type", "content-length")}
        current = urllib.parse.urljoin(current, location)


def _one_request(
    endpoint: Endpoint,
    target: Target,
    method: str,
    headers: dict[str, str],
    data: bytes | None,
    timeout: float,
    max_bytes: int,
    deadline: float,
    context: ssl.SSLContext | None,
    url: str,
    history: tuple[str, ...],
) -> Response:
    conn = _PinnedConnection(endpoint, timeout, context)

    def budget() -> float:
        # Every socket wait is bounded by what is left of the overall deadline, so a server
        # dripping a byte just inside ``timeout`` cannot stretch the fetch past it.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"fetching {endpoint} took longer than {4 * timeout:g}s")
        if conn.sock is not None:
            conn.sock.settimeout(min(timeout, remaining))
        return remaining

    try:
        wanted = {k.lower() for k in headers}
        send = dict(headers)
        if "accept-encoding" not in wanted:
            send["Accept-Encoding"] = "identity"
        send["Connection"] = "close"
        if "user-agent" not in wanted:
            send["User-Agent"] = "capgate"
        conn.timeout = min(timeout, budget())
        conn.connect()
        budget()
        conn.request(method, target.path, body=data, headers=send)
        budget()
        resp = conn.getresponse()
        chunks: list[bytes] = []
        total = 0
        if method != "HEAD":
            while True:
                budget()
                chunk = resp.read1(min(256 * 1024, max_bytes - total + 1))
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise ResponseTooLarge(f"response body from {endpoint} is larger than {max_bytes} bytes")
                chunks.append(chunk)
        return Response(
            status=resp.status,
            reason=resp.reason,
            headers=Headers(list(resp.getheaders())),
            body=b"".join(chunks),
            url=url,
            history=history,
        )
    finally:
        conn.close()
