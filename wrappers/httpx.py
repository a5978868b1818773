"""httpx through the gate: ``httpx.Client(transport=GateTransport())`` and
``httpx.AsyncClient(transport=AsyncGateTransport())`` (``pip install capgate[httpx]``).

- Each request the client hands the transport — the first and every redirect hop httpx follows —
  is decided by ``capgate.net.check_request`` on the one parsed URL (one audit line per hop).
- The request then goes to the checked endpoint only: the URL given to the connection pool is
  rebuilt from the checked host, port and path, and the pool's network backend dials exactly
  ``Endpoint.addresses`` (no second name lookup; inside the soft sandbox, the launcher's egress
  proxy). TLS: SNI and certificate verification against the checked host name (a caller's
  ``sni_hostname`` extension is dropped; ``verify=False`` is refused).
- Connections are pooled per gate (keep-alive), so a connection checked under one policy never
  serves a request decided under another.
- Proxy variables are ignored: httpx itself reads none when a transport is given, and this
  transport has no proxy. Only ``http``/``https``: any other scheme is refused by the gate.
- Response bodies are capped at ``max_bytes`` (default 10 MiB) while streaming; the request asks
  for ``Accept-Encoding: identity`` so nothing is decompressed past the cap.
- A denial raises ``RequestDenied``, a subclass of ``httpx.ConnectError`` (so ``except
  httpx.HTTPError``/``httpx.TransportError`` keeps working), chained (``__cause__``) to the
  ``capgate.PermissionDenied`` with its ``reason`` and ``rule``. A body over the cap raises
  ``ResponseTooLarge`` (an ``httpx.ReadError``).
"""

from __future__ import annotations

import contextvars
import socket
import ssl
import threading
import typing
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator

import anyio
import anyio.to_thread
import httpcore
import httpx
from httpcore._backends.anyio import AnyIOStream
from httpcore._backends.sync import SyncStream
from httpx._transports.default import AsyncResponseStream, ResponseStream, map_httpcore_exceptions

from capgate import net
from capgate.errors import PermissionDenied
from capgate.gate import Gate, current_gate
from capgate.netrules import Endpoint, Target

from . import _http

__all__ = ["AsyncGateTransport", "GateTransport", "RequestDenied", "ResponseTooLarge"]

# The endpoint the gate just checked for the request being sent in this context (thread or
# task): the network backend dials it and nothing else.
_PINNED: contextvars.ContextVar[Endpoint | None] = contextvars.ContextVar("capgate_httpx_endpoint", default=None)


class RequestDenied(httpx.ConnectError):
    """The gate refused the request; ``__cause__`` is the ``capgate.PermissionDenied``."""


class ResponseTooLarge(httpx.ReadError):
    """The response body is larger than the transport's ``max_bytes``."""


def _pinned_endpoint(host: str, port: int) -> Endpoint:
    endpoint = _PINNED.get()
    if endpoint is None or endpoint.host != host or endpoint.port != port:
        # Fail closed: only a connection for the request the gate just decided is made.
        raise httpcore.ConnectError(f"capgate: {host}:{port} is not the endpoint the gate checked")
    return endpoint


