"""IP literals, special-purpose classes (own tables, embedded IPv4 unwrapped) and
allowedAddresses entries."""

from __future__ import annotations

import ipaddress

import pytest

import capgate
from capgate.addresses import (
    AddressRules,
    LiteralError,
    address_entry_within,
    classify,
    embedded_ipv4,
    normalize_address_entry,
    parse_ip_literal,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0", "0.0.0.0"), ("0x0a.0x0.0.1", "10.0.0.1"),
    ("::1", "::1"), ("::ffff:127.0.0.1", "::ffff:7f00:1"), ("0:0:0:0:0:0:0:1", "::1"),
])
def test_literals_in_every_resolver_spelling(text: str, expected: str) -> None:
    assert str(parse_ip_literal(text)) == expected


@pytest.mark.parametrize("text", ["example.com", "localhost", "a1.example", "0x7f.example", "deadbeef.com"])
def test_names_are_not_literals(text: str) -> None:
    assert parse_ip_literal(text) is None


@pytest.mark.parametrize("text", ["1.2.3.4.5", "08.0.0.1", "4294967296", "0x100000000", "evil.0x7f", "a.123",
                                  "fe80::1%eth0", ":::1", "1:2:3:4:5:6:7:8:9"])
def test_ambiguous_numeric_hosts_refused(text: str) -> None:
    with pytest.raises(LiteralError):
        parse_ip_literal(text)


@pytest.mark.parametrize(("text", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("10.1.2.3", "private"), ("172.31.0.1", "private"),
    ("192.168.0.1", "private"), ("100.64.0.1", "carrier-grade NAT"), ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"), ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"), ("192.0.0.192", "reserved"), ("::1", "loopback"), ("::", "unspecified"),
    ("fe80::1", "link-local"), ("fc00::1", "private"), ("fd00:ec2::254", "cloud metadata"),
    ("ff02::1", "multicast"), ("2001:db8::1", "documentation"), ("100::1", "reserved"), ("4000::1", "reserved"),
    ("::ffff:127.0.0.1", "IPv4-mapped of 127.0.0.1 (loopback)"),
    ("::127.0.0.1", "IPv4-compatible of 127.0.0.1 (loopback)"),
    ("::ffff:0:a00:1", "IPv4-translated (SIIT) of 10.0.0.1 (private)"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254 (cloud metadata)"),
    ("2002:7f00:1::", "6to4 of 127.0.0.1 (loopback)"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo of 127.0.0.1 (loopback)"),
    ("::ffff:8.8.8.8", "IPv4-mapped of 8.8.8.8 (public)"),
])
def test_special_classes(text: str, kind: str) -> None:
    assert classify(ipaddress.ip_address(text)) == kind


@pytest.mark.parametrize("text", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:2800:220:1:248:1893:25c8:1946",
                                  "2a00:1450:4001::1"])
def test_public_addresses(text: str) -> None:
    assert classify(ipaddress.ip_address(text)) is None


def test_embedded_ipv4_forms() -> None:
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1")) is None
    form, v4 = embedded_ipv4(ipaddress.IPv6Address("2002:0a00:0001::"))  # type: ignore[misc]
    assert (form, str(v4)) == ("6to4", "10.0.0.1")


@pytest.mark.parametrize(("entry", "canonical"), [
    ("127.0.0.1", "127.0.0.1"), ("10.0.0.0/8", "10.0.0.0/8"), ("127.0.0.1:8080", "127.0.0.1:8080"),
    ("10.0.0.0/8:443", "10.0.0.0/8:443"), ("::1", "::1"), ("[::1]:8080", "[::1]:8080"),
    ("[fd00::/8]:443", "[fd00::/8]:443"), ("FD00:0::/8", "fd00::/8"), ("::ffff:127.0.0.1", "127.0.0.1"),
    ("198.51.100.7/32", "198.51.100.7"), ("[2001:db8::/32]", "2001:db8::/32"),
])
def test_address_entries(entry: str, canonical: str) -> None:
    assert normalize_address_entry(entry, "network.allowedAddresses[0]") == canonical


@pytest.mark.parametrize("entry", [
    "127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "10.0.0.1/8", "10.0.0.0/33", "127.0.0.1:0",
    "127.0.0.1:65536", "127.0.0.1:http", "fe80::1%eth0", "[::1", "[127.0.0.1]:80", "::1:80:", "example.com",
    " 127.0.0.1", "127.0.0.1 ", "", "10.0.0.0/+8", "1.2.3.4/ 8",
])
def test_bad_address_entries(entry: str) -> None:
    with pytest.raises(capgate.PolicyError) as info:
        normalize_address_entry(entry, "network.allowedAddresses[3]")
    assert info.value.key == "network.allowedAddresses[3]"


@pytest.mark.parametrize(("entry", "base", "within"), [
    ("10.1.0.0/16", ["10.0.0.0/8"], True),
    ("10.0.0.0/8", ["10.1.0.0/16"], False),
    ("127.0.0.1:8080", ["127.0.0.1"], True),
    ("127.0.0.1", ["127.0.0.1:8080"], False),
    ("127.0.0.1:80", ["127.0.0.1:8080"], False),
    ("::1", ["127.0.0.1"], False),
    ("fd00::/16", ["fd00::/8"], True),
])
def test_address_entry_within(entry: str, base: list[str], within: bool) -> None:
    assert address_entry_within(entry, base) is within


def test_address_rules_ports_and_mapped() -> None:
    rules = AddressRules(["127.0.0.1:8080", "10.0.0.0/8"], [443])
    assert rules.match(ipaddress.ip_address("127.0.0.1"), 8080) == (0, True)
    assert rules.match(ipaddress.ip_address("127.0.0.1"), 443) == (0, False)
    assert rules.match(ipaddress.ip_address("::ffff:127.0.0.1"), 8080) == (0, True)
    assert rules.match(ipaddress.ip_address("10.9.9.9"), 443) == (1, True)
    assert rules.match(ipaddress.ip_address("10.9.9.9"), 80) == (1, False)
    assert rules.match(ipaddress.ip_address("11.0.0.1"), 443) == (None, False)
