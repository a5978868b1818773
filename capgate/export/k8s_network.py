"""Egress for the run's pod as cluster objects, and refusal of what a mode cannot enforce.

Three modes (``--egress``):

- ``none``: one NetworkPolicy denying the run's pod all ingress and all egress. A policy that
  lets anything out (network on with a domain or address) is refused: the cluster would block
  what the policy allows, or worse, a user would think it enforced.
- ``proxy``: the same NetworkPolicy allows TCP to the capgate egress proxy (its own Deployment,
  Service and NetworkPolicy: a sidecar would share the pod's network policy and so the
  internet) and DNS to the cluster resolver, unless ``proxy_address`` fixes the Service's
  cluster IP (then no DNS egress at all). The proxy pod runs ``capgate proxy`` with the same
  policy; its own NetworkPolicy admits only the run's pods and lets it reach the internet on the
  policy's ports minus capgate's special ranges (plus the listed addresses).
- ``cilium``: the deny-all NetworkPolicy plus a CiliumNetworkPolicy with ``toFQDNs`` (and DNS
  only for those names through Cilium's DNS proxy). Cilium has no FQDN deny, so a denied
  domain that an allowed wildcard covers is refused.

Every refusal is a ``PolicyError`` naming the key and the mode that would enforce it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from capgate.addresses import parse_address_entry, special_networks
from capgate.errors import PolicyError
from capgate.hosts import DomainEntry, normalize_hostname, parse_domain_entry
from capgate.policy.model import Policy

__all__ = [
    "EGRESS_MODES",
    "PROXY_PORT",
    "check_egress",
    "cilium_spec",
    "dns_egress_rule",
    "egress_rules",
    "lets_anything_out",
    "proxy_egress_rules",
]

EGRESS_MODES = ("none", "proxy", "cilium")
PROXY_PORT = 3128
METADATA_RANGES = ("169.254.0.0/16", "fe80::/10")


def _domains(policy: Policy) -> list[DomainEntry]:
    return [parse_domain_entry(entry, allow_public_wildcard=True) for entry in policy.network.allowed_domains]


def lets_anything_out(policy: Policy) -> bool:
    net = policy.network
    return net.enabled and bool(net.allowed_domains or net.allowed_addresses)


def check_egress(policy: Policy, egress: str) -> None:
    """Refuse (``PolicyError``) a policy whose network rules ``egress`` cannot enforce."""
    net = policy.network
    if egress not in EGRESS_MODES:
        raise PolicyError(f"--egress must be one of {', '.join(EGRESS_MODES)}, not {egress!r}", "--egress")
    if net.allowed_unix_sockets:
        raise PolicyError("network.allowedUnixSockets: a pod has no host sockets (the export never mounts "
                          "hostPath); remove the entries to export this policy", "network.allowedUnixSockets")
    if net.credentials:
        raise PolicyError("network.credentials: the export does not carry secrets into the cluster (the pod's "
                          "proxy would have to hold them, and no Kubernetes Secret wiring is built); remove the "
                          "credentials to export this policy", "network.credentials")
    if net.resolve:
        raise PolicyError("network.resolve: --resolve maps names on this machine only; a pod resolves through "
                          "the cluster's DNS — drop --resolve to export this policy", "network.resolve")
    if egress == "none" and lets_anything_out(policy):
        key = "network.allowedDomains" if net.allowed_domains else "network.allowedAddresses"
        raise PolicyError(f"{key}: --egress none lets nothing out of the pod, so it cannot enforce what this "
                          "policy allows; export with --egress proxy (or cilium), or turn the network off",
                          key)
    if egress == "cilium":
        allowed = _domains(policy)
        for i, denied in enumerate(net.denied_domains):
            name = denied.domain[2:] if denied.domain.startswith("*.") else denied.domain
            host = normalize_hostname(name)
            for entry in allowed:
                covered = entry.matches_host(host) or (entry.wildcard and denied.domain.startswith("*.")
                                                       and (host == entry.host or host.endswith("." + entry.host)))
                if covered or (not entry.wildcard and entry.host == host):
                    raise PolicyError(
                        f"network.deniedDomains[{i}] {denied.domain!r} lies within the allowed {entry}: Cilium "
                        "has no FQDN deny rule, so the cluster would let it through; export with --egress proxy "
                        "(the proxy's gate enforces deny lists)", f"network.deniedDomains[{i}]")


def _ports(policy: Policy) -> list[int]:
    """Every TCP port the policy can allow: allowedPorts and the ports entries name."""
    ports = set(policy.network.allowed_ports)
    for entry in _domains(policy):
        if entry.port is not None:
            ports.add(entry.port)
    for text in policy.network.allowed_addresses:
        port = parse_address_entry(text).port
        if port is not None:
            ports.add(port)
    return sorted(ports)


def _tcp(ports: list[int]) -> list[dict[str, Any]]:
    """A NetworkPolicy ``ports`` list. Never empty: an empty (or missing) ``ports`` matches every
    port, in Kubernetes and in Cilium alike, so a rule for no port must be left out, not written
    with none (``allowedPorts: []`` lets nothing out; ``ports: []`` would let everything)."""
    if not ports:
        raise ValueError("a rule with no port would allow every port")
    return [{"protocol": "TCP", "port": port} for port in ports]


def dns_egress_rule() -> dict[str, Any]:
    """Egress to the cluster resolver (kube-dns / CoreDNS in kube-system), port 53 only."""
    return {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def egress_rules(policy: Policy, egress: str, *, proxy_labels: dict[str, str],
                 proxy_address: str | None) -> list[dict[str, Any]]:
    """The run pod's NetworkPolicy egress rules (empty: deny all)."""
    if egress != "proxy" or not lets_anything_out(policy):
        return []
    rules: list[dict[str, Any]] = [{"to": [{"podSelector": {"matchLabels": dict(proxy_labels)}}],
                                    "ports": _tcp([PROXY_PORT])}]
    if proxy_address is None:
        rules.append(dns_egress_rule())
    return rules


