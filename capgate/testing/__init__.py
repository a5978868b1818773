"""capgate.testing: the pytest plugin and the attack corpus for tool authors.

See ``capgate.testing.plugin`` for fixtures; ``run_attack_corpus`` and ``assert_denied`` are
importable from here.
"""

from __future__ import annotations

from capgate.testing.harness import (
    ARGUMENTS,
    CANARY,
    KINDS,
    Finding,
    Findings,
    assert_denied,
    build_workspace,
    corpus,
    gate_for,
    run_attack_corpus,
)

__all__ = [
    "ARGUMENTS",
    "CANARY",
    "KINDS",
    "Finding",
    "Findings",
    "assert_denied",
    "build_workspace",
    "corpus",
    "gate_for",
    "run_attack_corpus",
]
