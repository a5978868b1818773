"""Review round 8, ``capgate export kubernetes``: a policy that allows no port at all
(``allowedPorts: []``, names and addresses without a port) lets nothing out through the gate,
but the export wrote its egress rules with ``ports: []`` — which Kubernetes NetworkPolicy and
Cilium both read as *every* port: with ``--egress cilium`` the run's own pod could reach the
listed name and address on any port, the cluster enforcing more than nothing where the gate
allows nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capgate.export import kubernetes
from capgate.policy.load import load_policy
from capgate.policy.sources import Grants


def _export(tmp_path: Path, ports: list[int], egress: str) -> list[dict[str, Any]]:
    ws, home = tmp_path / "ws", tmp_path / "home"
    ws.mkdir(parents=True)
    home.mkdir(parents=True)
    (ws / "agent-permissions.json").write_text(json.dumps({"network": {"allowedPorts": ports}}))
    policy = load_policy(str(ws / "agent-permissions.json"), workspace=str(ws), home=str(home),
                         grants=Grants(net=("api.example.com", "*.example.org", "203.0.113.7")))
    return kubernetes(policy, image="localhost/capgate:test", command=["python3", "agent.py"], egress=egress,
                      name="t")


def _egress_port_lists(objects: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Every egress rule's port list, with the object it is in (a rule with no list: ``[]``)."""
    out: list[tuple[str, list[Any]]] = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "NetworkPolicy":
            out += [(name, rule.get("ports", [])) for rule in obj["spec"].get("egress", [])]
        elif obj["kind"] == "CiliumNetworkPolicy":
            for rule in obj["spec"].get("egress", []):
                out += [(name, p.get("ports", [])) for p in rule.get("toPorts", [{}])]
    return out


@pytest.mark.parametrize("egress", ["cilium", "proxy"])
def test_no_allowed_port_never_becomes_every_port(tmp_path: Path, egress: str) -> None:
    objects = _export(tmp_path, [], egress)
    lists = _egress_port_lists(objects)
    assert all(ports for _name, ports in lists), [n for n, p in lists if not p]
    rules = [r for o in objects if o["kind"] in ("NetworkPolicy", "CiliumNetworkPolicy")
             for r in o["spec"].get("egress", [])]
    assert not any("toFQDNs" in r or "toCIDR" in r or "ipBlock" in json.dumps(r) for r in rules)


@pytest.mark.parametrize("egress", ["cilium", "proxy"])
def test_control_listed_ports_are_written(tmp_path: Path, egress: str) -> None:
    lists = _egress_port_lists(_export(tmp_path, [443], egress))
    assert all(ports for _name, ports in lists)
    flat = json.dumps(lists)
    assert '"port": 443' in flat or '"port": "443"' in flat
