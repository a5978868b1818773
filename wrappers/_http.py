"""What the HTTP client wrappers share: the per-request decision and the one-shot pinned request.

Every wrapper (httpx, requests, urllib) calls ``decide`` for each request it is handed — the
clients follow redirects by handing the transport a new request, so each hop comes here too —
and then connects only to the returned ``Endpoint``'s addresses. ``decide`` is
``capgate.net.check_request`` (the URL parsed once, decided and logged once) plus the Host
header rule: a caller's ``Host`` must name the host and port that were checked, since the
server routes on it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

from capgate import net, ops
from capgate.gate import current_gate
from capgate.netrules import DEFAULT_PORTS, Endpoint, Target, normalize_host

__all__ = ["DEFAULT_MAX_BYTES", "decide", "send_once", "verifying_context"]

DEFAULT_MAX_BYTES = net.DEFAULT_MAX_BYTES
DEFAULT_TIMEOUT = net.DEFAULT_TIMEOUT

# Set by capgate from the checked URL and the body (or hop-by-hop, meaningless for a one-shot
# request): a client's own values for these are dropped, never forwarded. Accept-Encoding is
# dropped too: capgate asks for identity, so nothing is decompressed past the body cap.
_DROPPED = frozenset({"host", "connection", "keep-alive", "proxy-connection", "content-length", "transfer-encoding",
                      "accept-encoding"})


def decide(url: str, host_header: str | None, via: str) -> tuple[Target, Endpoint]:
    """Decide one request; raise ``PermissionDenied`` (logged) when refused."""
    target, endpoint = net.check_request(url, via=via)
    if host_header is not None and not _same_authority(host_header, target, endpoint):
        shown = host_header[:200]
        raise current_gate().deny(ops.NET_CONNECT, shown,
                                  f"the Host header names another host than the checked URL ({endpoint})",
                                  "network.target", via=via)
    return target, endpoint


def _same_authority(value: str, target: Target, endpoint: Endpoint) -> bool:
    """Whether a Host header value names the checked host and port (default port implied)."""
    try:
        if value.startswith("["):
            close = value.index("]")
            host, rest = value[1:close], value[close + 1:]
        elif value.count(":") == 1:
            host, _, port_text = value.partition(":")
            rest = ":" + port_text
        else:
            host, rest = value, ""
        if rest and (not rest.startswith(":") or not rest[1:].isdigit()):
            return False
        port = int(rest[1:]) if rest else DEFAULT_PORTS[target.scheme or "https"]
        normalized, _ip = normalize_host(host)
    except (ValueError, KeyError):
        return False
    return normalized == endpoint.host and port == endpoint.port


def verifying_context(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext:
    """A TLS context that verifies certificates and host names (``True``: the system store;
    a path: that CA bundle; a context: checked). ``False`` is refused: capgate's promise is
    that the peer is the host the gate checked."""
    if verify is False:
        raise ValueError("capgate verifies certificates: verify=False is refused")
    if verify is True:
        return net._tls_context(None, None)
    if isinstance(verify, str):
        return net._tls_context(None, verify)
    if isinstance(verify, ssl.SSLContext):
        return net._tls_context(verify, None)
    raise TypeError("verify must be True, a CA bundle path or an ssl.SSLContext")


def clean_headers(pairs: Iterable[tuple[Any, Any]]) -> dict[str, str]:
    """The client's headers minus the ones capgate sets itself, validated (no line breaks,
    names that are tokens, no framing headers such as Transfer-Encoding/TE/Upgrade/Expect)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        text_name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        text_value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if text_name.lower() in _DROPPED:
            continue
        if text_name in out:
            out[text_name] += ", " + text_value
        else:
            out[text_name] = text_value
    return net._prepare_headers(out)


def read_body(body: Any, limit: int) -> bytes | None:
    """A request body as bytes (bytes, str, a file or an iterable of chunks), at most ``limit``."""
    if body is None:
        return None
    if isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    elif hasattr(body, "read"):
        data = body.read(limit + 1)
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    else:
        parts: list[bytes] = []
        total = 0
        for chunk in body:
            piece = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
            total += len(piece)
            if total > limit:
                break
            parts.append(piece)
        data = b"".join(parts) + (b"x" if total > limit else b"")
    if len(data) > limit:
        raise ValueError(f"request body larger than {limit} bytes")
    return data


def send_once(
    endpoint: Endpoint,
    target: Target,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    timeout: float,
    max_bytes: int,
    context: ssl.SSLContext | None,
    url: str,
) -> net.Response:
    """One request on a fresh connection to the checked addresses (TLS verified against the
    checked host), the response body read whole up to ``max_bytes`` (``ResponseTooLarge``).
    Redirects are not followed here: the client follows them, and each hop is decided again."""
    if not isinstance(method, str) or not method.isalpha() or not method.isupper():
        raise ValueError(f"bad HTTP method {method!r}")
    return net._one_request(endpoint, target, method, headers, body, timeout, max_bytes,
                            time.monotonic() + 4 * timeout, context if target.scheme == "https" else None, url, ())
