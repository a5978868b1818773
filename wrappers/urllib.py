"""``urllib.request`` through the gate: ``opener()`` builds an ``OpenerDirector`` whose only
handlers are gated HTTP and HTTPS (plus redirects and error processing).

    from capgate.wrappers import urllib as gated
    with gated.opener().open("https://api.example.com/v1", timeout=10) as response:
        data = response.read()

- No ``ProxyHandler`` (proxy variables are never read), no ``file:``, ``ftp:`` or ``data:``:
  any other scheme is decided by the gate and refused.
- Each request, and each redirect hop (the redirect handler opens the new URL through the same
  opener), is decided by ``capgate.net.check_request`` on the one parsed URL; the connection
  goes to the checked, pinned address, TLS verified against the checked host name.
- Response bodies are read whole, at most ``max_bytes`` (default 10 MiB).
- A denial raises ``RequestDenied``, a subclass of ``urllib.error.URLError`` (so existing
  ``except URLError``/``except OSError`` code keeps working) whose ``reason`` is the
  ``capgate.PermissionDenied`` and whose ``__cause__`` is the same exception.
"""

from __future__ import annotations

import http.client
import io
import ssl
import urllib.error
import urllib.request
import urllib.response
from typing import Any

from capgate import net
from capgate.errors import PermissionDenied

from . import _http

__all__ = ["RequestDenied", "ResponseTooLarge", "opener"]


class RequestDenied(urllib.error.URLError):
    """The gate refused the request (``reason`` is the ``capgate.PermissionDenied``)."""


class ResponseTooLarge(urllib.error.URLError):
    """The response body was larger than the opener's ``max_bytes``."""


class _GateHandler(urllib.request.BaseHandler):
    """Opens http and https URLs through the gate; refuses every other scheme."""

    handler_order = 400  # before the default error/unknown handlers

    def __init__(self, context: ssl.SSLContext, max_bytes: int) -> None:
        self._context = context
        self._max_bytes = max_bytes

    def _open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        headers = dict(req.header_items())
        host_header = next((v for k, v in headers.items() if k.lower() == "host"), None)
        try:
            target, endpoint = _http.decide(req.full_url, host_header, "urllib")
        except PermissionDenied as exc:
            raise RequestDenied(exc) from exc
        try:
            sent = _http.clean_headers(headers.items())
            body = _http.read_body(req.data, self._max_bytes)
        except (ValueError, TypeError) as exc:
            raise urllib.error.URLError(f"capgate refused the request: {exc}") from exc
        if body is not None and not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        timeout = req.timeout if isinstance(req.timeout, (int, float)) else _http.DEFAULT_TIMEOUT
        try:
            response = _http.send_once(endpoint, target, req.get_method(), sent, body, timeout=float(timeout),
                                       max_bytes=self._max_bytes, context=self._context, url=req.full_url)
        except net.ResponseTooLarge as exc:
            raise ResponseTooLarge(str(exc)) from exc
        except PermissionDenied as exc:  # the egress proxy refused (inside the soft sandbox)
            raise RequestDenied(exc) from exc
        except OSError as exc:
            raise urllib.error.URLError(exc) from exc
        message = http.client.HTTPMessage()
        for name, value in response.headers.items_raw():
            message[name] = value
        result = urllib.response.addinfourl(io.BytesIO(response.body), message, req.full_url, response.status)
        result.msg = response.reason  # type: ignore[attr-defined]  # what HTTPErrorProcessor reads
        return result

    def http_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        return self._open(req)

    def https_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        return self._open(req)

    def unknown_open(self, req: urllib.request.Request) -> Any:
        try:  # decided and logged like any other target: refused for its scheme
            _http.decide(req.full_url, None, "urllib")
        except PermissionDenied as exc:
            raise RequestDenied(exc) from exc
        raise RequestDenied(f"scheme of {req.full_url[:100]!r} is not served")  # pragma: no cover


def opener(
    *, verify: ssl.SSLContext | str | bool = True, max_bytes: int = _http.DEFAULT_MAX_BYTES
) -> urllib.request.OpenerDirector:
    """An opener with gated HTTP(S) only; see the module docstring. ``verify``: ``True`` (the
    system CA store), a CA bundle path or a verifying ``ssl.SSLContext`` (``False`` refused)."""
    director = urllib.request.OpenerDirector()
    for handler in (
        _GateHandler(_http.verifying_context(verify), max_bytes),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        director.add_handler(handler)
    return director


