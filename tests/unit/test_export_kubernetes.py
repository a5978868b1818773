"""``capgate.export.kubernetes``: hardened objects, refusals, relocation, golden files, CLI."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate.errors import PolicyError
from capgate.export import check_objects, dump_all, kubernetes, pod_from_objects
from capgate.export.k8s_check import parse_quantity
from capgate.policy.sources import Grants
from tests._export_samples import GOLDEN, SAMPLES, Sample, build_policy, export, require


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = pod_from_objects(objects)["spec"]
    return spec


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_every_sample_keeps_the_promises(sample: Sample, tmp_path: Path) -> None:
    objects = export(sample, tmp_path)
    assert check_objects(objects) == []
    spec = _pod_spec(objects)
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] > 0
    assert container["command"][:5] == ["/opt/capgate/bin/python", "-m", "capgate", "run", "--backend"]
    assert container["command"][-4:] == ["python3", "agent.py", "--task", "t1"]


def test_job_fields_come_from_the_policy(tmp_path: Path) -> None:
    sample = next(s for s in SAMPLES if s.name == "offline-narrowed-job")
    objects = export(sample, tmp_path)
    job = _by_kind(objects, "Job")[0]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 300 + 60
    spec = job["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    limits = spec["containers"][0]["resources"]["limits"]
    assert parse_quantity(limits["memory"]) == 512 * 2**20
    assert parse_quantity(limits["cpu"]) == 0.5
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "write-1" not in volumes  # with a claim, write roots beneath the workspace are subPaths of it
    assert volumes["workspace"] == {"name": "workspace", "persistentVolumeClaim": {"claimName": "agent-ws"}}
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "100Mi"
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"name": "workspace", "mountPath": "/workspace", "readOnly": True} in mounts
    assert {"name": "workspace", "mountPath": "/workspace/output", "subPath": "output"} in mounts
    # Only the write roots (and /tmp, HOME) are writable: the cache root was narrowed away.
    assert [m["mountPath"] for m in mounts if not m.get("readOnly")] == ["/tmp", "/home/agent", "/workspace/output"]


def test_without_a_claim_each_write_root_is_its_own_empty_dir(tmp_path: Path) -> None:
    spec = _pod_spec(export(SAMPLES[0], tmp_path))
    mounts = spec["containers"][0]["volumeMounts"]
    assert not any(m["mountPath"] == "/workspace" for m in mounts)  # the image's own, read-only directory
    assert {"name": "write-1", "mountPath": "/workspace/output"} in mounts
    assert {"name": "write-2", "mountPath": "/workspace/.cache/agent"} in mounts
    assert {"name": "write-1", "emptyDir": {"sizeLimit": "1024Mi"}} in spec["volumes"]


def test_the_policy_file_is_relocated_and_rebuilds_the_same_policy(tmp_path: Path) -> None:
    sample = Sample("x", {"filesystem": {"write": ["output"], "denyRead": ["secrets/", "data/*.csv"]}},
                    grants=Grants(net=("api.example.com",), run=("git",)))
    host_policy = build_policy(sample, tmp_path / "host")
    cm = _by_kind(kubernetes(host_policy, image="i", command=["true"], egress="proxy"), "ConfigMap")[0]
    text = cm["data"]["agent-permissions.json"]
    assert str(tmp_path) not in text  # no host path travels into the cluster
    # The pod's launcher: its own workspace and home, the file loaded as trusted.
    pod_ws, pod_home = tmp_path / "pod" / "workspace", tmp_path / "pod" / "home"
    pod_ws.mkdir(parents=True)
    pod_home.mkdir(parents=True)
    policy_file = tmp_path / "pod" / "agent-permissions.json"
    policy_file.write_text(text)
    pod_policy = capgate.load_policy(str(policy_file), workspace=str(pod_ws), home=str(pod_home),
                                     allow_user_expansion=True)
    assert pod_policy.filesystem.write == (str(pod_ws / "output"),)
    assert pod_policy.filesystem.read == (str(pod_ws),)
    assert pod_policy.network == host_policy.network
    assert pod_policy.process == host_policy.process
    assert pod_policy.limits == host_policy.limits
    sources = {p.source for p in pod_policy.filesystem.deny_read}
    assert {p.source for p in host_policy.filesystem.deny_read} <= sources
    gate = capgate.Gate(pod_policy)
    assert not gate.check("fs.read", str(pod_ws / "secrets" / "k")).allowed
    assert not gate.check("fs.read", str(pod_home / ".ssh" / "id_rsa")).allowed
    assert gate.check("fs.read", str(pod_ws / "src.py")).allowed  # benign control


# -- refusals: never exported weaker ---------------------------------------------------------
def _policy(tmp: Path, net: tuple[str, ...] = (), body: dict[str, Any] | None = None) -> capgate.Policy:
    return build_policy(Sample("p", body, grants=Grants(net=net)), tmp)


def test_egress_none_refuses_a_policy_that_lets_traffic_out(tmp_path: Path) -> None:
    policy = _policy(tmp_path, ("api.example.com",))
    with pytest.raises(PolicyError, match="--egress none") as info:
        kubernetes(policy, image="i", command=["true"], egress="none")
    assert info.value.key == "network.allowedDomains"
    addresses = _policy(tmp_path / "a", ("203.0.113.9",))
    with pytest.raises(PolicyError) as info:
        kubernetes(addresses, image="i", command=["true"], egress="none")
    assert info.value.key == "network.allowedAddresses"
    # Benign controls: the same policy with a mode that enforces it, and an offline policy.
    assert kubernetes(policy, image="i", command=["true"], egress="proxy")
    assert kubernetes(_policy(tmp_path / "off"), image="i", command=["true"], egress="none")


def test_cilium_refuses_a_denied_name_under_an_allowed_wildcard(tmp_path: Path) -> None:
    body = {"network": {"deniedDomains": ["evil.example.org"]}}
    policy = _policy(tmp_path, ("*.example.org",), body)
    with pytest.raises(PolicyError, match="no FQDN deny") as info:
        kubernetes(policy, image="i", command=["true"], egress="cilium")
    assert info.value.key == "network.deniedDomains[0]"
    assert kubernetes(policy, image="i", command=["true"], egress="proxy")  # the proxy's gate enforces it
    unrelated = _policy(tmp_path / "u", ("*.example.org",), {"network": {"deniedDomains": ["other.example.com"]}})
    assert kubernetes(unrelated, image="i", command=["true"], egress="cilium")  # benign: nothing covered


def test_host_sockets_are_refused(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    sock.write_text("")
    policy = build_policy(Sample("s", None), tmp_path)
    import dataclasses

    with_socket = dataclasses.replace(policy, network=dataclasses.replace(policy.network,
                                                                          allowed_unix_sockets=(str(sock),)))
    with pytest.raises(PolicyError) as info:
        kubernetes(with_socket, image="i", command=["true"])
    assert info.value.key == "network.allowedUnixSockets"
    assert kubernetes(policy, image="i", command=["true"])


@pytest.mark.parametrize(("option", "value"), [("name", "Bad_Name"), ("name", "x" * 41), ("cpus", "lots"),
                                               ("image", ""), ("target", "deployment"), ("egress", "all"),
                                               ("namespace", "NS"), ("proxy_address", "10.0.0.1")])
def test_bad_options_are_policy_errors_naming_them(option: str, value: str, tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    args: dict[str, Any] = {"image": "i", "command": ["true"], option: value}
    with pytest.raises(PolicyError) as info:
        kubernetes(policy, **args)
    assert info.value.key is not None and option.replace("_", "-") in info.value.key


# -- egress objects -------------------------------------------------------------------------
def test_proxy_mode_lets_the_run_reach_only_the_proxy_and_dns(tmp_path: Path) -> None:
    objects = export(next(s for s in SAMPLES if s.name == "proxy-job"), tmp_path)
    policies = {o["metadata"]["name"]: o for o in _by_kind(objects, "NetworkPolicy")}
    run = policies["proxy-job-egress"]["spec"]
    assert run["ingress"] == []
    peers = [peer for rule in run["egress"] for peer in rule["to"]]
    proxy_labels = _by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert peers[0] == {"podSelector": {"matchLabels": proxy_labels}}
    assert peers[1]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    proxy = policies["proxy-job-proxy"]["spec"]
    internet = proxy["egress"][1]
    assert "10.0.0.0/8" in internet["to"][0]["ipBlock"]["except"]
    assert "169.254.169.254/32" in internet["to"][0]["ipBlock"]["except"]
    assert sorted(p["port"] for p in internet["ports"]) == [443, 8080, 8443]
    assert proxy["egress"][2] == {"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}],
                                  "ports": [{"protocol": "TCP", "port": 8080}]}
    env = {e["name"]: e["value"] for e in _pod_spec(objects)["containers"][0]["env"]}
    assert env["CAPGATE_UPSTREAM_PROXY"] == "proxy-job-proxy:3128"
    deployment = _by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert deployment["command"][-2:] == ["--listen", "0.0.0.0:3128"]


def test_a_fixed_proxy_address_removes_dns_egress(tmp_path: Path) -> None:
    objects = export(next(s for s in SAMPLES if s.name == "proxy-fixed-address-job"), tmp_path)
    run = next(o for o in _by_kind(objects, "NetworkPolicy") if o["metadata"]["name"].endswith("-egress"))
    assert len(run["spec"]["egress"]) == 1
    assert "kube-dns" not in json.dumps(run)
    assert _by_kind(objects, "Service")[0]["spec"]["clusterIP"] == "10.96.0.50"
    assert all(o["metadata"]["namespace"] == "agents" for o in objects)


def test_an_egress_rule_to_anywhere_fails_the_checks(tmp_path: Path) -> None:
    """The semantic check itself: a run pod allowed out to the internet is reported."""
    objects = export(next(s for s in SAMPLES if s.name == "proxy-job"), tmp_path)
    broken = copy.deepcopy(objects)
    run = next(o for o in broken if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-egress"))
    run["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    assert any("only the proxy and DNS" in line for line in check_objects(broken))


@pytest.mark.parametrize(("path", "value", "message"), [
    (("containers", 0, "securityContext", "readOnlyRootFilesystem"), False, "readOnlyRootFilesystem"),
    (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "capabilities"),
    (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
    (("automountServiceAccountToken",), True, "automountServiceAccountToken"),
    (("enableServiceLinks",), True, "enableServiceLinks"),
    (("hostPID",), True, "hostPID"),
    (("restartPolicy",), "OnFailure", "restartPolicy"),
    (("containers", 0, "resources", "limits", "memory"), "lots", "limits.memory"),
    (("volumes", 0), {"name": "h", "hostPath": {"path": "/"}}, "hostPath"),
])
def test_each_weakened_field_is_reported(path: tuple[Any, ...], value: Any, message: str, tmp_path: Path) -> None:
    objects = export(SAMPLES[0], tmp_path)
    broken = copy.deepcopy(objects)
    node: Any = next(o for o in broken if o["kind"] == "Job")["spec"]["template"]["spec"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert any(message in line for line in check_objects(broken))
    assert check_objects(objects) == []  # benign control


def test_a_selector_matching_no_pod_is_reported(tmp_path: Path) -> None:
    broken = copy.deepcopy(export(SAMPLES[0], tmp_path))
    netpol = next(o for o in broken if o["kind"] == "NetworkPolicy")
    netpol["spec"]["podSelector"]["matchLabels"]["capgate/run"] = "other"
    assert any("matches no pod" in line for line in check_objects(broken))


def test_agent_sandbox_carries_an_explicit_network_policy(tmp_path: Path) -> None:
    objects = export(next(s for s in SAMPLES if s.name == "agent-sandbox"), tmp_path)
    template = _by_kind(objects, "SandboxTemplate")[0]
    assert template["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
    assert template["spec"]["networkPolicy"] == {"ingress": [], "egress": []}
    assert template["spec"]["networkPolicyManagement"] == "Managed"
    pool = _by_kind(objects, "SandboxWarmPool")[0]
    assert pool["spec"] == {"replicas": 3, "sandboxTemplateRef": {"name": "agent-sandbox"}}
    assert not _by_kind(objects, "Job")


def test_cilium_mode_writes_fqdn_rules_at_any_depth(tmp_path: Path) -> None:
    objects = export(next(s for s in SAMPLES if s.name == "cilium-job"), tmp_path)
    cnp = _by_kind(objects, "CiliumNetworkPolicy")[0]["spec"]
    fqdns = [sel for rule in cnp["egress"] for sel in rule.get("toFQDNs", [])]
    assert fqdns == [{"matchName": "api.example.com"}, {"matchPattern": "**.example.org"}]
    assert cnp["egress"][0]["toPorts"][0]["rules"]["dns"] == fqdns  # DNS only for these names
    assert {"toCIDR": ["198.51.100.0/24"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]} \
        in cnp["egress"]
    assert cnp["egressDeny"] == [{"toCIDR": ["169.254.0.0/16", "fe80::/10"]}]
    assert not _by_kind(objects, "Deployment")  # no proxy in this mode


# -- golden files ---------------------------------------------------------------------------
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_golden(sample: Sample, tmp_path: Path) -> None:
    text = dump_all(export(sample, tmp_path))
    golden = GOLDEN / f"{sample.name}.yaml"
    if os.environ.get("CAPGATE_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.read_text() == text, f"the export changed: CAPGATE_UPDATE_GOLDEN=1 rewrites {golden}"
    yaml = require("yaml")
    assert list(yaml.safe_load_all(text)) == export(sample, tmp_path / "again")


# -- the command line ------------------------------------------------------------------------
def test_cli_writes_yaml_and_enforcement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from capgate.cli import main

    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "out"
    code = main(["export", "kubernetes", "--image", "img", "--workspace", str(ws), "--allow-net",
                 "api.example.com", "--egress", "proxy", "-o", str(out), "--", "python3", "a.py"])
    assert code == 0
    assert (out / "kubernetes.yaml").read_text().count("\n---\n") == 5
    assert "DNS is an exfiltration channel" in (out / "ENFORCEMENT.md").read_text()
    # Existing files are not overwritten without --force.
    assert main(["export", "kubernetes", "--image", "img", "--workspace", str(ws), "-o", str(out), "--", "x"]) == 2
    # A refusal writes nothing and exits 2.
    refused = tmp_path / "refused"
    code = main(["export", "kubernetes", "--image", "img", "--workspace", str(ws), "--allow-net", "a.example.com",
                 "-o", str(refused), "--", "x"])
    assert code == 2 and not refused.exists()
    assert "--egress none" in capsys.readouterr().err



def test_credentials_and_resolve_are_refused_at_export(tmp_path: Path) -> None:
    """No secret is carried into the cluster, and ``--resolve`` maps names on this machine
    only: both are refused, naming the key; the control: the same policy without them."""
    import dataclasses

    from capgate.policy.model import Credential, ResolveEntry

    policy = _policy(tmp_path, ("api.example.com",))
    assert kubernetes(policy, image="i", command=["true"], egress="proxy")
    credential = Credential("api.example.com", 443, "Authorization", "env:TOKEN", "TOKEN", "--credential")
    for field, value, key in (("credentials", (credential,), "network.credentials"),
                              ("resolve", (ResolveEntry("api.example.com", 443, "127.0.0.1"),), "network.resolve")):
        changed = dataclasses.replace(policy, network=dataclasses.replace(policy.network, **{field: value}))
        with pytest.raises(PolicyError) as info:
            kubernetes(changed, image="i", command=["true"], egress="proxy")
        assert info.value.key == key
