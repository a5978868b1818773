"""Host names in policy entries (placeholder: lowercase + trailing dot; full rules to come)."""

from __future__ import annotations

from collections.abc import Sequence


def normalize_domain_entry(entry: str, key: str) -> str:
    return entry.strip().lower().rstrip(".")


def domain_entry_within(entry: str, base: Sequence[str], ports: Sequence[int]) -> bool:
    return entry in base
