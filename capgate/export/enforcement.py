"""Who enforces each policy key once the policy runs on Kubernetes: the one place that says it.

Every key of the policy file (``agent-permissions.json``) and of the effective policy the
launcher builds is listed here with three columns: what the **cluster** enforces (a pod or
NetworkPolicy field the export writes), what the **gate** inside the pod enforces (the soft
backend: audit hooks, Landlock, rlimits, the egress proxy), and what only a **node** setting
the cluster admin provides can enforce. A key with nothing in the cluster column is enforced
by the gate alone, and ``ENFORCEMENT.md`` says so: nothing is silently dropped.
``tests/unit/test_export_enforcement.py`` walks every key of the schema and of the model and
fails when one is missing here, so a new policy key cannot be exported unmentioned.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENFORCEMENT", "INTERNAL_KEYS", "Row", "enforcement_markdown"]


@dataclass(frozen=True)
class Row:
    """One policy key: who enforces it in the cluster, in the gate and on the node."""

    key: str
    cluster: str
    gate: str
    node: str = ""


_FS_GATE = "audit hooks (Python) and Landlock (every process), checked on the canonical path"

ENFORCEMENT: tuple[Row, ...] = (
    Row("version", "—", "the pod's launcher refuses any version but 1"),
    Row("filesystem.read",
        "the root filesystem is the image, read-only; the workspace is the image's directory or the claim, "
        "mounted read-only",
        _FS_GATE + "; nothing outside the read roots and the runtime's own files"),
    Row("filesystem.write",
        "only the write roots, /tmp and HOME are writable volumes (emptyDir, or subPath mounts of the "
        "workspace claim); `readOnlyRootFilesystem: true` everywhere else",
        _FS_GATE),
    Row("filesystem.denyRead", "— (no Kubernetes field hides a path inside a volume)",
        "audit hooks, for Python code only: Landlock cannot carve a pattern out of a read root, so an "
        "allowed native command (`cat`) can read a denied file inside one — keep secrets out of the image "
        "and the claim"),
    Row("filesystem.denyWrite", "— (a write root is writable as a whole at the volume level)",
        "audit hooks for Python code; a native child's write beneath a write root is reported as a denial at "
        "exit (the soft backend's after-run scan), not prevented"),
    Row("filesystem.recursiveDelete", "—", "`fs.rmtree` outside these roots is denied by the gate"),
    Row("network.enabled",
        "NetworkPolicy `…-egress`: all ingress and all egress denied for the run's pod, except (`--egress "
        "proxy`) TCP to the egress proxy and DNS, or (`--egress cilium`) the `toFQDNs` rules",
        "offline mode: every connect denied (hooks; Landlock TCP rules where the kernel has them)"),
    Row("network.allowedDomains",
        "`--egress proxy`: the proxy Deployment's `capgate proxy` (the same gate, in its own pod, the only pod "
        "the run may reach); `--egress cilium`: `toFQDNs` (`*.x` written as `**.x`, any depth, as capgate "
        "matches); `--egress none`: refused at export",
        "the gate's own proxy in the pod decides each connect again"),
    Row("network.deniedDomains",
        "`--egress proxy`: the proxy's gate; `--egress cilium`: only as the absence of an allow (a denied name "
        "under an allowed wildcard is refused at export: Cilium has no FQDN deny)",
        "the gate in the pod"),
    Row("network.allowedAddresses",
        "`--egress proxy`: the proxy's gate, and an `ipBlock` in the proxy's NetworkPolicy; `--egress cilium`: "
        "`toCIDR` with the ports; `--egress none`: refused at export",
        "the gate in the pod"),
    Row("network.allowedPorts",
        "the proxy's NetworkPolicy and the Cilium rules allow only these ports (and the ports named in entries)",
        "the gate in the pod"),
    Row("network.allowedUnixSockets",
        "a pod never mounts host sockets (no hostPath): a policy listing one is refused at export",
        "the gate in the pod"),
    Row("network.credentials", "— (refused at export: no secret is carried into the cluster)", "—"),
    Row("network.requestRules", "—",
        "the gate's own proxy in the pod inspects TLS to those hosts (per-run CA; needs capgate[proxy-tls] in "
        "the image) and refuses other methods and paths"),
    Row("network.endRunOnCredentialMisuse", "—", "the gate in the pod (without credentials it has nothing to watch)"),
    Row("network.resolve", "— (refused at export: the pod resolves through the cluster's DNS)", "—"),
    Row("process.allowedCommands", "—", "the gate: the resolved executable is checked for every exec"),
    Row("process.allowShell", "—", "the gate: `shell=True`, `os.system`, `sh -c` are denied"),
    Row("process.envPassthrough",
        "the container's environment holds only HOME, TMPDIR, PYTHONPATH (the capgate image's site) and (proxy mode) "
        "the proxy address; "
        "`enableServiceLinks: false` keeps Service variables out",
        "the gate's clean environment for every child"),
    Row("process.deniedArguments", "—", "the gate, per command"),
    Row("limits.wallTimeSeconds",
        "Job: `activeDeadlineSeconds` (wall time + 60 s for scheduling and start); agent-sandbox: the claim's "
        "lifecycle",
        "the gate kills the whole tree at the wall time"),
    Row("limits.cpuSeconds", "— (`resources.limits.cpu` caps the rate, `--cpus`, not the total)",
        "RLIMIT_CPU on every process"),
    Row("limits.memoryMb", "`resources.limits.memory` (the cgroup; the pod is OOM-killed above it)",
        "RLIMIT_AS on every process"),
    Row("limits.maxProcesses", "—",
        "RLIMIT_NPROC (per uid: every pod of the same uid on a node shares it)",
        "the kubelet's `podPidsLimit` (a per-pod PID cap exists only as a node setting)"),
    Row("limits.maxOpenFiles", "—", "RLIMIT_NOFILE on every process"),
    Row("limits.maxFileSizeMb", "— (no pod field limits one file's size)", "RLIMIT_FSIZE on every process"),
    Row("limits.outputQuotaMb",
        "emptyDir `sizeLimit` on each writable volume and `resources.limits.ephemeral-storage` (quota + 64 MiB "
        "for logs); a PersistentVolumeClaim's own size",
        "the gate counts every write through it"),
    Row("limits.maxCapturedOutputMb", "—", "the gate caps what `proc.run` captures"),
)

# Keys of the effective policy (``Policy.to_dict``) that are not policy-file material: the
# launcher in the pod computes them again. Listed so the key walk sees each one on purpose.
INTERNAL_KEYS: dict[str, str] = {
    "format": "the effective policy's format marker",
    "workspace": "relocated: /workspace in the pod (the ConfigMap's paths are rewritten to it)",
    "home": "relocated: the pod's HOME (/home/agent); `~` entries follow it",
    "filesystem.runtimeRead": "computed by the launcher in the pod (the image's interpreter, certificates)",
    "filesystem.protected": "computed by the launcher in the pod (the policy file, the audit log)",
    "origin": "the pod loads the exported file as trusted (the operator's ConfigMap)",
    "source": "the ConfigMap's file in the pod",
    "widened": "shown by `capgate export` on stderr; the pod's banner lists the file as the source",
}


def enforcement_markdown(*, egress: str, target: str) -> str:
    """The table as Markdown, with the notes that depend on the chosen egress mode and target."""
    lines = [
        "# Who enforces what",
        "",
        f"Generated by `capgate export kubernetes` (target `{target}`, egress `{egress}`). Each policy key, "
        "and who enforces it: the cluster (a field in these objects), the gate inside the pod (capgate's soft "
        "backend: audit hooks, Landlock, rlimits, its egress proxy), or a node setting only the cluster admin "
        "can provide. A key with no cluster entry is enforced by the gate alone.",
        "",
        "| policy key | cluster | gate in the pod | node (cluster admin) |",
        "|---|---|---|---|",
    ]
    for row in ENFORCEMENT:
        lines.append(f"| `{row.key}` | {row.cluster} | {row.gate} | {row.node or '—'} |")
    lines += ["", "## Notes", ""]
    if egress == "proxy":
        lines += [
            "- **DNS is an exfiltration channel.** The run's pod may reach the cluster DNS (port 53) to find the "
            "proxy Service, and a cluster resolver forwards any name: a process in the pod can leak data in the "
            "names it looks up (`<secret>.attacker.example`). Close it with Cilium's DNS rules (a "
            "CiliumNetworkPolicy whose `dns` rules allow only the proxy Service's name), or export with "
            "`--proxy-address IP` (the Service gets that fixed cluster IP, the pod gets no DNS egress at all).",
        ]
    if egress == "cilium":
        lines += [
            "- Cilium's DNS proxy sees every lookup and allows only the listed names, so DNS is not a free "
            "channel; `toFQDNs` then admits the addresses those answers held.",
            "- Addresses an allowed name resolves to are not checked against private ranges by the cluster "
            "(the cluster DNS itself lives there); the gate in the pod refuses them for Python code, and the "
            "cloud metadata ranges (169.254.0.0/16, fe80::/10) are denied by an `egressDeny` rule.",
        ]
    lines += [
        "- The gate inside the pod runs the **soft backend**: container runtimes' default seccomp profiles "
        "refuse the user namespaces the namespace backend needs. Its kernel layer is Landlock; under gVisor "
        "there is no Landlock, and the launcher's banner says the kernel layer is off.",
        "- The per-pod process limit is the kubelet's `podPidsLimit` (node configuration); the gate's "
        "RLIMIT_NPROC counts every process of the pod's uid on the node.",
        "- No Kubernetes field limits the size of one file: `maxFileSizeMb` is the gate's RLIMIT_FSIZE.",
        "",
    ]
    return "\n".join(lines)
