"""requests through the gate: ``session()`` or ``GateAdapter`` (``pip install capgate[requests]``).

    from capgate.wrappers import requests as gated
    s = gated.session()
    s.get("https://api.example.com/v1", timeout=10).json()

- ``session()`` is a ``requests.Session`` with ``GateAdapter`` mounted for ``http://`` and
  ``https://`` and a refusing adapter for every other scheme, and ``trust_env = False``: no
  proxy variables, no ``~/.netrc`` credentials, no ``REQUESTS_CA_BUNDLE``.
- Each request, and each redirect hop the session follows (it hands each hop to the adapter),
  is decided by ``capgate.net.check_request`` on the one parsed URL; the connection goes to the
  checked, pinned address, TLS verified against the checked host name (``verify=False`` is
  refused; a CA bundle path is honoured). ``proxies`` passed to ``send`` are ignored.
- One connection per request (no pool); the response body is read whole, at most
  ``max_bytes`` (default 10 MiB), asked for with ``Accept-Encoding: identity``.
- A denial raises ``RequestDenied``, a subclass of ``requests.exceptions.ConnectionError`` (so
  ``except requests.RequestException`` keeps working), chained (``__cause__``) to the
  ``capgate.PermissionDenied``. A body over the cap raises ``ResponseTooLarge`` (a
  ``requests.RequestException``).
"""

from __future__ import annotations

import http.client
import io
import ssl
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import requests
import requests.adapters
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from capgate import net
from capgate.errors import PermissionDenied

from . import _http

__all__ = ["GateAdapter", "RequestDenied", "ResponseTooLarge", "session"]


class RequestDenied(requests.exceptions.ConnectionError):
    """The gate refused the request; ``__cause__`` is the ``capgate.PermissionDenied``."""


class ResponseTooLarge(requests.RequestException):
    """The response body is larger than the adapter's ``max_bytes``."""


class _Raw(io.BytesIO):
    """What requests reads a response's cookies from (``_original_response.msg``)."""

    def __init__(self, body: bytes, message: http.client.HTTPMessage) -> None:
        super().__init__(body)
        self._original_response = SimpleNamespace(msg=message)


class GateAdapter(requests.adapters.BaseAdapter):
    """A transport adapter that sends every request through the gate (see the module doc)."""

    def __init__(self, *, max_bytes: int = _http.DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self._max_bytes = max_bytes
        self._contexts: dict[object, ssl.SSLContext] = {}

    def _context(self, verify: Any) -> ssl.SSLContext:
        key = verify if isinstance(verify, (bool, str)) else id(verify)
        context = self._contexts.get(key)
        if context is None:
            try:
                context = self._contexts[key] = _http.verifying_context(verify)
            except (ValueError, TypeError) as exc:
                raise requests.exceptions.SSLError(str(exc)) from exc
        return context

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        headers: Mapping[str, Any] = request.headers or {}
        context = self._context(verify) if url[:6].lower() == "https:" else None  # verify=False: refused first
        try:
            target, endpoint = _http.decide(url, headers.get("Host"), "requests")
        except PermissionDenied as exc:
            raise RequestDenied(str(exc), request=request) from exc
        if cert is not None:
            raise requests.exceptions.SSLError("capgate's GateAdapter does not send client certificates",
                                               request=request)
        try:
            sent = _http.clean_headers(headers.items())
            body = _http.read_body(request.body, self._max_bytes)
        except (ValueError, TypeError) as exc:
            raise requests.exceptions.InvalidHeader(f"capgate refused the request: {exc}", request=request) from exc
        if isinstance(timeout, tuple):
            seconds = max((t for t in timeout if t is not None), default=None)
        else:
            seconds = timeout
        try:
            response = _http.send_once(endpoint, target, request.method or "GET", sent, body,
                                       timeout=float(seconds) if seconds is not None else _http.DEFAULT_TIMEOUT,
                                       max_bytes=self._max_bytes, context=context, url=url)
        except net.ResponseTooLarge as exc:
            raise ResponseTooLarge(str(exc), request=request) from exc
        except PermissionDenied as exc:  # the egress proxy refused (inside the soft sandbox)
            raise RequestDenied(str(exc), request=request) from exc
        except ssl.SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from exc
        except TimeoutError as exc:
            raise requests.exceptions.Timeout(exc, request=request) from exc
        except OSError as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        return self._build(request, response, url)

    def _build(self, request: requests.PreparedRequest, response: net.Response, url: str) -> requests.Response:
        message = http.client.HTTPMessage()
        for name, value in response.headers.items_raw():
            message[name] = value
        result = requests.Response()
        result.status_code = response.status
        result.reason = response.reason
        result.headers = CaseInsensitiveDict(dict(response.headers))
        result.encoding = get_encoding_from_headers(result.headers)
        result.raw = _Raw(response.body, message)
        result._content = response.body
        result._content_consumed = True  # type: ignore[attr-defined]
        result.url = url
        result.request = request
        result.connection = self  # type: ignore[assignment]
        extract_cookies_to_jar(result.cookies, request, result.raw)  # type: ignore[no-untyped-call]
        return result

    def close(self) -> None:
        self._contexts.clear()


class _RefuseAdapter(requests.adapters.BaseAdapter):
    """Mounted for every scheme but http(s): the gate decides (and logs) the refusal."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            _http.decide(request.url or "", None, "requests")
        except PermissionDenied as exc:
            raise RequestDenied(str(exc), request=request) from exc
        raise RequestDenied(f"scheme of {str(request.url)[:100]!r} is not served", request=request)  # pragma: no cover

    def close(self) -> None:
        pass


def session(*, max_bytes: int = _http.DEFAULT_MAX_BYTES) -> requests.Session:
    """A ``requests.Session`` that reaches only what the gate allows (see the module doc)."""
    s = requests.Session()
    s.trust_env = False
    s.adapters.clear()
    s.mount("", _RefuseAdapter())  # the shortest prefix: whatever http(s) below does not take
    adapter = GateAdapter(max_bytes=max_bytes)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s
