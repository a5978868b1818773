"""The effective, canonical policy: what every mechanism asks questions of.

A ``Policy`` is built once (``capgate.load_policy``) and never changes. Paths in it are
absolute and symlink-resolved; deny patterns keep their source text (for messages and rule
pointers) next to the absolute patterns they were anchored to. Mechanisms (``fs``, ``net``,
``proc``, the soft sandbox, the container backend) ask this object; none re-derives rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Credential",
    "DeniedDomain",
    "DenyPattern",
    "FilesystemPolicy",
    "Limits",
    "NetworkPolicy",
    "Origin",
    "Policy",
    "ProcessPolicy",
    "RequestRule",
    "ResolveEntry",
]

Origin = Literal["defaults", "restrict-only", "expanded"]


@dataclass(frozen=True)
class DenyPattern:
    """One deny entry: ``source`` as the user (or default) wrote it, ``anchored`` the
    gitignore patterns relative to ``/`` that it stands for (more than one when a symlink
    in its literal prefix resolved elsewhere: both spellings are denied)."""

    source: str
    anchored: tuple[str, ...]
    key: str  # stable rule pointer, e.g. "filesystem.denyRead[3]"
    mandatory: bool = False
    # (gitignore line, regex) pairs compiled from ``anchored`` when the policy was built, so
    # a sandboxed child can rebuild the matcher without importing pathspec.
    regexes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FilesystemPolicy:
    """Where files may be read and written: canonical roots, and the deny patterns that win
    over them. (Every dataclass here has a docstring: without one, ``dataclasses`` computes
    ``inspect.signature`` for it at import, on every sandboxed child's start-up.)"""

    read: tuple[str, ...]
    write: tuple[str, ...]
    deny_read: tuple[DenyPattern, ...]
    deny_write: tuple[DenyPattern, ...]  # user + default + mandatory, in that order of keys
    recursive_delete: tuple[str, ...] = ()
    # Read-only roots a runtime needs (interpreter, certificates) — added by the soft
    # sandbox, never by a user file, and shown as such in the dry-run.
    runtime_read: tuple[str, ...] = ()
    # Exact files nobody under the gate may write: the policy file, the audit log.
    protected: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeniedDomain:
    """A host (or ``*.suffix``) that is never reached, with the reason shown in denials."""

    domain: str
    reason: str | None = None


@dataclass(frozen=True)
class Credential:
    """A secret the egress proxy puts into requests to one host (design.md, "Credentials"):
    the child only ever holds a placeholder in ``child_env``. ``secret`` says where the launcher
    reads the real value (``env:NAME`` or ``file:PATH``) — never the value itself, so this
    object may be printed, logged and handed to the child. ``key``: the entry it came from."""

    host: str
    port: int
    header: str
    secret: str
    child_env: str
    key: str


@dataclass(frozen=True)
class RequestRule:
    """Per-request limits on an inspected host: allowed ``methods`` (empty: any) and path
    ``*``-globs (empty: any). Every rule naming a host must pass (rules only narrow)."""

    host: str
    port: int
    methods: tuple[str, ...]
    paths: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class ResolveEntry:
    """``--resolve HOST:PORT:ADDR``: the gate and the proxy resolve HOST (on PORT) to ADDR."""

    host: str
    port: int
    address: str


@dataclass(frozen=True)
class NetworkPolicy:
    """Outbound connections: off unless enabled; then allowed hosts, addresses and ports."""

    enabled: bool = False
    allowed_domains: tuple[str, ...] = ()  # normalized entries, "host", "*.host", "host:port"
    denied_domains: tuple[DeniedDomain, ...] = ()
    allowed_addresses: tuple[str, ...] = ()  # "ip", "cidr", optionally ":port" / "[v6]:port"
    allowed_ports: tuple[int, ...] = (443,)
    allowed_unix_sockets: tuple[str, ...] = ()  # canonical absolute paths
    credentials: tuple[Credential, ...] = ()  # trusted sources only (the user-level file, --credential)
    request_rules: tuple[RequestRule, ...] = ()
    resolve: tuple[ResolveEntry, ...] = ()  # --resolve only
    end_run_on_credential_misuse: bool = False


@dataclass(frozen=True)
class ProcessPolicy:
    """Which commands may run, whether a shell may, the environment that reaches them, and
    argument patterns refused per command."""

    allowed_commands: tuple[str, ...] = ()  # bare names or absolute paths
    allow_shell: bool = False
    env_passthrough: tuple[str, ...] = ("LANG", "LC_ALL", "TERM")
    denied_arguments: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def denied_arguments_for(self, command: str) -> tuple[str, ...]:
        for name, patterns in self.denied_arguments:
            if name == command:
                return patterns
        return ()


@dataclass(frozen=True)
class Limits:
    """Resource limits of a run (and of every process it starts)."""

    wall_time_seconds: int = 900
    cpu_seconds: int = 600
    memory_mb: int = 2048
    max_processes: int = 64
    max_open_files: int = 1024
    max_file_size_mb: int = 256
    output_quota_mb: int = 1024
    max_captured_output_mb: int = 16


@dataclass(frozen=True)
class Policy:
    """The effective policy. Build it with ``capgate.load_policy``."""

    workspace: str
    home: str
    filesystem: FilesystemPolicy
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    process: ProcessPolicy = field(default_factory=ProcessPolicy)
    limits: Limits = field(default_factory=Limits)
    origin: Origin = "defaults"
    source: str | None = None  # the user file it came from, if any
    # Every entry that widened the defaults, as ("key: value" in the file's spelling, where it
    # came from): the user-level file, a command-line grant, an expanded workspace file.
    widened: tuple[tuple[str, str], ...] = ()
    version: int = 1

    def to_dict(self, *, redact: bool = False) -> dict[str, object]:
        """The effective policy as JSON-ready data (see ``policy.dump``)."""
        from capgate.policy.dump import policy_to_dict

        return policy_to_dict(self, redact=redact)

    def to_json(self, *, redact: bool = False) -> str:
        import json

        return json.dumps(self.to_dict(redact=redact), indent=2, sort_keys=False)
