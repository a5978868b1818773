"""The effective policy as JSON, and back.

The same camelCase JSON is what ``--dry-run-policy`` and ``capgate policy show`` print and
what the launcher hands a sandboxed child through ``CAPGATE_POLICY``: absolute paths, every
deny pattern with the absolute patterns it was anchored to, and ``origin`` (``defaults``,
``restrict-only`` or ``expanded``). Reading it back is strict — unknown keys, missing keys
without a default and wrong types (``"1"`` for a number, ``1`` for a boolean) are refused,
naming the key — and needs no pydantic: a sandboxed child reads this at start-up, where
every millisecond of import counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from functools import cache
from typing import Any, Literal, Union

from capgate.errors import PolicyError
from capgate.policy import model
from capgate.policy.model import Policy

__all__ = [
    "FORMAT",
    "check_launcher_file",
    "load_effective_policy",
    "policy_from_dict",
    "policy_to_dict",
    "policy_to_file_dict",
]

FORMAT = "capgate-effective-policy"
MAX_EFFECTIVE_BYTES = 4 * 1024 * 1024


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value


def policy_to_dict(policy: Policy, *, redact: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"format": FORMAT}
    data.update(_to_json(policy))
    if redact:
        # Nothing in a policy is a credential, but denial reasons are free text a user may
        # have pasted a token into: keep them out of shared logs.
        for entry in data["network"]["deniedDomains"]:
            if entry.get("reason"):
                entry["reason"] = "<redacted>"
    return data


def policy_to_file_dict(policy: Policy) -> dict[str, Any]:
    """The effective policy in the policy file's own format (``agent-permissions.json``): what
    ``capgate policy show`` and ``--dry-run-policy`` print, a file ``capgate policy validate``
    accepts. Roots are absolute; deny patterns are shown as written (the mandatory write-deny
    list is left out: it holds whatever a file says); denial reasons are redacted. What the
    launcher adds at run time (runtime read roots, protected files) is not policy-file
    material: ``--internal`` shows the compiled form with it."""
    fs, net, proc, limits = policy.filesystem, policy.network, policy.process, policy.limits
    denied: list[Any] = [d.domain if d.reason is None else {"domain": d.domain, "reason": "<redacted>"}
                         for d in net.denied_domains]
    return {
        "version": policy.version,
        "filesystem": {
            "read": list(fs.read),
            "write": list(fs.write),
            "denyRead": [p.source for p in fs.deny_read],
            "denyWrite": [p.source for p in fs.deny_write if not p.mandatory],
            "recursiveDelete": list(fs.recursive_delete),
        },
        "network": {
            "enabled": net.enabled,
            "allowedDomains": list(net.allowed_domains),
            "deniedDomains": denied,
            "allowedAddresses": list(net.allowed_addresses),
            "allowedPorts": list(net.allowed_ports),
            "allowedUnixSockets": list(net.allowed_unix_sockets),
            **_credential_keys(net),
        },
        "process": {
            "allowedCommands": list(proc.allowed_commands),
            "allowShell": proc.allow_shell,
            "envPassthrough": list(proc.env_passthrough),
            "deniedArguments": {name: list(patterns) for name, patterns in proc.denied_arguments},
        },
        "limits": {_camel(f.name): getattr(limits, f.name) for f in dataclasses.fields(limits)},
    }


def _credential_keys(net: model.NetworkPolicy) -> dict[str, Any]:
    """The credential and request-rule keys, when set (a file without them stays one a
    workspace may use; one with credentials is user-level-file material). Each credential
    shows where the launcher reads the secret, never its value."""
    out: dict[str, Any] = {}
    if net.credentials:
        out["credentials"] = [{"host": f"{c.host}:{c.port}", "header": c.header, "secret": c.secret,
                               "childEnv": c.child_env} for c in net.credentials]
    if net.request_rules:
        out["requestRules"] = [{"host": f"{r.host}:{r.port}", "methods": list(r.methods), "paths": list(r.paths)}
                               for r in net.request_rules]
    if net.end_run_on_credential_misuse:
        out["endRunOnCredentialMisuse"] = True
    return out


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(model))


def _fail(key: str, message: str) -> PolicyError:
    return PolicyError(f"invalid effective policy: {key}: {message}", key)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise _fail(key, "expected an object")
        fields = {_camel(f.name): f for f in dataclasses.fields(tp)}
        unknown = set(value) - set(fields)
        if unknown:
            raise _fail(f"{key}.{sorted(unknown)[0]}" if key else sorted(unknown)[0], "unknown key")
        hints = _hints(tp)
        kwargs = {}
        for camel, f in fields.items():
            sub = f"{key}.{camel}" if key else camel
            if camel in value:
                kwargs[f.name] = _convert(hints[f.name], value[camel], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(sub, "required key is missing")
        return tp(**kwargs)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise _fail(key, "expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(key, f"expected {len(args)} items")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except PolicyError as exc:
                errors.append(exc)
        raise errors[0] if errors else _fail(key, "unexpected null")
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise _fail(key, f"expected one of {typing.get_args(tp)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, "expected a boolean")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(key, "expected an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, "expected a string")
        return value
    raise _fail(key, f"unsupported type {tp!r}")  # pragma: no cover - a model change missed here


def policy_from_dict(data: Any) -> Policy:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PolicyError(f"not an effective policy (expected format {FORMAT!r})", "format")
    body = {k: v for k, v in data.items() if k != "format"}
    result = _convert(Policy, body, "")
    assert isinstance(result, Policy)
    return result


def load_effective_policy(path: str | os.PathLike[str]) -> Policy:
    """Read an effective policy written by the launcher (``CAPGATE_POLICY``)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_EFFECTIVE_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read effective policy {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_EFFECTIVE_BYTES:
        raise PolicyError(f"effective policy {path} is larger than {MAX_EFFECTIVE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"effective policy {path} is not JSON: {exc}") from exc
    return policy_from_dict(data)


def check_launcher_file(path: str | os.PathLike[str], policy: Policy) -> None:
    """Refuse an effective policy file that a sandboxed program could have written.

    The launcher writes ``<run dir>/policy.json``: a regular file, mode 0400, owned by this
    user, in a directory only its owner can write, outside every write root of the policy
    it holds (the launcher checks that its run directory is). A file that fails any of these
    — a symlink, a writable file, one in a write root or a shared directory — is not the
    launcher's. (A file can pass and still be forged; what stops a sandboxed program from
    handing a Python child a policy it wrote is the soft hooks' environment check.)"""
    import stat

    from capgate.paths import is_within

    text = os.fspath(path)
    try:
        st = os.lstat(text)
        real = os.path.realpath(text)
        parent = os.stat(os.path.dirname(real))
    except OSError as exc:
        raise PolicyError(f"cannot check effective policy {text}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(f"effective policy {text} is not a regular file (a symlink?)")
    if st.st_uid != os.getuid() or parent.st_uid != os.getuid():
        raise PolicyError(f"effective policy {text} is not owned by this user")
    if st.st_mode & 0o222:
        raise PolicyError(f"effective policy {text} is writable (the launcher writes it read-only)")
    if parent.st_mode & 0o022:
        raise PolicyError(f"effective policy {text} lies in a directory others can write")
    for root in policy.filesystem.write:
        if is_within(real, root):
            raise PolicyError(f"effective policy {text} lies inside its own write root {root}")
