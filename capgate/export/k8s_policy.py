"""The effective policy, relocated into the pod's layout, as the file the ConfigMap carries.

On the host the effective policy holds host paths (``/home/u/proj/output``). In the pod the
workspace is ``/workspace`` and HOME is ``/home/agent``, so every root and deny pattern is
rewritten: beneath the workspace → relative (the pod's launcher anchors it at its own
workspace), beneath the home → ``~/…``, anything else stays absolute (a path in the image).
The result is in the policy file's own format (``policy_to_file_dict``), so the launcher in the
pod rebuilds the same effective policy from it with its own defaults, symlink resolution and
mandatory lists — it decides; this module only moves paths.
"""

from __future__ import annotations

import json
from typing import Any

from capgate.policy.dump import policy_to_file_dict
from capgate.policy.model import Policy

__all__ = ["POD_HOME", "POD_POLICY_DIR", "POD_POLICY_FILE", "POD_WORKSPACE", "pod_policy_file", "pod_write_roots"]

POD_WORKSPACE = "/workspace"
POD_HOME = "/home/agent"
POD_POLICY_DIR = "/etc/capgate"
POD_POLICY_FILE = f"{POD_POLICY_DIR}/agent-permissions.json"


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` ("" for the root itself), or None when outside it."""
    root = root.rstrip("/") or "/"
    if path == root:
        return ""
    prefix = root if root.endswith("/") else root + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def relocate(path: str, policy: Policy) -> str:
    """A host path of the effective policy as the pod's policy file spells it."""
    rel = _under(path, policy.workspace)
    if rel is not None:
        return rel or "."
    rel = _under(path, policy.home)
    if rel is not None:
        return "~/" + rel if rel else "~"
    return path


def _relocate_pattern(source: str, policy: Policy) -> str:
    if source.startswith("/"):
        rel = _under(source, policy.workspace)
        if rel:
            return rel
        rel = _under(source, policy.home)
        if rel:
            return "~/" + rel
    return source


def pod_policy_file(policy: Policy) -> dict[str, Any]:
    """The policy file the ConfigMap holds (the pod's launcher loads it as trusted)."""
    data = policy_to_file_dict(policy)
    fs = data["filesystem"]
    for key in ("read", "write", "recursiveDelete"):
        fs[key] = [relocate(p, policy) for p in fs[key]]
    fs["denyRead"] = [_relocate_pattern(p, policy) for p in fs["denyRead"]]
    fs["denyWrite"] = [_relocate_pattern(p, policy) for p in fs["denyWrite"]]
    # Reasons were redacted by policy_to_file_dict ("<redacted>"): keep the denial, drop the text.
    net = data["network"]
    net["deniedDomains"] = [d if isinstance(d, str) else d["domain"] for d in net["deniedDomains"]]
    return data


def pod_policy_text(policy: Policy) -> str:
    return json.dumps(pod_policy_file(policy), indent=2) + "\n"


def pod_write_roots(policy: Policy) -> list[str]:
    """The write roots as absolute pod paths, in policy order."""
    roots = []
    for path in policy.filesystem.write:
        spelled = relocate(path, policy)
        if spelled == ".":
            roots.append(POD_WORKSPACE)
        elif spelled == "~":
            roots.append(POD_HOME)
        elif spelled.startswith("~/"):
            roots.append(f"{POD_HOME}/{spelled[2:]}")
        elif spelled.startswith("/"):
            roots.append(spelled)
        else:
            roots.append(f"{POD_WORKSPACE}/{spelled}")
    return roots
