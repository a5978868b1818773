"""capgate: one capability gate for every file, network and process action an agent takes.

    import capgate
    from capgate import fs, net, proc
    from capgate.audit import AuditLog

    policy = capgate.load_policy("agent-permissions.json", workspace="/path/ws")
    with capgate.Gate(policy):
        fs.read_text("src/app.py")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from capgate.decision import Decision
from capgate.errors import (
    BackendUnavailable,
    CapgateError,
    ExpansionRefused,
    PermissionDenied,
    PolicyError,
    UnsupportedPlatform,
)
from capgate.gate import Gate, current_gate
from capgate.policy.model import Policy

if TYPE_CHECKING:
    from capgate import fs, net, proc
    from capgate.audit import AuditLog
    from capgate.policy.dump import load_effective_policy
    from capgate.policy.load import default_policy, load_policy

__all__ = [
    "AuditLog",
    "BackendUnavailable",
    "CapgateError",
    "Decision",
    "ExpansionRefused",
    "Gate",
    "PermissionDenied",
    "Policy",
    "PolicyError",
    "UnsupportedPlatform",
    "current_gate",
    "default_policy",
    "fs",
    "load_effective_policy",
    "load_policy",
    "net",
    "proc",
]

# Policy keeps its own module: its postponed annotations resolve there.
for _name in ("BackendUnavailable", "CapgateError", "Decision", "ExpansionRefused", "Gate", "PermissionDenied",
              "PolicyError", "UnsupportedPlatform"):
    globals()[_name].__module__ = "capgate"
del _name

__version__ = "0.1.0"


_LAZY = {
    "AuditLog": ("capgate.audit", "AuditLog"),
    "fs": ("capgate.fs", None),
    "net": ("capgate.net", None),
    "proc": ("capgate.proc", None),
    "load_policy": ("capgate.policy.load", "load_policy"),
    "default_policy": ("capgate.policy.load", "default_policy"),
    "load_effective_policy": ("capgate.policy.dump", "load_effective_policy"),
}


def __getattr__(name: str) -> object:
    # Heavy parts load on first use (``capgate.fs``, ``from capgate import load_policy``): a
    # soft-sandboxed child imports capgate at start-up and must not pay for, or expose, what
    # it does not use (``fs`` loads ctypes for openat2; ``load_policy`` loads pydantic).
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'capgate' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(spec[0])
    value = module if spec[1] is None else getattr(module, spec[1])
    globals()[name] = value
    return value
