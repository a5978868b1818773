"""Policy: schema of the user file, built-in defaults, loading, merging, the frozen model.

Loading a user file needs pydantic; reading an effective policy (what a sandboxed child does
at start-up) does not. The functions load on first use so that importing this package stays
cheap for the child.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from capgate.errors import PolicyError
from capgate.policy.model import Policy

if TYPE_CHECKING:
    from capgate.policy.dump import load_effective_policy, policy_from_dict, policy_to_dict
    from capgate.policy.load import MAX_POLICY_BYTES, default_policy, load_policy, parse_policy_text

__all__ = [
    "MAX_POLICY_BYTES",
    "Policy",
    "PolicyError",
    "default_policy",
    "load_effective_policy",
    "load_policy",
    "parse_policy_text",
    "policy_from_dict",
    "policy_to_dict",
]

_LAZY = {
    "load_effective_policy": "capgate.policy.dump",
    "policy_from_dict": "capgate.policy.dump",
    "policy_to_dict": "capgate.policy.dump",
    "MAX_POLICY_BYTES": "capgate.policy.load",
    "default_policy": "capgate.policy.load",
    "load_policy": "capgate.policy.load",
    "parse_policy_text": "capgate.policy.load",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'capgate.policy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
