"""Policy: schema of the user file, built-in defaults, loading, merging, the frozen model."""

from __future__ import annotations

from capgate.errors import PolicyError
from capgate.policy.dump import load_effective_policy, policy_from_dict, policy_to_dict
from capgate.policy.load import MAX_POLICY_BYTES, default_policy, load_policy, parse_policy_text
from capgate.policy.model import Policy

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