def proxy_egress_rules(policy: Policy) -> list[dict[str, Any]]:
    """The proxy pod's egress: DNS, the internet minus special ranges on the policy's ports, and
    each listed address with its port (the proxy's gate decides every connection again)."""
    ports = _ports(policy)
    v4 = [c for c in special_networks() if ":" not in c]
    v6 = [c for c in special_networks() if ":" in c]
    rules: list[dict[str, Any]] = [dns_egress_rule()]
    if ports:  # (no port at all: nothing goes out, and the rule is left out — see _tcp)
        rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
                             {"ipBlock": {"cidr": "::/0", "except": v6}}], "ports": _tcp(ports)})
    for text in policy.network.allowed_addresses:
        entry = parse_address_entry(text)
        entry_ports = [entry.port] if entry.port is not None else list(policy.network.allowed_ports)
        if entry_ports:
            rules.append({"to": [{"ipBlock": {"cidr": str(entry.network)}}], "ports": _tcp(entry_ports)})
    return rules


def cilium_spec(policy: Policy, pod_labels: dict[str, str]) -> dict[str, Any]:
    """The CiliumNetworkPolicy spec: the listed names (``*.x`` → ``**.x``, any depth), their DNS
    lookups only, listed addresses as CIDRs, and the metadata ranges denied."""
    names_by_port: dict[tuple[int, ...], list[dict[str, str]]] = {}
    dns_names: list[dict[str, str]] = []
    default_ports = tuple(policy.network.allowed_ports)
    for entry in _domains(policy):
        selector = {"matchPattern": f"**.{entry.host}"} if entry.wildcard else {"matchName": entry.host}
        ports = (entry.port,) if entry.port is not None else default_ports
        if not ports:
            continue  # (no port: the name is reachable on none; an empty toPorts would mean all)
        names_by_port.setdefault(ports, []).append(selector)
        if selector not in dns_names:
            dns_names.append(selector)
    egress: list[dict[str, Any]] = []
    if dns_names:
        egress.append({
            "toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                                             "k8s:k8s-app": "kube-dns"}}],
            "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": dns_names}}],
        })
    for ports, selectors in names_by_port.items():
        egress.append({"toFQDNs": selectors,
                       "toPorts": [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}]})
    denied = list(METADATA_RANGES)
    for text in policy.network.allowed_addresses:
        address = parse_address_entry(text)
        ports = (address.port,) if address.port is not None else default_ports
        if not ports:
            continue
        egress.append({"toCIDR": [str(address.network)],
                       "toPorts": [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}]})
        # (a listed address inside a metadata range is the user's explicit choice: keep it reachable)
        denied = [c for c in denied if ipaddress.ip_network(c).version != address.network.version
                  or not ipaddress.ip_network(c).overlaps(address.network)]
    spec: dict[str, Any] = {"endpointSelector": {"matchLabels": dict(pod_labels)}, "egress": egress}
    if denied:
        spec["egressDeny"] = [{"toCIDR": denied}]
    return spec