def _dial(endpoint: Endpoint, timeout: float | None) -> socket.socket:
    try:
        sock = net.dial(endpoint, timeout)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _PinnedBackend(httpcore.NetworkBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        sock = _dial(_pinned_endpoint(host, port), timeout)
        for option in socket_options or ():
            sock.setsockopt(*option)
        return SyncStream(sock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("capgate: Unix sockets are not served by GateTransport")


class _AsyncPinnedBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        endpoint = _pinned_endpoint(host, port)
        # net.dial is blocking (and tunnels through the egress proxy inside the soft sandbox):
        # run it on a worker thread, then hand the connected socket to the event loop.
        sock = await anyio.to_thread.run_sync(_dial, endpoint, timeout)
        for option in socket_options or ():
            sock.setsockopt(*option)
        stream = await anyio.abc.SocketStream.from_socket(sock)
        return AnyIOStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("capgate: Unix sockets are not served by AsyncGateTransport")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def _decide(request: httpx.Request) -> tuple[Target, Endpoint]:
    try:
        return _http.decide(str(request.url), request.headers.get("host"), "httpx")
    except PermissionDenied as exc:
        raise RequestDenied(str(exc), request=request) from exc


def _pool_request(request: httpx.Request, target: Target, endpoint: Endpoint, stream: typing.Any) -> httpcore.Request:
    """The request as the pool sees it: its URL rebuilt from what the gate checked."""
    assert target.scheme is not None
    extensions = {k: v for k, v in request.extensions.items() if k == "timeout"}  # never sni_hostname
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=target.scheme.encode("ascii"), host=endpoint.host.encode("ascii"),
                         port=endpoint.port, target=target.path.encode("ascii")),
        # identity only: the body cap then bounds what the client holds (no decompression bomb)
        headers=[(k, v) for k, v in request.headers.raw if k.lower() != b"accept-encoding"]
        + [(b"Accept-Encoding", b"identity")],
        content=stream,
        extensions=extensions,
    )


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner: ResponseStream, limit: int, request: httpx.Request) -> None:
        self._inner, self._limit, self._request = inner, limit, request

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            total += len(chunk)
            if total > self._limit:
                raise ResponseTooLarge(f"response body larger than {self._limit} bytes", request=self._request)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _AsyncCappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: AsyncResponseStream, limit: int, request: httpx.Request) -> None:
        self._inner, self._limit, self._request = inner, limit, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self._inner:
            total += len(chunk)
            if total > self._limit:
                raise ResponseTooLarge(f"response body larger than {self._limit} bytes", request=self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GateTransport(httpx.BaseTransport):
    """A synchronous httpx transport that sends every request through the gate.

    ``verify``: ``True`` (system CA store), a CA bundle path or a verifying ``ssl.SSLContext``.
    ``limits``: the pool limits (httpx defaults). ``max_bytes``: the response body cap.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
        max_bytes: int = _http.DEFAULT_MAX_BYTES,
    ) -> None:
        self._context = _http.verifying_context(verify)
        self._limits = limits
        self._max_bytes = max_bytes
        self._pools: weakref.WeakKeyDictionary[Gate, httpcore.ConnectionPool] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _pool(self, gate: Gate) -> httpcore.ConnectionPool:
        pool = self._pools.get(gate)
        if pool is None:
            with self._lock:
                pool = self._pools.get(gate)
                if pool is None:
                    pool = self._pools[gate] = httpcore.ConnectionPool(
                        ssl_context=self._context, max_connections=self._limits.max_connections,
                        max_keepalive_connections=self._limits.max_keepalive_connections,
                        keepalive_expiry=self._limits.keepalive_expiry, network_backend=_PinnedBackend(),
                    )
        return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        gate = current_gate()
        target, endpoint = _decide(request)
        token = _PINNED.set(endpoint)
        try:
            with map_httpcore_exceptions():
                resp = self._pool(gate).handle_request(_pool_request(request, target, endpoint, request.stream))
        finally:
            _PINNED.reset(token)
        assert isinstance(resp.stream, typing.Iterable)
        return httpx.Response(status_code=resp.status, headers=resp.headers,
                              stream=_CappedStream(ResponseStream(resp.stream), self._max_bytes, request),
                              extensions=resp.extensions)

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()


class AsyncGateTransport(httpx.AsyncBaseTransport):
    """The asyncio/trio counterpart of ``GateTransport`` (same arguments, same guarantees)."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
        max_bytes: int = _http.DEFAULT_MAX_BYTES,
    ) -> None:
        self._context = _http.verifying_context(verify)
        self._limits = limits
        self._max_bytes = max_bytes
        self._pools: weakref.WeakKeyDictionary[Gate, httpcore.AsyncConnectionPool] = weakref.WeakKeyDictionary()

    def _pool(self, gate: Gate) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(gate)
        if pool is None:  # no await in between: one event loop thread cannot race here
            pool = self._pools[gate] = httpcore.AsyncConnectionPool(
                ssl_context=self._context, max_connections=self._limits.max_connections,
                max_keepalive_connections=self._limits.max_keepalive_connections,
                keepalive_expiry=self._limits.keepalive_expiry, network_backend=_AsyncPinnedBackend(),
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        gate = current_gate()
        target, endpoint = _decide(request)
        token = _PINNED.set(endpoint)
        try:
            with map_httpcore_exceptions():
                resp = await self._pool(gate).handle_async_request(
                    _pool_request(request, target, endpoint, request.stream))
        finally:
            _PINNED.reset(token)
        assert isinstance(resp.stream, typing.AsyncIterable)
        return httpx.Response(status_code=resp.status, headers=resp.headers,
                              stream=_AsyncCappedStream(AsyncResponseStream(resp.stream), self._max_bytes, request),
                              extensions=resp.extensions)

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()
