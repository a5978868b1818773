"""Network decision table (placeholder until the network gate lands): denies everything."""

from __future__ import annotations

from typing import Any

from capgate.decision import Decision


class NetworkRules:
    def __init__(self, policy: Any, resolver: Any = None) -> None:
        self.policy = policy

    def decide(self, target: str) -> tuple[Decision, None]:
        return Decision.deny("network rules not built yet", "network.enabled", target), None
