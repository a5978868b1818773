"""IP addresses in policy entries (placeholder; full rules to come)."""

from __future__ import annotations

from collections.abc import Sequence


def normalize_address_entry(entry: str, key: str) -> str:
    return entry.strip().lower()


def address_entry_within(entry: str, base: Sequence[str]) -> bool:
    return entry in base
