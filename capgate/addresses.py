"""IP addresses: literal spellings, special-purpose ranges, and ``allowedAddresses`` entries.

What this module enforces (as the pieces ``netrules`` asks about):

- **Literal spotting.** ``parse_ip_literal`` recognises every IPv4 spelling the C resolver
  accepts (``127.1``, ``2130706433``, ``0x7f000001``, ``0x7f.0.0.1``, ``0177.0.0.1`` —
  ``inet_aton`` is the judge, as it is for ``getaddrinfo``) and refuses numeric-looking names that
  ``inet_aton`` rejects (``1.2.3.4.5``, ``08.0.0.1``, ``4294967296``) instead of letting a
  resolver guess. IPv6 literals with a zone id (``fe80::1%eth0``) are refused.
- **Classification.** ``classify`` names the special-purpose range an address is in, from
  capgate's own tables (never ``ipaddress.is_global``/``is_private``, whose answers change between
  Python versions): loopback, private, carrier-grade NAT, link-local, cloud metadata, multicast,
  unspecified, broadcast, reserved, documentation, benchmarking; IPv4 embedded in IPv6
  (IPv4-mapped, -compatible, SIIT, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo
  ``2001::/32``) is unwrapped and named with what it carries; IPv6 outside ``2000::/3`` is
  reserved. ``None`` means an ordinary public address.
- **Policy entries.** ``normalize_address_entry`` accepts ``ip``, ``cidr``, ``ip:port``,
  ``cidr:port``, ``[v6]:port``, ``[v6/len]:port`` in canonical dotted-quad / RFC 5952 form only
  (a policy is no place for ``127.1``) and writes them back canonically; IPv4-mapped IPv6 entries
  are stored as the IPv4 they name. ``address_entry_within`` is the restrict-only merge test.

Not enforced here: what is allowed (``netrules`` decides), and routing facts the kernel may
know better (a public address that your network routes somewhere private is still public here).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from capgate.errors import PolicyError

__all__ = [
    "AddressEntry",
    "AddressRules",
    "IPAddress",
    "LiteralError",
    "address_entry_within",
    "classify",
    "embedded_ipv4",
    "format_hostport",
    "normalize_address_entry",
    "parse_address_entry",
    "parse_ip_literal",
    "special_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class LiteralError(ValueError):
    """A host that is, or pretends to be, an IP literal capgate will not interpret."""


# ---------------------------------------------------------------------------------------------
# Literal spotting
# ---------------------------------------------------------------------------------------------

# Characters ``inet_aton`` can consume as a number (decimal, octal, hex) and the dots between.
_NUMERIC_ISH = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
# A label that a URL parser (WHATWG) or a resolver would read as a number.
_NUMBER_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, or ``None`` for a name.

    ``host`` is lowercase, without brackets and without a trailing dot. Raises
    ``LiteralError`` for a zone id or a numeric-looking host the C library would not accept.
    """
    if ":" in host:
        if "%" in host:
            raise LiteralError("IPv6 zone ids are not allowed")
        try:
            socket.inet_pton(socket.AF_INET6, host)
            return ipaddress.IPv6Address(host)
        except (OSError, ValueError):
            raise LiteralError(f"{host!r} is not a valid IPv6 address") from None
    if _NUMERIC_ISH.match(host):
        labels = host.split(".")
        if all(_NUMBER_LABEL.match(label) for label in labels):
            try:
                # inet_aton stops at whitespace; the regex above already excluded it.
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                raise LiteralError(f"{host!r} looks like an IPv4 address but is not one") from None
    # A name whose last label is a number is parsed as an IPv4 address by URL parsers and
    # some resolvers ("1.2.3.4.5", "evil.0x7f"): refuse rather than guess which one wins.
    last = host.rsplit(".", 1)[-1]
    if last and _NUMBER_LABEL.match(last):
        raise LiteralError(f"{host!r} ends in a numeric label: neither a name nor an address")
    return None


