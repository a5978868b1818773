"""capgate: one capability gate for every file, network and process action an agent takes.

    import capgate
    from capgate import fs, net, proc

    policy = capgate.load_policy("agent-permissions.json", workspace="/path/ws")
    with capgate.Gate(policy):
        fs.read_text("src/app.py")
"""

from __future__ import annotations

from capgate.decision import Decision
from capgate.errors import BackendUnavailable, CapgateError, PermissionDenied, PolicyError, UnsupportedPlatform
from capgate.gate import Gate, current_gate
from capgate.policy import Policy, default_policy, load_effective_policy, load_policy

__all__ = [
    "BackendUnavailable",
    "CapgateError",
    "Decision",
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

# Policy keeps its own module: pydantic resolves its (postponed) annotations there.
for _name in ("BackendUnavailable", "CapgateError", "Decision", "Gate", "PermissionDenied", "PolicyError",
              "UnsupportedPlatform"):
    globals()[_name].__module__ = "capgate"
del _name

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The acting modules load on first use (``capgate.fs`` or ``from capgate import fs``): a
    # soft-sandboxed child imports capgate at start-up and must not pay for, or expose, what
    # it does not use (``fs`` loads ctypes for openat2).
    if name in ("fs", "net", "proc"):
        import importlib

        return importlib.import_module(f"capgate.{name}")
    raise AttributeError(f"module 'capgate' has no attribute {name!r}")
