"""Merging a user file onto a base policy (the built-in defaults, or the policy a sandbox
was given): restrict-only unless expansion is allowed.

Restrict-only: the user may narrow roots, add denies, lower limits and drop domains, ports,
commands and env names. Entries that would add a permission are collected, and the merge then
fails with one ``ExpansionRefused`` listing every one of them in the file's own spelling, with
the three ways to allow them (the user-level file, a command-line grant, expansion allowed).
With expansion allowed (a trusted source: the user-level file, a grant, or a workspace file
under ``--allow-user-expansion``) the user lists replace the base lists, but deny lists only
ever *add*, and the mandatory write-deny list always stays. Every widening entry is recorded
on the policy (``Policy.widened``) with the source it came from.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from capgate.errors import ExpansionRefused, PolicyError
from capgate.paths import anchor_pattern, glob_regexes, is_within, resolve_root
from capgate.policy.defaults import MANDATORY_DENY_WRITE
from capgate.policy.model import (
    Credential,
    DeniedDomain,
    DenyPattern,
    FilesystemPolicy,
    Limits,
    NetworkPolicy,
    Policy,
    ProcessPolicy,
    RequestRule,
)

if TYPE_CHECKING:
    from capgate.policy.schema import CredentialEntry, PolicyFile

__all__ = ["build_deny_patterns", "merge", "spell"]


def spell(value: object) -> str:
    """A value as the policy file spells it (JSON: ``true``, ``"git"``, ``3600``)."""
    return json.dumps(value, ensure_ascii=False)


class _Merge:
    def __init__(self, base: Policy, expand: bool, label: str, trusted: bool = False) -> None:
        self.base = base
        self.expand = expand
        self.trusted = trusted  # the user-level file or a grant (never the workspace file)
        self.label = label
        self.expanded = False
        self.widened: list[tuple[str, str]] = []
        self.refused: list[tuple[str, object, object]] = []

    def widen(self, key: str, entry: object, what: str, canonical: object = None) -> None:
        """Record a widening entry (expansion allowed), or collect it for the refusal.
        ``canonical`` is what a command-line grant would need to say (an absolute root)."""
        del what  # (kept at the call sites: it says why the entry widens)
        if not self.expand:
            self.refused.append((key, entry, entry if canonical is None else canonical))
            return
        self.expanded = True
        if self.label.startswith("--"):  # a grant: its list index is the merge's, not the user's
            key = key.rsplit("[", 1)[0] if key.endswith("]") else key
        self.widened.append((f"{key}: {spell(entry)}", self.label))

    def roots(self, section: str, given: Sequence[str] | None, base_roots: tuple[str, ...]) -> tuple[str, ...]:
        if given is None:
            return base_roots
        ws, home = self.base.workspace, self.base.home
        out: list[str] = []
        for i, entry in enumerate(given):
            key = f"{section}[{i}]"
            root = resolve_root(entry, ws, home, key)
            if not any(is_within(root, b) for b in base_roots):
                self.widen(key, entry, f"access to {root}", root)
            if root not in out:
                out.append(root)
        return tuple(out)

    def subset(self, key: str, given: Sequence[object] | None, base_items: Sequence[object], what: str) -> tuple:  # type: ignore[type-arg]
        if given is None:
            return tuple(base_items)
        for i, item in enumerate(given):
            if item not in base_items:
                self.widen(f"{key}[{i}]", item, what)
        return tuple(dict.fromkeys(given))

    def flag(self, key: str, given: bool | None, base_value: bool) -> bool:
        if given is None:
            return base_value
        if given and not base_value:
            self.widen(key, given, "turns a permission on")
        return given

    def limit(self, key: str, given: int | None, base_value: int) -> int:
        if given is None:
            return base_value
        if given > base_value:
            self.widen(key, given, f"raises the limit above {base_value}")
        return given


# The command-line grant that allows an entry of each list (key prefix -> flag).
_GRANT_FLAGS = {
    "filesystem.read[": "--allow-read",
    "filesystem.write[": "--allow-write",
    "network.allowedDomains[": "--allow-net",
    "network.allowedAddresses[": "--allow-net",
    "process.allowedCommands[": "--allow-run",
    "process.envPassthrough[": "--allow-env",
}


def _refusal(source: str, refused: Sequence[tuple[str, object, object]]) -> ExpansionRefused:
    """One error listing every widening entry and the three ways to allow them."""
    from capgate.policy.sources import user_config_display

    entries = [(key, spell(entry)) for key, entry, _ in refused]
    grants: list[str] = []
    for key, _, value in refused:
        flag = next((f for prefix, f in _GRANT_FLAGS.items() if key.startswith(prefix)), None)
        if flag is not None:
            grants.append(f"{flag} {shlex.quote(str(value))}")
    implied = {"network.enabled"} if any(g.startswith("--allow-net ") for g in grants) else set()
    ungrantable = [k for k, _, _ in refused if not any(k.startswith(p) for p in _GRANT_FLAGS) and k not in implied]
    lines = [f"{source} may only narrow the permissions (a workspace policy file is not trusted to widen "
             "them); these entries would widen them:"]
    lines += [f"  {key}: {value}" for key, value in entries]
    lines.append("to allow them, do one of these:")
    lines.append(f"  - put them in your user-level policy file, {user_config_display()} (same format)")
    if grants:
        note = f" ({', '.join(ungrantable)} only through the other two)" if ungrantable else ""
        lines.append(f"  - grant them on the command line: {' '.join(grants)}{note}")
    else:
        lines.append("  - (these have no command-line grant; --allow-read, --allow-write, --allow-net, --allow-run "
                     "and --allow-env cover roots, hosts, commands and variables)")
    lines.append("  - trust this file to widen them: --allow-user-expansion")
    return ExpansionRefused("\n".join(lines), source, entries)


def build_deny_patterns(
    entries: Sequence[tuple[str, str, bool]], workspace: str, home: str
) -> tuple[DenyPattern, ...]:
    """``(source, key, mandatory)`` triples → anchored, de-duplicated ``DenyPattern``s."""
    out: list[DenyPattern] = []
    seen: set[str] = set()
    for source, key, mandatory in entries:
        if source in seen:
            continue
        seen.add(source)
        anchored = anchor_pattern(source, workspace, home, key)
        try:
            regexes = glob_regexes(anchored)
        except PolicyError as exc:
            raise PolicyError(f"{key} {source!r}: {exc}", key) from None
        except Exception as exc:  # pathspec's GitIgnorePatternError, re.error, ...
            raise PolicyError(f"{key} {source!r}: not a valid gitignore pattern ({exc})", key) from None
        out.append(DenyPattern(source, anchored, key, mandatory, regexes))
    return tuple(out)


def _deny_list(
    base: tuple[DenyPattern, ...], given: Sequence[str] | None, section: str, workspace: str, home: str
) -> tuple[DenyPattern, ...]:
    entries = [(p.source, p.key, p.mandatory) for p in base]
    for i, source in enumerate(given or ()):
        entries.append((source, f"{section}[{i}]", False))
    return build_deny_patterns(entries, workspace, home)


def _merge_network(m: _Merge, user: PolicyFile) -> NetworkPolicy:
    from capgate import addresses, hosts

    base = m.base.network
    section = user.network
    if section is None:
        return base
    enabled = m.flag("network.enabled", section.enabled, base.enabled)
    allowed_domains = base.allowed_domains
    if section.allowed_domains is not None:
        normalized = []
        for i, entry in enumerate(section.allowed_domains):
            key = f"network.allowedDomains[{i}]"
            canonical = hosts.normalize_domain_entry(entry, key)
            if not hosts.domain_entry_within(canonical, base.allowed_domains, base.allowed_ports):
                m.widen(key, entry, "a new destination")
            normalized.append(canonical)
        allowed_domains = tuple(dict.fromkeys(normalized))
    denied = list(base.denied_domains)
    for i, item in enumerate(section.denied_domains or ()):
        key = f"network.deniedDomains[{i}]"
        if not isinstance(item, str):
            denied.append(DeniedDomain(hosts.normalize_domain_entry(item.domain, key), item.reason))
        else:
            denied.append(DeniedDomain(hosts.normalize_domain_entry(item, key)))
    allowed_addresses = base.allowed_addresses
    if section.allowed_addresses is not None:
        normalized = []
        for i, entry in enumerate(section.allowed_addresses):
            key = f"network.allowedAddresses[{i}]"
            canonical = addresses.normalize_address_entry(entry, key)
            if not addresses.address_entry_within(canonical, base.allowed_addresses):
                m.widen(key, entry, "a new address")
            normalized.append(canonical)
        allowed_addresses = tuple(dict.fromkeys(normalized))
    ports = m.subset("network.allowedPorts", section.allowed_ports, base.allowed_ports, "a new port")
    sockets = base.allowed_unix_sockets
    if section.allowed_unix_sockets is not None:
        sockets = m.roots("network.allowedUnixSockets", section.allowed_unix_sockets, base.allowed_unix_sockets)
    credentials = base.credentials
    if section.credentials is not None:
        credentials, new_hosts = _merge_credentials(m, section.credentials)
        for entry in new_hosts:
            if not hosts.domain_entry_within(entry, allowed_domains, ports):
                allowed_domains = (*allowed_domains, entry)
        if new_hosts and section.enabled is None:
            enabled = True  # (a credential allows its host, as --allow-net does: the network is on)
    rules = list(base.request_rules)
    for i, rule in enumerate(section.request_rules or ()):
        key = f"network.requestRules[{len(rules)}]"
        host, port = exact_host(rule.host, f"network.requestRules[{i}].host")
        methods = tuple(dict.fromkeys(rule.methods or ()))
        if any(not method.isupper() for method in methods):
            raise PolicyError(f"network.requestRules[{i}].methods: methods are upper-case ({list(methods)})",
                              f"network.requestRules[{i}].methods")
        for j, path in enumerate(rule.paths or ()):
            if not path.startswith("/"):
                raise PolicyError(f"network.requestRules[{i}].paths[{j}] {path!r}: a path pattern starts with /",
                                  f"network.requestRules[{i}].paths[{j}]")
        rules.append(RequestRule(host, port, methods, tuple(dict.fromkeys(rule.paths or ())), key))
    end_run = base.end_run_on_credential_misuse
    given = section.end_run_on_credential_misuse
    if given is not None:
        if end_run and not given:
            m.widen("network.endRunOnCredentialMisuse", given, "lets a run go on after a misused placeholder")
        end_run = given
    return NetworkPolicy(
        enabled=enabled,
        allowed_domains=allowed_domains,
        denied_domains=tuple(dict.fromkeys(denied)),
        allowed_addresses=allowed_addresses,
        allowed_ports=ports,
        allowed_unix_sockets=sockets,
        credentials=credentials,
        request_rules=tuple(rules),
        resolve=base.resolve,
        end_run_on_credential_misuse=end_run,
    )


def exact_host(entry: str, key: str) -> tuple[str, int]:
    """``host[:port]`` (an exact name, port 443 by default) as ``(host, port)``, or a
    ``PolicyError`` naming ``key`` (a wildcard has no single certificate name to inspect)."""
    from capgate import hosts

    canonical = hosts.normalize_domain_entry(entry, key)
    if canonical.startswith("*"):
        raise PolicyError(f"{key} {entry!r}: an exact host name, not a wildcard", key)
    host, sep, port = canonical.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host, int(port)
    return canonical, 443


_LAUNCHER_SET = frozenset({"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                           "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "PIP_CERT", "NODE_OPTIONS", "NODE_USE_ENV_PROXY",
                           "AGENT_IN_SANDBOX", "SOFT_SANDBOX", "NO_PROXY"})


def _reserved_child_env(name: str) -> bool:
    """A name the placeholder must not take: one the child's environment never passes on
    (``clean_env``: LD_*, PYTHON*, proxy variables, PATH, HOME...) or the launcher sets."""
    from capgate._sys.clean_env import is_never_passed

    upper = name.upper()
    return is_never_passed(name) or upper in _LAUNCHER_SET or upper.startswith("CAPGATE_")


def _merge_credentials(m: _Merge, given: Sequence[CredentialEntry]) -> tuple[tuple[Credential, ...], list[str]]:
    """Credentials from a trusted layer, appended to the base's; refused from any other. Returns
    them and the ``host:port`` entries they allow."""
    from capgate.policy.sources import user_config_display

    if not m.trusted:
        key = "network.credentials[0]" if given else "network.credentials"
        shown = f" (${given[0].child_env} for {given[0].host})" if given else ""
        raise PolicyError(
            f"{key}{shown}: a workspace policy file may never add, change or redirect a credential (not even with "
            f"--allow-user-expansion); list credentials in your user-level file, {user_config_display()}, or "
            "grant one with --credential NAME@HOST/HEADER", key)
    out = list(m.base.network.credentials)
    allowed: list[str] = []
    for item in given:
        key = f"network.credentials[{len(out)}]"
        host, port = exact_host(item.host, f"{key}.host")
        secret = item.secret
        kind, _, where = secret.partition(":")
        if kind not in ("env", "file") or not where:
            raise PolicyError(f"{key}.secret: 'env:NAME' or 'file:PATH' (where the launcher reads the real value)",
                              f"{key}.secret")
        if kind == "file" and not where.startswith(("/", "~/")):
            raise PolicyError(f"{key}.secret {secret!r}: the file's path must be absolute", f"{key}.secret")
        if kind == "file" and where.startswith("~/"):
            import os

            secret = "file:" + os.path.join(m.base.home, where[2:])
        child_env = item.child_env
        if _reserved_child_env(child_env):
            raise PolicyError(f"{key}.childEnv {child_env!r}: a variable the launcher sets or never passes to a child "
                              "(loader, interpreter, proxy, certificate, capgate's own); name another",
                              f"{key}.childEnv")
        if any(c.child_env == child_env for c in out):
            raise PolicyError(f"{key}.childEnv {child_env!r}: another credential already uses this variable",
                              f"{key}.childEnv")
        out.append(Credential(host, port, item.header, secret, child_env, key))
        m.widened.append((f"{key}: {spell(f'{host}:{port}/{item.header}')} (placeholder in ${child_env}; the "
                          "host is allowed)", m.label))
        allowed.append(f"{host}:{port}")
    return tuple(out), allowed


def _check_command_entry(entry: str, key: str) -> None:
    if "/" in entry and not entry.startswith("/"):
        raise PolicyError(f"{key} {entry!r}: a command is a bare name or an absolute path", key)


def _merge_process(m: _Merge, user: PolicyFile) -> ProcessPolicy:
    base = m.base.process
    section = user.process
    if section is None:
        return base
    for i, entry in enumerate(section.allowed_commands or ()):
        _check_command_entry(entry, f"process.allowedCommands[{i}]")
    commands = m.subset("process.allowedCommands", section.allowed_commands, base.allowed_commands, "a new command")
    shell = m.flag("process.allowShell", section.allow_shell, base.allow_shell)
    env = m.subset("process.envPassthrough", section.env_passthrough, base.env_passthrough, "a new variable")
    denied_args = dict(base.denied_arguments)
    for name, patterns in (section.denied_arguments or {}).items():
        denied_args[name] = tuple(dict.fromkeys(denied_args.get(name, ()) + tuple(patterns)))
    return ProcessPolicy(
        allowed_commands=commands,
        allow_shell=shell,
        env_passthrough=env,
        denied_arguments=tuple(sorted(denied_args.items())),
    )


def _merge_limits(m: _Merge, user: PolicyFile) -> Limits:
    base = m.base.limits
    section = user.limits
    if section is None:
        return base
    values = {}
    for name in Limits.__dataclass_fields__:
        given = getattr(section, name)
        alias = type(section).model_fields[name].alias or name
        values[name] = m.limit(f"limits.{alias}", given, getattr(base, name))
    return Limits(**values)


def merge(base: Policy, user: PolicyFile, *, allow_user_expansion: bool, source: str | None,
          label: str | None = None, keep_source: bool = False, trusted: bool = False) -> Policy:
    """Apply ``user`` on top of ``base``; see the module docstring for the rules.

    ``label`` names the source in ``Policy.widened`` (default: the workspace file under
    ``--allow-user-expansion``). ``keep_source``: a trusted layer (the user-level file, a grant)
    leaves ``origin`` and ``source``, which describe the workspace file, as they were.
    ``trusted``: the layer is the user-level file or a grant, the only ones that may hold
    ``network.credentials`` (from any other it is a ``PolicyError``, expansion or not)."""
    m = _Merge(base, allow_user_expansion, label or f"{source or 'the policy file'} (--allow-user-expansion)",
               trusted)
    ws, home = base.workspace, base.home
    fs_base = base.filesystem
    fs_user = user.filesystem
    if fs_user is None:
        filesystem = fs_base
    else:
        filesystem = FilesystemPolicy(
            read=m.roots("filesystem.read", fs_user.read, fs_base.read),
            write=m.roots("filesystem.write", fs_user.write, fs_base.write),
            deny_read=_deny_list(fs_base.deny_read, fs_user.deny_read, "filesystem.denyRead", ws, home),
            deny_write=_deny_list(fs_base.deny_write, fs_user.deny_write, "filesystem.denyWrite", ws, home),
            recursive_delete=m.roots("filesystem.recursiveDelete", fs_user.recursive_delete, fs_base.recursive_delete),
            runtime_read=fs_base.runtime_read,
            protected=fs_base.protected,
        )
    merged = replace(
        base,
        filesystem=filesystem,
        network=_merge_network(m, user),
        process=_merge_process(m, user),
        limits=_merge_limits(m, user),
        widened=base.widened + tuple(m.widened),
    )
    if m.refused:
        raise _refusal(source or "the policy file", m.refused)
    if not keep_source:
        merged = replace(merged, origin="expanded" if m.expanded else "restrict-only", source=source)
    return merged


def mandatory_deny_entries() -> list[tuple[str, str, bool]]:
    return [(p, f"mandatory.denyWrite[{i}]", True) for i, p in enumerate(MANDATORY_DENY_WRITE)]
