"""The backend seam: what a sandbox backend must answer and do.

A backend says whether it can run here (and why not), and launches one prepared run. The
launcher owns everything around it: the policy, the banner, the audit log, the summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from capgate.audit import AuditLog
    from capgate.policy.model import Policy

__all__ = ["Backend", "LaunchRequest", "LaunchResult"]


@dataclass(frozen=True)
class LaunchRequest:
    """One prepared run: the effective policy, the resolved command, and where things live."""

    argv: tuple[str, ...]
    policy: Policy
    policy_file: str  # the effective policy JSON the child reads (CAPGATE_POLICY)
    run_dir: str  # launcher-owned: boot/, home/, tmp/, policy.json
    home: str  # the sandbox HOME
    tmpdir: str  # the private TMPDIR
    python_child: bool
    environ: dict[str, str] = field(default_factory=dict)  # the caller's environment
    confine: Any = None  # a capgate._sys.landlock.Plan for the child tree, or None (no Landlock)
    mount_read: tuple[str, ...] = ()  # host files outside the read roots the child must see (its script)
    credentials: Any = None  # a capgate.credentials.CredentialSet (real values: the proxy's alone)
    upstream_ca: tuple[str, ...] = ()  # extra roots for the proxy's TLS to inspected hosts
    on_misuse: Any = None  # called (reason) when a placeholder goes elsewhere and the policy ends the run
    # A capgate.staging.store.StagedRun for ``--staged``: the backend mounts an overlay of the
    # workspace (lower) with its ``upper``/``work`` directories, and writes nothing else there.
    staging: Any = None
    # Its ``capgate.staging.store.RunLock``: a backend whose tree can outlive the launcher (the
    # container runtime's client) hands its descriptor on, so the run reads as ``running``
    # until that tree is gone, not ``interrupted`` while it still writes the upper directory.
    staging_lock: Any = None


@dataclass
class LaunchResult:
    """How a launched child ended, for the launcher's summary and the audit log."""

    returncode: int
    timed_out: bool = False
    duration: float = 0.0
    limits_fired: Sequence[str] = ()
    child_activated: bool = False  # a Python child reported that its hooks were active
    native_execs: int = 0  # non-Python programs the hooked part of the tree started (unhooked)


class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, why not)``."""
        ...

    def launch(self, request: LaunchRequest, audit: AuditLog) -> LaunchResult:
        """Run the child to completion (inheriting stdio) and return how it ended."""
        ...
