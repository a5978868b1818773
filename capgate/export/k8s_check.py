"""What the export promises about its objects, checked on the objects themselves.

Schemas say a field has the right type; they do not say a pod is hardened or that a
NetworkPolicy selects the pod it is meant for. ``check_objects`` returns one line per broken
promise (empty: all kept). The export runs it before returning anything, and the tests run it
on every sample — so a builder change that weakens a pod fails at once, not in a cluster.

Promises: every pod spec (Job template, SandboxTemplate, Deployment) has no service-account
token, no Service links, no host namespaces, no hostPath, RuntimeDefault seccomp and non-root;
every container drops ALL capabilities, cannot escalate, has a read-only root and a fixed
non-root uid/gid and memory/CPU limits; the run's pods never restart; each NetworkPolicy
denies both directions by default and selects pods some object actually labels; the run's
egress goes only to the proxy's pods and DNS; every name is a DNS-1123 label (subdomain for
ConfigMaps) and every resource quantity parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["check_objects", "parse_quantity"]

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SCALE = {None: 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def parse_quantity(text: object) -> float:
    """A Kubernetes resource quantity (the forms the export writes) as a number; ValueError else."""
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match["num"]) * _SCALE[match["suffix"]]


def _pod_specs(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, str], str]]:
    """(pod spec, pod labels, role) of every pod an object makes."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in ("Job", "Deployment"):
        yield spec["template"]["spec"], spec["template"]["metadata"].get("labels", {}), kind
    elif kind == "SandboxTemplate":
        yield spec["podTemplate"]["spec"], spec["podTemplate"]["metadata"].get("labels", {}), kind
    elif kind == "Pod":
        yield spec, obj["metadata"].get("labels", {}), kind


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items()) and not selector.get(
        "matchExpressions")


def _check_pod(spec: dict[str, Any], where: str, kind: str) -> list[str]:
    bad: list[str] = []
    for key, want in (("automountServiceAccountToken", False), ("enableServiceLinks", False),
                      ("hostNetwork", False), ("hostPID", False), ("hostIPC", False)):
        if spec.get(key) is not want:
            bad.append(f"{where}: {key} must be {str(want).lower()}")
    if kind != "Deployment" and spec.get("restartPolicy") != "Never":
        bad.append(f"{where}: restartPolicy must be Never")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad.append(f"{where}: pod securityContext must set runAsNonRoot and seccompProfile RuntimeDefault")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            bad.append(f"{where}: volume {volume.get('name')} is a hostPath")
        if "emptyDir" in volume:
            try:
                parse_quantity(volume["emptyDir"].get("sizeLimit"))
            except ValueError:
                bad.append(f"{where}: emptyDir {volume.get('name')} needs a sizeLimit quantity")
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        cwhere = f"{where}: container {container.get('name')}"
        sc = container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{cwhere}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{cwhere}: readOnlyRootFilesystem must be true")
        if sc.get("privileged") not in (None, False):
            bad.append(f"{cwhere}: privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            bad.append(f"{cwhere}: capabilities must drop ALL and add none")
        uid, gid = sc.get("runAsUser", psc.get("runAsUser")), sc.get("runAsGroup", psc.get("runAsGroup"))
        if not (isinstance(uid, int) and uid > 0 and isinstance(gid, int) and gid > 0):
            bad.append(f"{cwhere}: needs a fixed non-root runAsUser and runAsGroup")
        if sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") != "RuntimeDefault":
            bad.append(f"{cwhere}: seccompProfile must be RuntimeDefault")
        limits = container.get("resources", {}).get("limits", {})
        for resource in ("cpu", "memory", "ephemeral-storage"):
            try:
                if parse_quantity(limits.get(resource)) <= 0:
                    raise ValueError
            except ValueError:
                bad.append(f"{cwhere}: resources.limits.{resource} must be a positive quantity")
        for mount in container.get("volumeMounts", []):
            if mount.get("mountPath") == "/" or mount.get("mountPropagation") not in (None, "None"):
                bad.append(f"{cwhere}: mount {mount.get('name')} is not allowed")
    return bad


def check_objects(objects: Sequence[dict[str, Any]]) -> list[str]:
    """Every broken promise in ``objects``, one line each (see the module docstring)."""
    bad: list[str] = []
    labelled: list[dict[str, str]] = []
    roles: dict[str, dict[str, str]] = {}
    names: set[tuple[str, str]] = set()
    for obj in objects:
        kind, name = obj.get("kind", "?"), obj.get("metadata", {}).get("name", "")
        where = f"{kind}/{name}"
        if (kind, name) in names:
            bad.append(f"{where}: duplicate name")
        names.add((kind, name))
        pattern_ok = _LABEL.match(name) and len(name) <= 63
        if not pattern_ok:
            bad.append(f"{where}: name is not a DNS-1123 label")
        for spec, labels, pod_kind in _pod_specs(obj):
            labelled.append(labels)
            roles[labels.get("capgate/role", "")] = labels
            bad += _check_pod(spec, where, pod_kind)
        if kind == "Job":
            if obj["spec"].get("backoffLimit") != 0:
                bad.append(f"{where}: backoffLimit must be 0")
            if not isinstance(obj["spec"].get("activeDeadlineSeconds"), int):
                bad.append(f"{where}: activeDeadlineSeconds is missing")
    agent = roles.get("agent")
    proxy = roles.get("proxy")
    for obj in objects:
        if obj.get("kind") != "NetworkPolicy":
            continue
        where = f"NetworkPolicy/{obj['metadata']['name']}"
        spec = obj["spec"]
        if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
            bad.append(f"{where}: policyTypes must be Ingress and Egress (deny both by default)")
        selector = spec.get("podSelector", {})
        if not any(_selects(selector, labels) for labels in labelled):
            bad.append(f"{where}: its podSelector matches no pod the objects create")
        if agent is not None and _selects(selector, agent):
            if spec.get("ingress"):
                bad.append(f"{where}: the run's pod must accept no ingress")
            for rule in spec.get("egress", []):
                for peer in rule.get("to", []):
                    to_proxy = proxy is not None and set(peer) == {"podSelector"} and _selects(
                        peer["podSelector"], proxy)
                    to_dns = set(peer) == {"namespaceSelector", "podSelector"} and peer["podSelector"].get(
                        "matchLabels") == {"k8s-app": "kube-dns"} and all(
                        p.get("port") == 53 for p in rule.get("ports", [{}]))
                    if not (to_proxy or to_dns):
                        bad.append(f"{where}: the run's pod may reach {peer}: only the proxy and DNS are allowed")
    return bad
