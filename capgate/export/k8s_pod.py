"""The hardened pod spec of a run (and of the egress proxy), as plain dicts.

Hardened as the container backend is: a fixed non-root uid/gid, read-only root filesystem, no
capabilities, no privilege escalation, the runtime's default seccomp profile, no service-account
token, no Service environment variables, no host namespaces or hostPath. Writable places are
volumes only: ``/tmp`` and HOME (emptyDir), and the policy's write roots — each its own
emptyDir, or with ``--workspace-claim`` a ``subPath`` of the claim (so results land in it).
Every emptyDir has a ``sizeLimit`` of the output quota.

The container runs the launcher with the soft backend (container runtimes' default seccomp
profiles refuse the user namespaces the namespace backend needs): ``capgate run --backend soft``
with the ConfigMap's policy file, loaded as the operator's trusted file.
"""

from __future__ import annotations

import re
from typing import Any

from capgate.errors import PolicyError
from capgate.export.k8s_policy import POD_HOME, POD_POLICY_DIR, POD_POLICY_FILE, POD_WORKSPACE, pod_write_roots
from capgate.policy.model import Policy

__all__ = ["RUN_GID", "RUN_UID", "agent_container_command", "pod_spec", "proxy_pod_spec", "resources"]

RUN_UID = 10001
RUN_GID = 10001
LOG_HEADROOM_MB = 64  # ephemeral storage beyond the quota: container logs and the audit log
_CPU = re.compile(r"^(?:[1-9][0-9]{0,3}|0\.[0-9]{1,3}|[1-9][0-9]{0,3}\.[0-9]{1,3}|[1-9][0-9]{0,6}m)$")


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": RUN_GID,
        "runAsNonRoot": True,
        "runAsUser": RUN_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    # fsGroup: emptyDir and claim volumes are root-owned otherwise, and the run is not root.
    return {"fsGroup": RUN_GID, "runAsGroup": RUN_GID, "runAsNonRoot": True, "runAsUser": RUN_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def resources(policy: Policy, cpus: str) -> dict[str, Any]:
    """Limits (and equal requests: the Guaranteed QoS class) from the policy's limits."""
    if not isinstance(cpus, str) or not _CPU.match(cpus):
        raise PolicyError(f"--cpus must be a CPU quantity such as 1, 0.5 or 500m, not {cpus!r}", "--cpus")
    limits = {"cpu": cpus, "memory": f"{policy.limits.memory_mb}Mi",
              "ephemeral-storage": f"{policy.limits.output_quota_mb + LOG_HEADROOM_MB}Mi"}
    return {"limits": limits, "requests": dict(limits)}


def agent_container_command(command: list[str], entrypoint: list[str]) -> list[str]:
    """The launcher in the pod: soft backend, the pod's workspace, the ConfigMap's policy (the
    operator's file, trusted like a user-level file: ``--allow-user-expansion``)."""
    return [*entrypoint, "run", "--backend", "soft", "--workspace", POD_WORKSPACE, "--policy", POD_POLICY_FILE,
            "--allow-user-expansion", "--", *command]


IMAGE_SITE = "/opt/capgate/site"


def _base_env(entrypoint: list[str]) -> list[dict[str, str]]:
    """HOME and TMPDIR; with the capgate image's own interpreter (``capgate image build``:
    ``/opt/capgate/bin/python``), also ``PYTHONPATH`` to where that image keeps capgate — its
    interpreter has no site-packages of its own, so ``-m capgate`` finds nothing without it."""
    env = [{"name": "HOME", "value": POD_HOME}, {"name": "TMPDIR", "value": "/tmp"}]
    if entrypoint and entrypoint[0].startswith("/opt/capgate/"):
        env.append({"name": "PYTHONPATH", "value": IMAGE_SITE})
    return env


def _empty_dir(name: str, policy: Policy) -> dict[str, Any]:
    return {"name": name, "emptyDir": {"sizeLimit": f"{policy.limits.output_quota_mb}Mi"}}


def _volumes(policy: Policy, *, policy_configmap: str, workspace_claim: str | None,
             agent: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): the policy, the workspace, /tmp, HOME and (agent) the write roots.

    Without a claim there is no workspace volume: ``/workspace`` is the image's own directory
    (read-only with the root filesystem; inputs baked into the image at ``/workspace`` are
    visible), and each write root is its own emptyDir. With a claim, the claim is mounted
    read-only at ``/workspace`` and each write root beneath it is a read-write ``subPath`` of
    it (the kubelet creates the subdirectory, so the mount point exists in the read-only
    mount). Why not subPaths of an emptyDir workspace: a mount point beneath a read-only
    mount must already exist, and not every runtime creates subPath directories of an
    emptyDir (podman's ``kube play`` does not)."""
    volumes: list[dict[str, Any]] = [
        {"name": "policy", "configMap": {"name": policy_configmap, "defaultMode": 0o444}},
        _empty_dir("tmp", policy),
        _empty_dir("home", policy),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "policy", "mountPath": POD_POLICY_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": POD_HOME},
    ]
    claim = workspace_claim if agent else None
    if claim is not None:
        volumes.append({"name": "workspace", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "workspace", "mountPath": POD_WORKSPACE, "readOnly": True})  # mounts[3]
    if not agent:  # the proxy pod: an empty workspace for its launcher to load the policy at
        volumes.append(_empty_dir("workspace", policy))
        mounts.append({"name": "workspace", "mountPath": POD_WORKSPACE, "readOnly": True})
        return volumes, mounts
    extra = 0
    for root in pod_write_roots(policy):
        if root == POD_HOME or root.startswith(POD_HOME + "/") or root == "/tmp" or root.startswith("/tmp/"):
            continue  # already a writable volume
        if claim is not None and root == POD_WORKSPACE:
            mounts[3] = {"name": "workspace", "mountPath": POD_WORKSPACE}  # all of it is a write root
        elif claim is not None and root.startswith(POD_WORKSPACE + "/"):
            mounts.append({"name": "workspace", "mountPath": root, "subPath": root[len(POD_WORKSPACE) + 1:]})
        else:
            extra += 1
            volumes.append(_empty_dir(f"write-{extra}", policy))
            mounts.append({"name": f"write-{extra}", "mountPath": root})
    return volumes, mounts


def _base_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
               runtime_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostIPC": False,
        "hostNetwork": False,
        "hostPID": False,
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
    }
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    return spec


def pod_spec(policy: Policy, *, image: str, command: list[str], entrypoint: list[str], policy_configmap: str,
             cpus: str, runtime_class: str | None, workspace_claim: str | None,
             proxy_url: str | None) -> dict[str, Any]:
    """The run's pod spec."""
    volumes, mounts = _volumes(policy, policy_configmap=policy_configmap, workspace_claim=workspace_claim,
                               agent=True)
    env = _base_env(entrypoint)
    if proxy_url is not None:
        env.append({"name": "CAPGATE_UPSTREAM_PROXY", "value": proxy_url})
    container = {
        "name": "agent",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": agent_container_command(command, entrypoint),
        "workingDir": POD_WORKSPACE,
        "env": env,
        "resources": resources(policy, cpus),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    return _base_spec([container], volumes, runtime_class)


def proxy_pod_spec(policy: Policy, *, image: str, entrypoint: list[str], policy_configmap: str,
                   port: int, runtime_class: str | None) -> dict[str, Any]:
    """The egress proxy's pod spec: ``capgate proxy`` with the same policy, listening on the pod
    address (told so explicitly with ``--listen 0.0.0.0:PORT``)."""
    volumes, mounts = _volumes(policy, policy_configmap=policy_configmap, workspace_claim=None, agent=False)
    container = {
        "name": "proxy",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [*entrypoint, "proxy", "--workspace", POD_WORKSPACE, "--policy", POD_POLICY_FILE,
                    "--allow-user-expansion", "--listen", f"0.0.0.0:{port}"],
        "workingDir": POD_WORKSPACE,
        "env": _base_env(entrypoint),
        "ports": [{"name": "proxy", "containerPort": port, "protocol": "TCP"}],
        "resources": resources(policy, "500m"),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    spec = _base_spec([container], volumes, runtime_class)
    spec["restartPolicy"] = "Always"  # a Deployment's pods must restart; the run's pod never does
    return spec
