"""``capgate.export.kubernetes``: the effective policy as Kubernetes objects (plain dicts).

One source of truth, as ``podman kube generate`` and kompose do it: builders per object kind
(``k8s_pod``, ``k8s_network``), the policy relocated once (``k8s_policy``), the key-by-key
enforcement map in one place (``enforcement``), and serialization at the edge (``yaml_text``).
The objects come in a stable order with stable names derived from ``name``:

- ``job`` target: ConfigMap ``NAME-policy``, Job ``NAME``, NetworkPolicy ``NAME-egress``;
- ``agent-sandbox`` target: ConfigMap, SandboxTemplate ``NAME`` (with an explicit
  ``networkPolicy``: the controller's default lets the internet in), SandboxWarmPool ``NAME``,
  NetworkPolicy ``NAME-egress`` (a second, cluster-wide statement of the same deny-all, which
  does not depend on the controller's managed policy);
- ``--egress proxy`` adds Deployment, Service and NetworkPolicy ``NAME-proxy``;
- ``--egress cilium`` adds CiliumNetworkPolicy ``NAME-fqdn``.

Before returning, every object passes ``check_objects`` (hardening, selectors, names,
quantities); a failure there is a bug in this package, raised as ``RuntimeError``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from capgate.errors import PolicyError
from capgate.export import k8s_network
from capgate.export.k8s_check import check_objects
from capgate.export.k8s_pod import pod_spec, proxy_pod_spec
from capgate.export.k8s_policy import POD_POLICY_FILE, pod_policy_text
from capgate.policy.model import Policy

__all__ = ["TARGETS", "kubernetes", "pod_from_objects"]

TARGETS = ("job", "agent-sandbox")
SANDBOX_API = "extensions.agents.x-k8s.io/v1beta1"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
PART_OF = {"app.kubernetes.io/part-of": "capgate"}
# How an image made for capgate starts it (container_shim's layout contract: a CPython with
# capgate installed at /opt/capgate/bin/python, whatever the base image).
IMAGE_ENTRYPOINT = ("/opt/capgate/bin/python", "-m", "capgate")


def _labels(name: str, role: str) -> dict[str, str]:
    return {**PART_OF, "capgate/run": name, "capgate/role": role}


def _meta(name: str, labels: dict[str, str], namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _check_args(name: str, image: str, command: Sequence[str], target: str, namespace: str | None,
                ttl: int, warm_pool: int) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PolicyError(f"--name must be a DNS-1123 label of at most 40 characters (lowercase letters, digits, "
                          f"'-'; starting with a letter), not {name!r}", "--name")
    if namespace is not None and not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", namespace):
        raise PolicyError(f"--namespace must be a DNS-1123 label, not {namespace!r}", "--namespace")
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise PolicyError("--image is required (a reference without whitespace)", "--image")
    if not command or not all(isinstance(a, str) and a for a in command):
        raise PolicyError("a command is required after --", "command")
    if target not in TARGETS:
        raise PolicyError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}", "--target")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise PolicyError("--ttl must be a non-negative number of seconds", "--ttl")
    if isinstance(warm_pool, bool) or not isinstance(warm_pool, int) or warm_pool < 0:
        raise PolicyError("--warm-pool must be a non-negative number", "--warm-pool")


def kubernetes(policy: Policy, *, image: str, command: Sequence[str], target: str = "job", egress: str = "none",
               runtime_class: str | None = None, name: str = "capgate-run", namespace: str | None = None,
               workspace_claim: str | None = None, proxy_address: str | None = None, cpus: str = "1",
               ttl_seconds_after_finished: int = 3600, warm_pool: int = 1,
               entrypoint: Sequence[str] = IMAGE_ENTRYPOINT) -> list[dict[str, Any]]:
    """The Kubernetes objects that run ``command`` in ``image`` under ``policy``.

    Raises ``PolicyError`` (naming the key or option) when the chosen ``egress`` mode cannot
    enforce the policy's network rules, or an argument is invalid. ``entrypoint`` is how the
    image starts capgate (default: the layout ``capgate image build`` and
    ``container_shim/Containerfile`` make, ``/opt/capgate/bin/python -m capgate``).
    """
    _check_args(name, image, command, target, namespace, ttl_seconds_after_finished, warm_pool)
    k8s_network.check_egress(policy, egress)
    if proxy_address is not None:
        if egress != "proxy":
            raise PolicyError("--proxy-address is for --egress proxy", "--proxy-address")
        import ipaddress

        try:
            ipaddress.ip_address(proxy_address)
        except ValueError:
            raise PolicyError(f"--proxy-address must be an IP address, not {proxy_address!r}",
                              "--proxy-address") from None
    use_proxy = egress == "proxy" and k8s_network.lets_anything_out(policy)
    agent_labels = _labels(name, "agent")
    proxy_labels = _labels(name, "proxy")
    proxy_name = f"{name}-proxy"
    cm_name = f"{name}-policy"
    proxy_url = None
    if use_proxy:
        host = proxy_address or (f"{proxy_name}.{namespace}.svc" if namespace else proxy_name)
        proxy_url = f"{host}:{k8s_network.PROXY_PORT}"

    objects: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(cm_name, _labels(name, "policy"), namespace),
        "immutable": True,
        "data": {POD_POLICY_FILE.rsplit("/", 1)[1]: pod_policy_text(policy)},
    }]
    spec = pod_spec(policy, image=image, command=list(command), entrypoint=list(entrypoint),
                    policy_configmap=cm_name, cpus=cpus, runtime_class=runtime_class,
                    workspace_claim=workspace_claim, proxy_url=proxy_url)
    egress_rules = k8s_network.egress_rules(policy, egress, proxy_labels=proxy_labels, proxy_address=proxy_address)
    if target == "job":
        objects.append({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": _meta(name, agent_labels, namespace),
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": policy.limits.wall_time_seconds + 60,
                "ttlSecondsAfterFinished": ttl_seconds_after_finished,
                "template": {"metadata": {"labels": dict(agent_labels)}, "spec": spec},
            },
        })
    else:
        objects.append({
            "apiVersion": SANDBOX_API, "kind": "SandboxTemplate",
            "metadata": _meta(name, agent_labels, namespace),
            "spec": {
                "podTemplate": {"metadata": {"labels": dict(agent_labels)}, "spec": spec},
                "networkPolicyManagement": "Managed",
                # Explicit: omitted, the controller's default lets the pod reach the internet.
                "networkPolicy": {"ingress": [], "egress": copy.deepcopy(egress_rules)},
                "envVarsInjectionPolicy": "Disallowed",
                "volumeClaimTemplatesPolicy": "Disallowed",
            },
        })
        objects.append({
            "apiVersion": SANDBOX_API, "kind": "SandboxWarmPool",
            "metadata": _meta(name, agent_labels, namespace),
            "spec": {"replicas": warm_pool, "sandboxTemplateRef": {"name": name}},
        })
    objects.append({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(f"{name}-egress", agent_labels, namespace),
        "spec": {"podSelector": {"matchLabels": dict(agent_labels)}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [], "egress": egress_rules},
    })
    if use_proxy:
        objects += _proxy_objects(policy, name=proxy_name, labels=proxy_labels, agent_labels=agent_labels,
                                  namespace=namespace, image=image, entrypoint=list(entrypoint),
                                  policy_configmap=cm_name, runtime_class=runtime_class,
                                  proxy_address=proxy_address)
    if egress == "cilium" and k8s_network.lets_anything_out(policy):
        objects.append({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": _meta(f"{name}-fqdn", agent_labels, namespace),
            "spec": k8s_network.cilium_spec(policy, agent_labels),
        })
    problems = check_objects(objects)
    if problems:  # pragma: no cover - a builder bug, never a user error
        raise RuntimeError("capgate export produced objects that fail its own checks:\n" + "\n".join(problems))
    return objects


def _proxy_objects(policy: Policy, *, name: str, labels: dict[str, str], agent_labels: dict[str, str],
                   namespace: str | None, image: str, entrypoint: list[str], policy_configmap: str,
                   runtime_class: str | None, proxy_address: str | None) -> list[dict[str, Any]]:
    port = k8s_network.PROXY_PORT
    service_spec: dict[str, Any] = {"selector": dict(labels),
                                    "ports": [{"name": "proxy", "port": port, "targetPort": port,
                                               "protocol": "TCP"}]}
    if proxy_address is not None:
        service_spec["clusterIP"] = proxy_address
    return [
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(name, labels, namespace),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(labels)},
                "template": {"metadata": {"labels": dict(labels)},
                             "spec": proxy_pod_spec(policy, image=image, entrypoint=entrypoint,
                                                    policy_configmap=policy_configmap, port=port,
                                                    runtime_class=runtime_class)},
            },
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, labels, namespace), "spec": service_spec},
        {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(name, labels, namespace),
            "spec": {
                "podSelector": {"matchLabels": dict(labels)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": dict(agent_labels)}}],
                             "ports": [{"protocol": "TCP", "port": port}]}],
                "egress": k8s_network.proxy_egress_rules(policy),
            },
        },
    ]


def pod_from_objects(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's pod template as a ``v1`` Pod (what ``podman kube play`` runs locally)."""
    for obj in objects:
        if obj["kind"] == "Job":
            template = obj["spec"]["template"]
        elif obj["kind"] == "SandboxTemplate":
            template = obj["spec"]["podTemplate"]
        else:
            continue
        meta = {"name": obj["metadata"]["name"], "labels": dict(template["metadata"]["labels"])}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template["spec"])}
    raise ValueError("no Job or SandboxTemplate among the objects")