# ---------------------------------------------------------------------------------------------
# Special-purpose ranges (own tables: ipaddress flags differ between Python versions)
# ---------------------------------------------------------------------------------------------

_V4_TABLE: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", "cloud metadata"),
    ("168.63.129.16/32", "cloud metadata"),  # Azure platform endpoint (a public-range address)
    ("255.255.255.255/32", "broadcast"),
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),  # also Alibaba's metadata 100.100.100.200
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments; 192.0.0.192 is Oracle metadata
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)

_V6_TABLE: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("100::/64", "reserved"),  # discard-only
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),  # SRv6 SIDs
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "multicast"),
)


def special_networks() -> tuple[str, ...]:
    """Every range the address rules deny unless listed (IPv4 then IPv6), as CIDR text: what
    a cluster-level egress rule (``capgate export kubernetes``) leaves out of "the internet"."""
    return tuple(cidr for cidr, _ in (*_V4_TABLE, *_V6_TABLE))


def _compile(table: tuple[tuple[str, str], ...]) -> tuple[tuple[int, int, str], ...]:
    out = []
    for cidr, name in table:
        net = ipaddress.ip_network(cidr)
        out.append((int(net.network_address), int(net.broadcast_address), name))
    return tuple(out)


_V4_RANGES = _compile(_V4_TABLE)
_V6_RANGES = _compile(_V6_TABLE)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_IETF_V6 = ipaddress.IPv6Network("2001::/23")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the name of the form, or ``None``."""
    value = int(ip)
    high96 = value >> 32
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if high96 == 0xFFFF:
        return "IPv4-mapped", low32
    if high96 == 0xFFFF << 16:  # ::ffff:0:a.b.c.d
        return "IPv4-translated (SIIT)", low32
    if high96 == 0 and value > 1:
        return "IPv4-compatible", low32
    if high96 == 0x0064FF9B << 64:
        return "NAT64", low32
    if value >> 112 == 0x2002:
        return "6to4", ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:
        return "Teredo", ipaddress.IPv4Address(~value & 0xFFFFFFFF)
    return None


def _lookup(ranges: tuple[tuple[int, int, str], ...], value: int) -> str | None:
    for low, high, name in ranges:
        if low <= value <= high:
            return name
    return None


def classify(ip: IPAddress) -> str | None:
    """The special-purpose class of ``ip`` in words, or ``None`` for an ordinary public address.

    IPv6 forms that carry an IPv4 address are always special (``"NAT64 of 127.0.0.1
    (loopback)"``): they reach an IPv4 host by another route and are denied unless listed.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return _lookup(_V4_RANGES, int(ip))
    name = _lookup(_V6_RANGES, int(ip))
    if name is not None:
        return name
    carried = embedded_ipv4(ip)
    if carried is not None:
        form, v4 = carried
        inner = _lookup(_V4_RANGES, int(v4)) or "public"
        return f"{form} of {v4} ({inner})"
    if ip in _IETF_V6:
        return "reserved"
    if ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# allowedAddresses entries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressEntry:
    """One allowed-address entry: an IP network, optionally with a port."""

    network: _Net
    port: int | None

    def __str__(self) -> str:
        net = self.network
        text = str(net.network_address) if net.num_addresses == 1 else str(net)
        if self.port is None:
            return text
        if net.version == 6:
            return f"[{text}]:{self.port}"
        return f"{text}:{self.port}"


_PORT = re.compile(r"^[0-9]{1,5}$")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_STRICT = re.compile(rf"^{_OCTET}(?:\.{_OCTET}){{3}}$")


def _port(text: str) -> int:
    if not _PORT.match(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _network(text: str) -> _Net:
    address, slash, length = text.partition("/")
    if "%" in address:
        raise ValueError("IPv6 zone ids are not allowed")
    if ":" in address:
        ipaddress.IPv6Address(address)  # raises for junk
    elif not _V4_STRICT.match(address):
        raise ValueError("IPv4 addresses are written as four decimal numbers (no '127.1', hex or octal)")
    if slash and not re.match(r"^[0-9]{1,3}$", length):
        raise ValueError(f"prefix length {length!r} is not a number")
    try:
        net: _Net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{exc} (host bits set? write the network address)") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = embedded_ipv4(net.network_address)
        if mapped is not None and mapped[0] == "IPv4-mapped":
            v4 = ipaddress.IPv4Network((int(mapped[1]), net.prefixlen - 96))
            return v4
    return net


def parse_address_entry(entry: str) -> AddressEntry:
    """Parse one ``allowedAddresses`` entry; raises ``ValueError`` with the reason."""
    if not isinstance(entry, str):
        raise ValueError("must be a string")
    if entry != entry.strip() or not entry or any(c.isspace() or ord(c) < 0x20 for c in entry):
        raise ValueError("must not contain whitespace or control characters")
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise ValueError("unclosed '['")
        inside, rest = entry[1:close], entry[close + 1 :]
        if ":" not in inside:
            raise ValueError("brackets are only for IPv6 addresses")
        if rest.startswith("/") and ":" in rest:  # "[v6]/len:port"
            length, _, port_text = rest[1:].partition(":")
            return AddressEntry(_network(f"{inside}/{length}"), _port(port_text))
        if rest == "":
            return AddressEntry(_network(inside), None)
        if not rest.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        return AddressEntry(_network(inside), _port(rest[1:]))
    if entry.count(":") == 1:  # IPv4 with a port
        address, _, port_text = entry.partition(":")
        return AddressEntry(_network(address), _port(port_text))
    return AddressEntry(_network(entry), None)


def normalize_address_entry(entry: str, key: str) -> str:
    """The canonical spelling of an ``allowedAddresses`` entry, or ``PolicyError`` naming ``key``."""
    try:
        return str(parse_address_entry(entry))
    except ValueError as exc:
        raise PolicyError(f"{key} {entry!r}: not an IP address or CIDR with optional port: {exc}", key) from None


def _net_within(inner: _Net, outer: _Net) -> bool:
    if inner.version != outer.version:
        return False
    return inner.subnet_of(outer)  # type: ignore[arg-type]


def address_entry_within(entry: str, base: Sequence[str]) -> bool:
    """Is ``entry`` (canonical) no wider than some ``base`` entry (restrict-only merge)?

    An entry without a port stands for the policy's ``allowedPorts``; it is within a base entry
    only if that entry has no port either.
    """
    try:
        mine = parse_address_entry(entry)
    except ValueError:
        return False
    for text in base:
        try:
            theirs = parse_address_entry(text)
        except ValueError:
            continue
        if not _net_within(mine.network, theirs.network):
            continue
        if theirs.port is None or theirs.port == mine.port:
            return True
    return False


class AddressRules:
    """``allowedAddresses`` compiled once: which entry (index) lets ``ip:port`` through."""

    def __init__(self, entries: Sequence[str], allowed_ports: Sequence[int]) -> None:
        self._ports = frozenset(allowed_ports)
        compiled: list[tuple[int, int, int, int | None, int]] = []
        for index, text in enumerate(entries):
            parsed = parse_address_entry(text)
            net = parsed.network
            compiled.append(
                (net.version, int(net.network_address), int(net.broadcast_address), parsed.port, index)
            )
        self._entries = tuple(compiled)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, ip: IPAddress, port: int) -> tuple[int | None, bool]:
        """``(index, port_ok)``: the first entry holding ``ip`` whose port rule admits ``port``
        (``port_ok`` True), else the first entry holding ``ip`` at all (``port_ok`` False), else
        ``(None, False)``. IPv4-mapped IPv6 matches entries for the IPv4 it carries."""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        first_holder: int | None = None
        for candidate in candidates:
            value = int(candidate)
            for version, low, high, entry_port, index in self._entries:
                if version != candidate.version or not low <= value <= high:
                    continue
                if (entry_port is None and port in self._ports) or entry_port == port:
                    return index, True
                if first_holder is None:
                    first_holder = index
        return first_holder, False
