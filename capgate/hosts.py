"""Host names: one normal form for names in targets and in ``allowedDomains``/``deniedDomains``.

What this module enforces:

- **One spelling per name.** ``normalize_hostname`` lowercases, strips one trailing dot, maps
  Unicode through IDNA/UTS 46 to punycode (full-width letters and dots, ``ß``, ignorable
  characters are mapped the way browsers map them), checks every ``xn--`` label decodes, and
  refuses what no client should be guessing at: empty labels, labels over 63 or names over 253
  octets, whitespace, control characters, NUL, ``%``, ``\\``, ``@``, ``/`` and any other character
  outside letters, digits, ``-`` and ``_``. Numeric-looking names are left to
  ``addresses.parse_ip_literal`` (``split_host`` calls it first).
- **Entries.** ``normalize_domain_entry`` accepts ``host``, ``*.host``, ``host:port`` and
  ``*.host:port``; a ``*.`` wildcard matches subdomains at any depth, never the base name and
  never ``base.evil.com``. A wildcard at or above a public suffix (``*.com``, ``*.co.uk``,
  ``*.github.io``) is a ``PolicyError`` in ``allowedDomains`` — the suffix list is tldextract's
  bundled snapshot, built offline, never fetched. In ``deniedDomains`` such a wildcard only
  narrows and is accepted. IP literals belong in ``allowedAddresses`` and are refused here.
  TLDs missing from the suffix list (``.test``, ``.internal``, ``.local``) are fine.
- ``DomainRules`` compiles the entries once; ``domain_entry_within`` is the restrict-only test.

Not enforced here: what a name resolves to (``netrules`` judges every resolved address), and
confusable-but-different names (``examp1e.com`` is simply another name that is not listed).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from capgate.errors import PolicyError

__all__ = [
    "DomainEntry",
    "DomainRules",
    "HostError",
    "domain_entry_within",
    "normalize_domain_entry",
    "normalize_hostname",
    "parse_domain_entry",
]


class HostError(ValueError):
    """A host name capgate refuses to interpret."""


_ASCII_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_DOTS = ("\u3002", "\uff0e", "\uff61")  # UTS 46 label separators besides '.'


def _check_ascii_label(label: str, name: str) -> None:
    if not label:
        raise HostError(f"{name!r} has an empty label")
    if not _ASCII_LABEL.match(label):
        raise HostError(f"{name!r} has an invalid label {label!r}")
    if label.startswith("xn--"):
        import idna

        try:
            idna.decode(label)
        except idna.IDNAError as exc:
            raise HostError(f"{name!r}: bad punycode label {label!r} ({exc})") from None
    elif label[2:4] == "--":
        raise HostError(f"{name!r}: label {label!r} uses a reserved '??--' prefix")


@functools.lru_cache(maxsize=4096)
def normalize_hostname(raw: str) -> str:
    """The canonical ASCII form of a host *name* (not an IP literal). Raises ``HostError``."""
    if not isinstance(raw, str):
        raise HostError("a host name must be a string")
    if not raw:
        raise HostError("empty host name")
    if len(raw) > 1024:
        raise HostError("host name too long")
    for ch in raw:
        if ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "%\\@/?#[]:<>\"'`^{|}":
            raise HostError(f"host name {raw!r} contains a forbidden character {ch!r}")
    name = raw
    if not name.isascii():
        import idna

        try:
            name = idna.encode(name, uts46=True, std3_rules=False, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise HostError(f"host name {raw!r} is not a valid internationalized name ({exc})") from None
        # UTS 46 may map to characters that are not allowed in a host (e.g. '/' from U+2100).
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise HostError("empty host name")
    if len(name) > 253:
        raise HostError(f"host name {raw!r} is longer than 253 characters")
    for label in name.split("."):
        _check_ascii_label(label, raw)
    return name


def _ascii_dots(text: str) -> str:
    for dot in _DOTS:
        text = text.replace(dot, ".")
    return text


# ---------------------------------------------------------------------------------------------
# Policy entries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainEntry:
    """One allowed-domain entry: a host or ``*.host`` wildcard, optionally with a port."""

    host: str  # normalized base name (without "*.")
    wildcard: bool
    port: int | None

    def __str__(self) -> str:
        text = ("*." if self.wildcard else "") + self.host
        return text if self.port is None else f"{text}:{self.port}"

    def matches_host(self, host: str) -> bool:
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@functools.lru_cache(maxsize=1)
def _extractor() -> Any:
    import tldextract

    # Offline: no suffix-list URLs, no cache dir, the snapshot bundled with the package.
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True, include_psl_private_domains=True
    )


def _is_public_suffix_or_above(host: str) -> bool:
    result = _extractor()(host)
    # No registrable part: the name is a public suffix (com, co.uk, github.io) or above one.
    return bool(result.suffix) and not result.domain


def parse_domain_entry(entry: str, *, allow_public_wildcard: bool = False) -> DomainEntry:
    """Parse one ``allowedDomains``/``deniedDomains`` entry; raises ``ValueError``."""
    if not isinstance(entry, str):
        raise ValueError("must be a string")
    if not entry or entry != entry.strip():
        raise ValueError("must not be empty or have surrounding whitespace")
    if "://" in entry or "/" in entry:
        raise ValueError("write a host name (api.example.com), not a URL")
    if "@" in entry:
        raise ValueError("a host entry cannot hold user info ('@')")
    text = _ascii_dots(entry)
    port: int | None = None
    if text.startswith("["):
        raise ValueError("IP addresses belong in network.allowedAddresses")
    if text.count(":") == 1:
        text, _, port_text = text.partition(":")
        if not re.match(r"^[0-9]{1,5}$", port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    elif ":" in text:
        raise ValueError("IP addresses belong in network.allowedAddresses")
    wildcard = False
    if text.startswith("*."):
        wildcard = True
        text = text[2:]
    if "*" in text:
        raise ValueError("the only wildcard form is a leading '*.' (*.example.org)")
    try:
        host = normalize_hostname(text)
    except HostError as exc:
        raise ValueError(str(exc)) from None
    from capgate.addresses import LiteralError, parse_ip_literal

    try:
        literal = parse_ip_literal(host)
    except LiteralError as exc:
        raise ValueError(str(exc)) from None
    if literal is not None:
        raise ValueError("IP addresses belong in network.allowedAddresses")
    if wildcard and not allow_public_wildcard and _is_public_suffix_or_above(host):
        raise ValueError(
            f"'*.{host}' matches every name under the public suffix {host!r}; list the registrable domain "
            f"(*.example.{host})"
        )
    return DomainEntry(host, wildcard, port)


def normalize_domain_entry(entry: str, key: str) -> str:
    """The canonical spelling of a domain entry, or ``PolicyError`` naming ``key``."""
    denied = "deniedDomains" in key
    try:
        return str(parse_domain_entry(entry, allow_public_wildcard=denied))
    except ValueError as exc:
        raise PolicyError(f"{key} {entry!r}: {exc}", key) from None


def domain_entry_within(entry: str, base: Sequence[str], ports: Sequence[int]) -> bool:
    """Is ``entry`` no wider than some ``base`` entry? An entry without a port stands for
    ``ports`` (the base policy's ``allowedPorts``)."""
    try:
        mine = parse_domain_entry(entry, allow_public_wildcard=True)
    except ValueError:
        return False
    mine_ports = {mine.port} if mine.port is not None else set(ports)
    for text in base:
        try:
            theirs = parse_domain_entry(text, allow_public_wildcard=True)
        except ValueError:
            continue
        their_ports = {theirs.port} if theirs.port is not None else set(ports)
        if not mine_ports <= their_ports:
            continue
        if mine.wildcard:
            if theirs.wildcard and (mine.host == theirs.host or mine.host.endswith("." + theirs.host)):
                return True
        elif theirs.matches_host(mine.host):
            return True
    return False


class DomainRules:
    """Entries compiled once: ``find(host, port)`` gives the first matching entry's index."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = tuple(parse_domain_entry(text, allow_public_wildcard=True) for text in entries)
        self._exact: dict[str, list[int]] = {}
        self._wild: dict[str, list[int]] = {}
        for index, item in enumerate(self.entries):
            table = self._wild if item.wildcard else self._exact
            table.setdefault(item.host, []).append(index)

    def candidates(self, host: str) -> list[int]:
        """Indexes of entries whose host part matches ``host``, in policy order."""
        found = list(self._exact.get(host, ()))
        if self._wild:
            rest = host
            while "." in rest:
                rest = rest.split(".", 1)[1]
                found.extend(self._wild.get(rest, ()))
        return sorted(found)

    def find(self, host: str, port: int, default_ports: Collection[int] | None) -> tuple[int | None, bool]:
        """``(index, port_ok)`` of the first entry matching ``host`` whose port rule admits
        ``port``; else the first host match with ``port_ok`` False; else ``(None, False)``.
        ``default_ports`` None means an entry without a port matches every port (deny lists)."""
        first: int | None = None
        for index in self.candidates(host):
            entry_port = self.entries[index].port
            if entry_port is None:
                if default_ports is None or port in default_ports:
                    return index, True
            elif entry_port == port:
                return index, True
            if first is None:
                first = index
        return first, False
