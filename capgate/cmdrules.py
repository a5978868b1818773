"""Command decision table (placeholder until the process gate lands): denies everything."""

from __future__ import annotations

from typing import Any

from capgate.decision import Decision


class CommandRules:
    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def decide(self, target: str) -> Decision:
        return Decision.deny("process rules not built yet", "process.allowedCommands", target)
