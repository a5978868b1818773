"""Host normalization and domain entries: one spelling per name, strict entries, public-suffix
wildcards refused offline, restrict-only merge."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import capgate
from capgate import hosts
from capgate.hosts import HostError, domain_entry_within, normalize_domain_entry, normalize_hostname

KEY = "network.allowedDomains[0]"


@pytest.mark.parametrize(("raw", "expected"), [
    ("api.example.com", "api.example.com"),
    ("API.Example.COM.", "api.example.com"),
    ("Bücher.example", "xn--bcher-kva.example"),
    ("ａｐｉ.example.com", "api.example.com"),  # noqa: RUF001 - full-width on purpose
    ("api\u3002example\u3002com", "api.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("_dmarc.example.com", "_dmarc.example.com"),
    ("localhost", "localhost"),
])
def test_normalize_hostname(raw: str, expected: str) -> None:
    assert normalize_hostname(raw) == expected


@pytest.mark.parametrize("raw", [
    "", ".", "a..b", "example.com..", "ex ample.com", "evil.com\x00.ok", "a%2eb", "a\\b", "user@host", "a/b",
    "xn--zz.com", "-bad.com", "bad-.com", "x" * 64 + ".com", ("a." * 127) + "com", "a\tb", "ab--c.com",
    "host:80", "[::1]", "a\u00a0b.com",
])
def test_normalize_hostname_refuses(raw: str) -> None:
    with pytest.raises(HostError):
        normalize_hostname(raw)


@pytest.mark.parametrize(("entry", "expected"), [
    ("api.example.com", "api.example.com"),
    ("API.EXAMPLE.COM.", "api.example.com"),
    ("*.example.org", "*.example.org"),
    ("files.example.net:8443", "files.example.net:8443"),
    ("*.Example.org:0443", "*.example.org:443"),
    ("*.example.github.io", "*.example.github.io"),
    ("*.test", "*.test"),
    ("*.corp.internal", "*.corp.internal"),
    ("*.internal", "*.internal"),
    ("*.local", "*.local"),
    ("bücher.example", "xn--bcher-kva.example"),
])
def test_domain_entries_normalized(entry: str, expected: str) -> None:
    assert normalize_domain_entry(entry, KEY) == expected


@pytest.mark.parametrize("entry", [
    "*.com", "*.co.uk", "*.uk", "*.github.io", "*.s3.amazonaws.com", "*.blogspot.com", "*.xn--p1ai", "*.рф",
    "*.COM.", "*", "*.*.example.com", "a.*.example.com", "*example.com", "ex*ample.com",
    "https://api.example.com", "api.example.com/path", "user@api.example.com", "127.0.0.1", "2130706433",
    "[::1]:443", "::1", "api.example.com:0", "api.example.com:65536", "api.example.com:http", " api.example.com",
    "api.example.com ", "", "a..b.com", "evil.0x7f", "1.2.3.4.5",
])
def test_bad_domain_entries_are_policy_errors(entry: str) -> None:
    with pytest.raises(capgate.PolicyError) as info:
        normalize_domain_entry(entry, KEY)
    assert info.value.key == KEY and KEY in str(info.value)


def test_public_suffix_wildcard_is_fine_in_denied_domains() -> None:
    assert normalize_domain_entry("*.com", "network.deniedDomains[0]") == "*.com"


def test_suffix_list_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> object:
        raise AssertionError("tldextract tried to use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    hosts._extractor.cache_clear()
    try:
        with pytest.raises(capgate.PolicyError):
            normalize_domain_entry("*.co.uk", KEY)
        assert normalize_domain_entry("*.example.co.uk", KEY) == "*.example.co.uk"
    finally:
        hosts._extractor.cache_clear()


@pytest.mark.parametrize(("entry", "base", "within"), [
    ("api.example.com", ["api.example.com"], True),
    ("api.example.com", ["*.example.com"], True),
    ("a.b.example.com", ["*.example.com"], True),
    ("*.b.example.com", ["*.example.com"], True),
    ("*.example.com", ["*.example.com"], True),
    ("example.com", ["*.example.com"], False),
    ("*.example.com", ["example.com"], False),
    ("*.example.com", ["api.example.com"], False),
    ("evil.com", ["api.example.com"], False),
    ("api.example.com.evil.com", ["api.example.com"], False),
    ("api.example.com:443", ["api.example.com"], True),
    ("api.example.com:8443", ["api.example.com"], False),
    ("api.example.com", ["api.example.com:8443"], False),
    ("api.example.com:8443", ["api.example.com:8443"], True),
])
def test_domain_entry_within(entry: str, base: list[str], within: bool) -> None:
    assert domain_entry_within(entry, base, [443]) is within


def _write(tmp_path: Path, network: dict[str, object]) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "network": network}))
    return path


def test_policy_load_normalizes_and_refuses(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    policy = capgate.load_policy(_write(tmp_path, {"allowedDomains": ["API.Example.com.", "*.example.org"],
                                                   "allowedAddresses": ["127.0.0.1:8080", "::ffff:10.0.0.0/104"]}),
                                 workspace=ws, allow_user_expansion=True)
    assert policy.network.allowed_domains == ("api.example.com", "*.example.org")
    assert policy.network.allowed_addresses == ("127.0.0.1:8080", "10.0.0.0/8")
    with pytest.raises(capgate.PolicyError, match=r"allowedDomains\[1\]"):
        capgate.load_policy(_write(tmp_path, {"allowedDomains": ["ok.example", "*.github.io"]}),
                            workspace=ws, allow_user_expansion=True)
    # Restrict-only: the defaults allow no domain, so a user file cannot add one.
    with pytest.raises(capgate.PolicyError, match="allowedDomains"):
        capgate.load_policy(_write(tmp_path, {"allowedDomains": ["api.example.com"]}), workspace=ws)
