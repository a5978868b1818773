"""``capgate policy import --from srt``: an Anthropic sandbox-runtime (``srt``) settings file
(``~/.srt-settings.json``: ``filesystem``, ``network`` and more) as a capgate policy file, and
the list of what the capgate file cannot say.

The two models differ in one direction that matters: srt reads everything except
``denyRead`` and runs any command; capgate reads only beneath ``filesystem.read`` and runs only
``process.allowedCommands``. The import never widens past what srt allowed: it keeps capgate's
narrower defaults where srt has no equivalent and says so, and drops (with the reason) any
entry capgate's own parser refuses, so the result always loads. Each kept entry is checked by
that parser — the one place that decides what a policy entry means.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capgate.errors import PolicyError

__all__ = ["SrtImport", "import_srt_settings"]

# srt keys with no capgate counterpart, and why (the rest of the unknown keys: "ignored").
_TOP_LEVEL_NOTES = {
    "credentials": "credential masking/denial of files and environment variables: capgate never passes "
                   "the environment through beyond process.envPassthrough, and denies secret files by "
                   "filesystem.denyRead (add the files there)",
    "ignoreViolations": "capgate logs every denial; nothing is ignored",
    "enableWeakerNestedSandbox": "capgate has no weaker mode (use --backend soft where namespaces do not work)",
    "enableWeakerNetworkIsolation": "capgate has no weaker network mode",
    "ripgrep": "srt's own search helper: not used by capgate",
    "mandatoryDenySearchDepth": "capgate's mandatory write denials match at any depth",
    "allowPty": "capgate gives the child the terminal it was started from",
    "seccomp": "capgate's kernel layer is Landlock (and namespaces), configured by itself",
}
_NETWORK_NOTES = {
    "allowLocalBinding": "capgate has no listening sockets for the agent",
    "allowAllUnixSockets": "capgate allows only the sockets in network.allowedUnixSockets",
    "allowMachLookup": "macOS XPC services: capgate runs on Linux",
    "httpProxyPort": "capgate runs its own egress proxy",
    "socksProxyPort": "capgate runs its own egress proxy",
    "mitmProxy": "capgate does not route traffic to another proxy",
    "parentProxy": "capgate's egress proxy connects directly",
    "tlsTerminate": "capgate does not terminate TLS",
    "filterRequest": "per-request callbacks are a library feature, not a settings-file one",
}
_FILESYSTEM_NOTES = {
    "allowGitConfig": ".git/config is on capgate's mandatory write-deny list (a hostile config runs code)",
}


@dataclass
class SrtImport:
    """The converted policy (the policy file's own JSON shape) and one line per thing it
    could not express."""

    policy: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.policy, indent=2) + "\n"


def _strings(value: Any, key: str, notes: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        notes.append(f"{key}: not a list of strings in the srt file; left out")
        return []
    return list(value)


def _keep_accepted(entries: list[Any], key: str, check: Callable[[list[Any]], None], notes: list[str]) -> list[Any]:
    """The entries capgate's parser takes, one by one; each refused one is named with why."""
    kept: list[Any] = []
    for entry in entries:
        try:
            check([entry])
        except PolicyError as exc:
            reason = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
            notes.append(f"{key}: {json.dumps(entry if isinstance(entry, str) else entry.get('domain'))} left out: "
                         f"capgate refuses it ({reason})")
            continue
        kept.append(entry)
    return kept


def _checker(section: str, key: str, workspace: str, extra: dict[str, Any] | None = None
             ) -> Callable[[list[Any]], None]:
    def check(entries: list[Any]) -> None:
        from capgate.policy.load import default_policy, parse_policy_text
        from capgate.policy.merge import merge

        layer = {section: {key: entries, **(extra or {})}}
        merge(default_policy(workspace), parse_policy_text(json.dumps(layer)), allow_user_expansion=True,
              source="srt import")
    return check


def _is_ip_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _split_port(entry: str) -> tuple[str, str]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, ":port" or "")."""
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        return host + "]", rest
    host, sep, port = entry.rpartition(":")
    return (host, f":{port}") if sep and port.isdigit() else (entry, "")


def import_srt_settings(data: Any, *, workspace: str | None = None) -> SrtImport:
    """Convert srt settings (the parsed JSON) to a capgate policy file's contents. Raises
    ``PolicyError`` when ``data`` is not an srt settings object at all."""
    if not isinstance(data, dict) or not ({"filesystem", "network"} & set(data)):
        raise PolicyError("not an srt settings file: expected a JSON object with \"filesystem\" and/or "
                          "\"network\" (as in ~/.srt-settings.json)")
    ws = os.path.realpath(workspace or os.getcwd())
    notes: list[str] = []
    policy: dict[str, Any] = {"version": 1}

    for key in data:
        if key not in ("filesystem", "network"):
            notes.append(f"{key}: not expressible in capgate, left out"
                         + (f" ({_TOP_LEVEL_NOTES[key]})" if key in _TOP_LEVEL_NOTES else ""))

    fs_src = data.get("filesystem") or {}
    fs: dict[str, Any] = {}
    if isinstance(fs_src, dict):
        if fs_src.get("disabled") is True:
            notes.append("filesystem.disabled: capgate always enforces its filesystem policy; the rules "
                         "below apply")
        for key, why in _FILESYSTEM_NOTES.items():
            if fs_src.get(key):
                notes.append(f"filesystem.{key}: not expressible, left out ({why})")
        for key in fs_src:
            if key not in ("disabled", "denyRead", "allowRead", "allowWrite", "denyWrite", *_FILESYSTEM_NOTES):
                notes.append(f"filesystem.{key}: unknown to this import, left out")
        deny_read = _strings(fs_src.get("denyRead"), "filesystem.denyRead", notes)
        allow_read = _strings(fs_src.get("allowRead"), "filesystem.allowRead", notes)
        allow_write = _strings(fs_src.get("allowWrite"), "filesystem.allowWrite", notes)
        deny_write = _strings(fs_src.get("denyWrite"), "filesystem.denyWrite", notes)
        notes.append("reads: srt reads everywhere except denyRead; capgate reads only beneath filesystem.read "
                     "(the workspace" + (" and the allowRead paths" if allow_read else "") + "): add what "
                     "the agent must read there, or grant it with --allow-read")
        if allow_read:
            notes.append("filesystem.allowRead: kept as read roots, but capgate's deny patterns always win: "
                         "a path inside a denyRead entry stays denied")
        if deny_read:
            fs["denyRead"] = _keep_accepted(deny_read, "filesystem.denyRead",
                                            _checker("filesystem", "denyRead", ws), notes)
        if allow_read:
            fs["read"] = _keep_accepted([".", *allow_read], "filesystem.allowRead",
                                        _checker("filesystem", "read", ws), notes)
        fs["write"] = _keep_accepted(allow_write, "filesystem.allowWrite", _checker("filesystem", "write", ws), notes)
        if deny_write:
            fs["denyWrite"] = _keep_accepted(deny_write, "filesystem.denyWrite",
                                             _checker("filesystem", "denyWrite", ws), notes)
        if any(not p.startswith(("/", "~")) for p in [*deny_read, *allow_read, *allow_write, *deny_write]):
            notes.append("relative paths: srt resolves them against the directory it runs in, capgate against "
                         "the workspace (--workspace, default the current directory); a denyRead/denyWrite "
                         "entry without a slash matches that name at any depth in capgate")
    policy["filesystem"] = fs

    net_src = data.get("network") or {}
    net: dict[str, Any] = {"enabled": False}
    if isinstance(net_src, dict):
        for key, why in _NETWORK_NOTES.items():
            if net_src.get(key) not in (None, False, [], {}):
                notes.append(f"network.{key}: not expressible, left out ({why})")
        for key in net_src:
            if key not in ("allowedDomains", "deniedDomains", "deniedDomainReasons", "strictAllowlist",
                           "allowUnixSockets", *_NETWORK_NOTES):
                notes.append(f"network.{key}: unknown to this import, left out")
        allowed = _strings(net_src.get("allowedDomains"), "network.allowedDomains", notes)
        denied = _strings(net_src.get("deniedDomains"), "network.deniedDomains", notes)
        reasons = net_src.get("deniedDomainReasons") or {}
        if not isinstance(reasons, dict):
            reasons = {}
        domains = [e for e in allowed if not _is_ip_literal(_split_port(e)[0])]
        addresses = [_split_port(e)[0].strip("[]") + _split_port(e)[1] if not _split_port(e)[0].startswith("[")
                     else e for e in allowed if _is_ip_literal(_split_port(e)[0])]
        if "localhost" in [_split_port(e)[0] for e in domains]:
            addresses += ["127.0.0.1", "::1"]
            notes.append("localhost: capgate refuses loopback addresses unless listed; 127.0.0.1 and ::1 are "
                         "in network.allowedAddresses")
        if any("*" == _split_port(e)[0] for e in denied):
            notes.append("network.deniedDomains \"*\": a deny-all; capgate denies every host not in "
                         "allowedDomains already" + (" (and here the network stays off)" if not allowed else ""))
            denied = [e for e in denied if _split_port(e)[0] != "*"]
        extra = {"enabled": True}
        net["allowedDomains"] = _keep_accepted(domains, "network.allowedDomains",
                                               _checker("network", "allowedDomains", ws, extra), notes)
        if addresses:
            net["allowedAddresses"] = _keep_accepted(addresses, "network.allowedAddresses",
                                                     _checker("network", "allowedAddresses", ws, extra), notes)
        denied_entries: list[Any] = [{"domain": e, "reason": reasons[e]} if isinstance(reasons.get(e), str) else e
                                     for e in denied]
        if denied_entries:
            net["deniedDomains"] = _keep_accepted(denied_entries, "network.deniedDomains",
                                                  _checker("network", "deniedDomains", ws, extra), notes)
        sockets = _strings(net_src.get("allowUnixSockets"), "network.allowUnixSockets", notes)
        if sockets:
            notes.append("network.allowUnixSockets: kept as network.allowedUnixSockets; srt honours them on "
                         "macOS only (on Linux it blocks every Unix socket): drop any the agent does not need")
            net["allowedUnixSockets"] = _keep_accepted(sockets, "network.allowUnixSockets",
                                                       _checker("network", "allowedUnixSockets", ws, extra), notes)
        net["enabled"] = bool(net["allowedDomains"] or net.get("allowedAddresses"))
        if any(not _split_port(e)[1] for e in net["allowedDomains"]):
            notes.append("ports: an srt domain without :port allows any port; in capgate it allows "
                         "network.allowedPorts ([443]): add ports there, or write host:port")
    policy["network"] = net
    notes.append("commands: srt runs any command inside its sandbox; capgate runs only "
                 "process.allowedCommands (none here): add the ones the agent needs, or grant them "
                 "with --allow-run")
    return SrtImport(policy, notes)
