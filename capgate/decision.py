"""``Decision``: the gate's answer, one frozen value per question."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decision"]


@dataclass(frozen=True)
class Decision:
    """``allowed``; ``reason`` in words (``denyRead '~/.ssh'``); ``rule`` a stable pointer
    into the policy (``filesystem.denyRead[0]``); ``target`` the canonical target judged."""

    allowed: bool
    reason: str
    rule: str
    target: str = ""

    def __bool__(self) -> bool:
        return self.allowed

    @classmethod
    def allow(cls, reason: str, rule: str, target: str = "") -> Decision:
        return cls(True, reason, rule, target)

    @classmethod
    def deny(cls, reason: str, rule: str, target: str = "") -> Decision:
        return cls(False, reason, rule, target)
