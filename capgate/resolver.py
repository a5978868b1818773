"""Name resolution for the network gate: the system resolver with a deadline, or your own.

A resolver is any callable ``(host, port) -> list[str]`` returning IP address strings in the
order they should be dialed. capgate judges every address it returns (a hostile or rebinding
resolver can only get a denial) and dials exactly those addresses, so the resolver is the one
place DNS happens. ``SystemResolver`` wraps ``getaddrinfo`` (which has no timeout of its own) in a
worker thread with a deadline; a lookup that outlives it is a resolution failure, hence a denial.

Not enforced here: DNS privacy or DNSSEC — use your own resolver for those.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
from collections.abc import Callable

__all__ = ["ResolveError", "Resolver", "StaticResolver", "SystemResolver"]

Resolver = Callable[[str, int], list[str]]


class ResolveError(OSError):
    """The name did not resolve (in time)."""


class SystemResolver:
    """``getaddrinfo`` with a deadline (``timeout`` seconds), TCP only, IPv4 and IPv6."""

    _pool: concurrent.futures.ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    @classmethod
    def _executor(cls) -> concurrent.futures.ThreadPoolExecutor:
        with cls._pool_lock:
            if cls._pool is None:
                cls._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="capgate-dns")
            return cls._pool

    def __call__(self, host: str, port: int) -> list[str]:
        future = self._executor().submit(
            socket.getaddrinfo, host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        try:
            infos = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ResolveError(f"resolving {host!r} took longer than {self.timeout:g}s") from None
        except socket.gaierror as exc:
            raise ResolveError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        out: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = str(sockaddr[0])
            if address not in out:
                out.append(address)
        return out


class StaticResolver:
    """A fixed table ``{name: [ip, ...]}`` (tests, offline fixtures). Unknown names fail."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = {name.lower(): list(ips) for name, ips in table.items()}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        try:
            return list(self.table[host])
        except KeyError:
            raise ResolveError(f"cannot resolve {host!r}: not in the table") from None
