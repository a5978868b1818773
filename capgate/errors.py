"""Exceptions raised by capgate.

The tree::

    CapgateError                      common base, never raised itself
    ├── PermissionDenied              (also PermissionError) the gate said no
    ├── PolicyError                   (also ValueError) bad, oversized or expanding config
    │   └── ExpansionRefused          a restrict-only file would widen the permissions
    ├── BackendUnavailable            (also RuntimeError) a requested sandbox backend cannot run
    ├── StagingError                  (also RuntimeError) a staged run cannot be found, read or changed
    └── UnsupportedPlatform           (also OSError) a mechanism capgate refuses to weaken

``Gate.check`` never raises for a denial; the acting APIs (``fs``, ``net``, ``proc``)
raise ``PermissionDenied`` so that ordinary ``except PermissionError`` code keeps working.
"""

from __future__ import annotations

import errno

__all__ = [
    "BackendUnavailable",
    "CapgateError",
    "ExpansionRefused",
    "PermissionDenied",
    "PolicyError",
    "StagingError",
    "UnsupportedPlatform",
]


class CapgateError(Exception):
    """Base class of every error capgate raises on purpose."""


class PermissionDenied(CapgateError, PermissionError):
    """Raised when the gate denies an operation.

    ``op`` is the operation name (``fs.read``), ``target`` the target as shown to people
    (home shown as ``~``), ``reason`` why, ``rule`` a stable pointer into the policy
    (``filesystem.denyRead[0]``) that a user can grep for.
    """

    def __init__(self, op: str, target: str, reason: str, rule: str) -> None:
        super().__init__(errno.EACCES, f"{op} denied: {target} ({reason})", target)
        self.op = op
        self.target = target
        self.reason = reason
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.op} denied: {self.target} ({self.reason})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.op, self.target, self.reason, self.rule))


class PolicyError(CapgateError, ValueError):
    """Raised for an invalid, oversized or (without expansion allowed) widening policy.

    The message names the key path (``filesystem.read[0]``) and, for a widening entry,
    the flag that would allow it.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ExpansionRefused(PolicyError):
    """A restrict-only policy file (the workspace's, or ``--policy``) holds entries that would
    widen the permissions. ``entries`` lists every one as ``(key path, value as the file spells
    it)``; the message lists them too, with the three ways to allow them."""

    def __init__(self, message: str, source: str, entries: list[tuple[str, str]]) -> None:
        super().__init__(message, entries[0][0] if entries else None)
        self.source = source
        self.entries = entries


class BackendUnavailable(CapgateError, RuntimeError):
    """Raised when a sandbox backend that was asked for by name cannot run here."""


class UnsupportedPlatform(CapgateError, OSError):
    """Raised where capgate would otherwise have to run with weaker checks than on Linux."""


class StagingError(CapgateError, RuntimeError):
    """Raised when a staged run (``capgate run --staged``, ``changes``, ``apply``, ``discard``)
    cannot be found, read or changed: no such run, a staging directory that is not the user's
    alone, a run whose launcher still holds it."""
