"""The network decision table: may this process reach ``host:port`` (or this URL), and where to.

``NetworkRules(policy, resolver).decide(target)`` answers for ``net.connect``; ``Gate.check``,
``capgate.net`` and the egress proxy all come here, so there is one answer. In order:

1. ``network.enabled: false`` (the default) denies everything: offline mode.
2. The target is parsed once, strictly (``parse_target``): ``host:port``, ``[v6]:port`` or an
   ``http``/``https`` URL. Whitespace, control characters, backslashes, ``%`` in the host and user
   info (``https://allowed@evil``) are refused rather than guessed at; a fragment ends the
   authority (``https://evil#@allowed`` is ``evil``), as in every real client.
3. IP literals in any spelling the C resolver accepts are allowed only when the address (and
   port) is in ``allowedAddresses``; ``deniedDomains``/``allowedDomains`` never apply to them.
4. Names: ``deniedDomains`` first (deny beats allow, with the entry's reason), then
   ``allowedDomains`` with its port rule (an entry's own port, else ``allowedPorts``).
5. The name is resolved once (the injectable resolver) and *every* address is classified; any
   special-purpose address (loopback, private, link-local, metadata, embedded IPv4…) that is not
   in ``allowedAddresses`` denies the whole target — an allowed name that resolves to
   ``127.0.0.1`` is DNS rebinding. The ``Endpoint`` carries the checked addresses; callers dial
   only those (no second lookup).

Any exception while deciding is a denial naming the target and the rule ``network.error``.
``decide_unix(path)`` answers for Unix-socket connects: allowed only when the canonical path is
listed in ``allowedUnixSockets``; abstract sockets are always denied.

Not enforced here: what travels over an allowed connection (a TLS tunnel may carry any SNI or
Host header to the allowed address — domain fronting on shared front ends is outside a
connect-level gate), and audit logging (the caller logs the one decision).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capgate.addresses import AddressRules, IPAddress, LiteralError, classify, format_hostport, parse_ip_literal
from capgate.decision import Decision
from capgate.hosts import DomainRules, HostError, normalize_hostname

if TYPE_CHECKING:
    from capgate.policy.model import Policy, ResolveEntry

__all__ = ["Endpoint", "NetworkRules", "Target", "TargetError", "normalize_host", "parse_target"]

MAX_ADDRESSES = 32
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Endpoint:
    """A checked destination: ``host`` (normalized name or canonical IP), ``port``, and
    ``addresses``, the IPs that were judged, in dial order. Dial only these."""

    host: str
    port: int
    addresses: tuple[str, ...]

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)


class TargetError(ValueError):
    """A target (URL or ``host:port``) capgate will not interpret."""


@dataclass(frozen=True)
class Target:
    """A parsed target: ``scheme`` (``http``/``https``, or ``None`` for ``host:port``), the
    ``host`` as written (brackets removed), ``port``, and for URLs the origin-form request
    ``path`` (path and query, fragment dropped)."""

    scheme: str | None
    host: str
    port: int
    path: str = "/"


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_PORT = re.compile(r"^[0-9]{1,10}$")
MAX_TARGET = 8192


def _port(text: str, default: int | None) -> int:
    if text == "":
        if default is None:
            raise TargetError("empty port")
        return default
    if not _PORT.match(text):
        raise TargetError(f"port {text!r} is not a number")
    value = int(text)
    if not 1 <= value <= 65535:
        raise TargetError(f"port {value} is out of range")
    return value


def _split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    if not authority:
        raise TargetError("no host")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise TargetError("unclosed '[' in host")
        host, rest = authority[1:close], authority[close + 1 :]
        if ":" not in host:
            raise TargetError("brackets are only for IPv6 addresses")
        if rest == "":
            port = _port("", default_port)
        elif rest.startswith(":"):
            port = _port(rest[1:], default_port)
        else:
            raise TargetError(f"unexpected {rest!r} after ']'")
        return host, port
    if authority.count(":") > 1:
        if default_port is None:  # bare IPv6 in host:port form
            return authority, 443
        raise TargetError("an IPv6 address in a URL needs brackets")
    host, colon, port_text = authority.partition(":")
    if not host:
        raise TargetError("no host")
    if not colon:
        return host, default_port if default_port is not None else 443
    return host, _port(port_text, default_port)


def parse_target(text: str) -> Target:
    """Parse ``host:port``, ``[v6]:port``, a bare host (port 443) or an http(s) URL."""
    if not isinstance(text, str):
        raise TargetError(f"a target must be a string, not {type(text).__name__}")
    if not text:
        raise TargetError("empty target")
    if len(text) > MAX_TARGET:
        raise TargetError("target too long")
    for ch in text:
        code = ord(ch)
        if code <= 0x20 or code == 0x7F or ch == "\\" or ch.isspace() or 0x80 <= code < 0xA0:
            raise TargetError(f"target contains a forbidden character {ch!r}")
    match = _SCHEME.match(text)
    if match and text[match.end() : match.end() + 2] == "//":
        scheme = match.group(1).lower()
        if scheme not in DEFAULT_PORTS:
            raise TargetError(f"scheme {scheme!r} is not allowed (only http and https)")
        rest = text[match.end() + 2 :]
        cut = len(rest)
        for sep in "/?#":
            at = rest.find(sep)
            if 0 <= at < cut:
                cut = at
        authority, tail = rest[:cut], rest[cut:]
        if "@" in authority:
            raise TargetError("user info in URLs ('user@host') is refused")
        tail = tail.split("#", 1)[0]
        if not tail.isascii():
            raise TargetError("non-ASCII characters in the path must be percent-encoded")
        path = tail if tail.startswith("/") else "/" + tail
        host, port = _split_authority(authority, DEFAULT_PORTS[scheme])
        return Target(scheme, host, port, path)
    if "/" in text or "@" in text or "?" in text or "#" in text:
        raise TargetError("expected host:port or an http(s) URL")
    host, port = _split_authority(text, None)
    return Target(None, host, port)


def normalize_host(raw: str) -> tuple[str, IPAddress | None]:
    """``(host, ip)``: the canonical host text and, for a literal, the address it spells.

    Raises ``HostError``/``LiteralError`` (both ``ValueError``) for hosts capgate refuses.
    """
    if ":" in raw:
        ip = parse_ip_literal(raw.lower())
        assert ip is not None  # parse_ip_literal raises for every ':' non-literal
        return str(ip), ip
    name = normalize_hostname(raw)  # full-width digits and dots map to ASCII here, before…
    ip = parse_ip_literal(name)  # …the literal test (full-width '127.0.0.1' is a literal)
    if ip is not None:
        return str(ip), ip
    return name, None


class NetworkRules:
    """The compiled network section of a policy. ``resolver``: ``(host, port) -> [ip, ...]``
    (default: ``SystemResolver`` — ``getaddrinfo`` with a 5 s deadline)."""

    def __init__(
        self, policy: Policy, resolver: Callable[[str, int], Sequence[str]] | None = None, *, resolve: bool = True
    ) -> None:
        # resolve=False: names are resolved and their addresses judged by someone else — the
        # egress proxy, for a soft-sandboxed child that may not look names up itself. An
        # allowed name then yields an Endpoint with no addresses, which only a tunnel through
        # that proxy can use.
        self.resolve = resolve
        self.policy = policy
        network = policy.network
        self.enabled = network.enabled
        self.allowed_ports = frozenset(network.allowed_ports)
        self.allowed = DomainRules(network.allowed_domains)
        self.denied = DomainRules([d.domain for d in network.denied_domains])
        self.denied_reasons = tuple(d.reason for d in network.denied_domains)
        self.addresses = AddressRules(network.allowed_addresses, network.allowed_ports)
        self.unix_sockets = frozenset(network.allowed_unix_sockets)
        if resolver is None:
            from capgate.resolver import SystemResolver

            resolver = SystemResolver()
        if network.resolve:
            resolver = _Pinned(network.resolve, resolver)
        self.resolver = resolver

    # -- TCP ----------------------------------------------------------------------------
    def decide(self, target: str) -> tuple[Decision, Endpoint | None]:
        """Decide ``net.connect`` to ``target``; never raises (an error is a denial)."""
        try:
            return self._decide(target)
        except Exception as exc:  # fail closed
            return Decision.deny(f"error while deciding: {exc}", "network.error", _shown(target)), None

    def _decide(self, target: str) -> tuple[Decision, Endpoint | None]:
        if not self.enabled:
            return _offline(_shown(target)), None
        try:
            parsed = parse_target(target)
        except TargetError as exc:
            return Decision.deny(f"refused target: {exc}", "network.target", _shown(target)), None
        return self.decide_parsed(parsed)

    def decide_parsed(self, parsed: Target) -> tuple[Decision, Endpoint | None]:
        """Decide an already parsed target (``net.fetch`` and the proxy parse once)."""
        try:
            return self._decide_parsed(parsed)
        except Exception as exc:  # fail closed
            return Decision.deny(f"error while deciding: {exc}", "network.error", _shown(parsed.host)), None

    def _decide_parsed(self, parsed: Target) -> tuple[Decision, Endpoint | None]:
        if not self.enabled:
            return _offline(_shown(parsed.host)), None
        port = parsed.port
        try:
            host, ip = normalize_host(parsed.host)
        except (HostError, LiteralError) as exc:
            return Decision.deny(f"refused host: {exc}", "network.target", _shown(parsed.host)), None
        shown = format_hostport(host, port)
        if ip is not None:
            return self._decide_literal(ip, port, shown)
        index, _ = self.denied.find(host, port, None)
        if index is not None:
            reason = self.denied_reasons[index]
            text = f"denied by deniedDomains '{self.denied.entries[index]}'" + (f": {reason}" if reason else "")
            return Decision.deny(text, f"network.deniedDomains[{index}]", shown), None
        index, port_ok = self.allowed.find(host, port, self.allowed_ports)
        if index is None:
            return Decision.deny(f"{host} is not in allowedDomains", "network.allowedDomains", shown), None
        entry = self.allowed.entries[index]
        if not port_ok:
            ports = sorted(self.allowed_ports) if entry.port is None else [entry.port]
            rule = "network.allowedPorts" if entry.port is None else f"network.allowedDomains[{index}]"
            return Decision.deny(f"port {port} is not allowed for {host} (allowed: {ports})", rule, shown), None
        rule = f"network.allowedDomains[{index}]"
        if not self.resolve:
            return Decision.allow(f"allowedDomains '{entry}' (addresses judged by the egress proxy)", rule,
                                  shown), Endpoint(host, port, ())
        try:
            raw = list(self.resolver(host, port))
        except Exception as exc:
            return Decision.deny(f"{host} did not resolve: {exc}", "network.resolve", shown), None
        if not raw:
            return Decision.deny(f"{host} resolved to no address", "network.resolve", shown), None
        checked: list[str] = []
        for text in raw[:MAX_ADDRESSES]:
            denial = self._judge_resolved(host, text, port, shown)
            if isinstance(denial, Decision):
                return denial, None
            if denial not in checked:
                checked.append(denial)
        endpoint = Endpoint(host, port, tuple(checked))
        return Decision.allow(f"allowedDomains '{entry}'", rule, shown), endpoint

    def _judge_resolved(self, host: str, text: object, port: int, shown: str) -> str | Decision:
        if not isinstance(text, str) or "%" in text:
            return Decision.deny(f"{host} resolved to {text!r}: not a plain IP address", "network.resolve", shown)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return Decision.deny(f"{host} resolved to {text!r}: not an IP address", "network.resolve", shown)
        kind = classify(ip)
        if kind is None:
            return str(ip)
        index, port_ok = self.addresses.match(ip, port)
        if index is not None and port_ok:
            return str(ip)
        return Decision.deny(
            f"{host} resolves to {ip} ({kind}), which is not in allowedAddresses (DNS rebinding or an internal name)",
            "network.allowedAddresses",
            shown,
        )

    def _decide_literal(self, ip: IPAddress, port: int, shown: str) -> tuple[Decision, Endpoint | None]:
        index, port_ok = self.addresses.match(ip, port)
        kind = classify(ip) or "public"
        if index is None:
            return Decision.deny(
                f"IP address {ip} ({kind}) is not in allowedAddresses", "network.allowedAddresses", shown
            ), None
        if not port_ok:
            return Decision.deny(
                f"port {port} is not allowed for {ip} (allowedAddresses[{index}] / allowedPorts)",
                f"network.allowedAddresses[{index}]",
                shown,
            ), None
        address = str(ip.ipv4_mapped) if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else str(ip)
        endpoint = Endpoint(str(ip), port, (address,))
        return Decision.allow(f"allowedAddresses entry for {ip}", f"network.allowedAddresses[{index}]", shown), endpoint

    # -- Unix sockets -------------------------------------------------------------------
    def decide_unix(self, path: str) -> Decision:
        """Decide a Unix-socket connect to ``path`` (made canonical here; listed paths only)."""
        try:
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if not isinstance(path, str) or not path:
                return Decision.deny("not a socket path", "network.allowedUnixSockets", "unix:?")
            if path.startswith(("\x00", "@")):
                return Decision.deny(
                    "abstract unix sockets are not allowed", "network.allowedUnixSockets", "unix:@" + path[1:]
                )
            if "\x00" in path:
                return Decision.deny("NUL in socket path", "network.allowedUnixSockets", "unix:?")
            canonical = os.path.realpath(os.path.join(self.policy.workspace, path))
            if canonical in self.unix_sockets:
                return Decision.allow("listed unix socket", "network.allowedUnixSockets", canonical)
            return Decision.deny(
                "unix socket not listed in allowedUnixSockets", "network.allowedUnixSockets", canonical
            )
        except Exception as exc:
            return Decision.deny(f"error while deciding: {exc}", "network.error", "unix:?")


class _Pinned:
    """``--resolve`` entries first (exact name and port), the given resolver for the rest."""

    def __init__(self, entries: Sequence[ResolveEntry], fallback: Callable[[str, int], Sequence[str]]) -> None:
        self.table = {(e.host, e.port): e.address for e in entries}
        self.fallback = fallback

    def __call__(self, host: str, port: int) -> Sequence[str]:
        address = self.table.get((host.lower().rstrip("."), port))
        return [address] if address is not None else self.fallback(host, port)


def _offline(shown: str) -> Decision:
    return Decision.deny("network access is disabled (offline mode)", "network.enabled", shown)


def _shown(target: object) -> str:
    text = target if isinstance(target, str) else f"<{type(target).__name__}>"
    text = "".join(ch if 0x20 < ord(ch) < 0x7F or ord(ch) >= 0xA0 else f"\\x{ord(ch):02x}" for ch in text)
    return text[:200]
