"""Loading a policy: the user file is hostile input.

Order of work: size cap (64 KiB, before parsing) → JSON (duplicate keys, NaN and Infinity
refused; errors name line and column) → strict schema (unknown keys and wrong types refused,
naming the key path) → canonicalization and merge onto the base policy.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from capgate.errors import PolicyError
from capgate.paths import coerce_path, resolve_root
from capgate.policy import defaults as d
from capgate.policy.merge import build_deny_patterns, mandatory_deny_entries, merge
from capgate.policy.model import FilesystemPolicy, Limits, NetworkPolicy, Policy, ProcessPolicy
from capgate.policy.sources import Grants, check_user_config, check_user_config_outside_writes, grant_body, grant_items

if TYPE_CHECKING:
    import pydantic

    from capgate.policy.schema import PolicyFile

__all__ = ["MAX_POLICY_BYTES", "default_policy", "load_policy", "parse_policy_text"]

MAX_POLICY_BYTES = 64 * 1024
MAX_POLICY_DEPTH = 16
MAX_INT_DIGITS = 18


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"duplicate key {key!r} in the policy file", key)
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    raise PolicyError(f"{name} is not valid JSON in a policy file")


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_JSON_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a number", float: "a number", list: "a list",
                   dict: "an object", type(None): "null"}


def _json_type(value: object) -> str:
    return next((name for tp, name in _JSON_TYPE_NAMES.items() if type(value) is tp), type(value).__name__)


def _got(value: object) -> str:
    """What the file held, in its own spelling: ``"true"`` (a string), ``3``, a list."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        text = json.dumps(value, ensure_ascii=False)
        return f"got {text if len(text) <= 40 else text[:37] + '...'}"
    return f"got {_json_type(value)}"


def _plain_message(err: Any) -> str:
    """A schema error in the policy's words, never the validator's ("Input should be...")."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false ({_got(value)})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number ({_got(value)})"
    if kind == "string_type":
        return f"must be a string ({_got(value)})"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list ({_got(value)})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be an object ({_got(value)})"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')} ({_got(value)})"
    if kind == "greater_than":
        return f"must be more than {ctx.get('gt')} ({_got(value)})"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')} ({_got(value)})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return f"is not valid ({_got(value)})"


def _known_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the schema knows at ``loc`` (the object an unknown key was found in)."""
    from capgate.policy.schema import PolicyFile

    model: Any = PolicyFile
    for part in loc:
        if isinstance(part, int) or model is None:
            return []
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        model = next((a for a in _type_args(field.annotation) if isinstance(a, type) and hasattr(a, "model_fields")),
                     None)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _type_args(tp: Any) -> list[Any]:
    import typing

    args = list(typing.get_args(tp))
    return [tp, *args]


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    lowered = {k.lower(): k for k in known}
    match = lowered.get(name.lower()) or next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.6)), None)
    return f"; did you mean {match!r}?" if match else f"; known keys here: {', '.join(known)}" if known else ""


def _schema_error(exc: pydantic.ValidationError) -> PolicyError:
    """Every schema error, one per line, each naming its key path as the file spells it."""
    found: list[tuple[str, str, bool]] = []  # (key, message, from a union member)
    for err in exc.errors():
        # Union members and validators add their own names to the location; drop them.
        loc = [p for p in err["loc"] if isinstance(p, int) or not (p[:1].isupper() or "[" in p or "(" in p
                                                                       or p in ("str", "int", "bool"))]
        member = len(loc) != len(err["loc"])
        key = _key_path(loc)
        if err["type"] == "extra_forbidden":
            name = str(loc[-1]) if loc else ""
            message = "unknown key" + _did_you_mean(name, _known_keys(loc[:-1]))
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = _plain_message(err)
        found.append((key, message, member))
    # A value that matched no member of a union (deniedDomains: a string or an object) gets one
    # error per member: keep the one for the shape the file used.
    lines: list[str] = []
    for key, message, member in found:
        if member and message.startswith("must be a string (got an object") and any(
                k.startswith(key + ".") for k, _, _ in found):
            continue
        previous = next((i for i, line in enumerate(lines) if line.startswith(f"{key}: must be a string (")), None)
        if member and previous is not None and message.startswith("must be an object ("):
            lines[previous] = f"{key}: must be a string or an object ({message.split(' (', 1)[1]}"
            continue
        lines.append(f"{key}: {message}")
    lines = list(dict.fromkeys(lines))
    first_key = lines[0].split(": ", 1)[0] if lines else None
    if len(lines) == 1:
        return PolicyError(f"invalid policy: {lines[0]}", first_key)
    return PolicyError(f"invalid policy ({len(lines)} errors):\n" + "\n".join(f"  {line}" for line in lines), first_key)


def parse_policy_text(text: str | bytes) -> PolicyFile:
    """Parse and validate the text of a user policy file (no canonicalization)."""
    if isinstance(text, str):
        raw = text.encode("utf-8", "surrogatepass")
    else:
        raw = text
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file is not UTF-8 (byte {exc.start})") from exc
    try:
        data = json.loads(
            decoded,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        raise PolicyError(f"policy file is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise PolicyError(f"policy file nests deeper than {MAX_POLICY_DEPTH} levels") from exc
    except PolicyError:
        raise
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # fail closed, with one error type
        raise PolicyError(f"policy file is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError("policy file must hold a JSON object")
    _check_shape(data)
    import pydantic  # only a user file needs the schema; defaults and children never load it

    from capgate.policy.schema import PolicyFile

    try:
        return PolicyFile.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _schema_error(exc) from exc
    except (ValueError, TypeError, RecursionError) as exc:  # pragma: no cover - the checks above come first
        raise PolicyError(f"invalid policy: {exc}") from exc


class _HugeInt(str):
    """An integer literal too long to be a policy value, kept as text so the shape check
    can name its key (``int()`` raises ``ValueError`` past 4,300 digits; a 64 KiB file holds
    65,000)."""


def _parse_int(text: str) -> int | _HugeInt:
    return _HugeInt(text) if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


def _check_shape(data: dict[str, Any]) -> None:
    """Depth, number sizes and finiteness, walked without recursion: the deepest policy key
    is four levels down, and a deeply nested document must be a ``PolicyError`` naming where,
    never a ``RecursionError`` from a later, recursive step (the schema validator)."""
    stack: list[tuple[Any, int, tuple[int | str, ...]]] = [(data, 1, ())]
    while stack:
        value, depth, loc = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_POLICY_DEPTH:
                raise PolicyError(f"{_key_path(loc)}: nests deeper than {MAX_POLICY_DEPTH} levels", _key_path(loc))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((child, depth + 1, (*loc, key)) for key, child in items)
        elif isinstance(value, _HugeInt):
            raise PolicyError(
                f"{_key_path(loc)}: number {value[:20]}... is too large ({MAX_INT_DIGITS} digits at most)",
                _key_path(loc),
            )
        elif isinstance(value, float) and not math.isfinite(value):
            # 1e999 parses as inf without going through parse_constant.
            raise PolicyError(f"{_key_path(loc)}: non-finite number", _key_path(loc))


def _read_capped(path: str) -> bytes:
    """At most 64 KiB + 1 of a regular file. Opened without blocking and checked with fstat
    first: a FIFO (or a device) named as the policy would otherwise hang the launcher."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PolicyError(f"policy file {path} is not a regular file")
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy file {path} is larger than {MAX_POLICY_BYTES} bytes (64 KiB)")
    return data


def _workspace(workspace: str | os.PathLike[str] | None) -> str:
    raw = os.getcwd() if workspace is None else coerce_path(workspace)
    resolved = os.path.realpath(os.path.abspath(raw))
    if not os.path.isdir(resolved):
        raise PolicyError(f"workspace {raw!r} is not a directory", "workspace")
    return resolved


def _home() -> str:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return os.path.realpath(home) if home else "/nonexistent-home"


def default_policy(
    workspace: str | os.PathLike[str] | None = None,
    *,
    home: str | None = None,
    protected_paths: Sequence[str] = (),
) -> Policy:
    """The built-in least-privilege policy for ``workspace`` (default: the cwd)."""
    ws = _workspace(workspace)
    home_dir = os.path.realpath(home) if home else _home()
    deny_read = build_deny_patterns(
        [(p, f"filesystem.denyRead[{i}]", False) for i, p in enumerate(d.DEFAULT_DENY_READ)], ws, home_dir
    )
    deny_write = build_deny_patterns(
        [(p, f"filesystem.denyWrite[{i}]", False) for i, p in enumerate(d.DEFAULT_DENY_WRITE)]
        + mandatory_deny_entries(),
        ws,
        home_dir,
    )
    fs = FilesystemPolicy(
        read=tuple(resolve_root(r, ws, home_dir, "filesystem.read (default)") for r in d.DEFAULT_READ),
        write=tuple(resolve_root(r, ws, home_dir, "filesystem.write (default)") for r in d.DEFAULT_WRITE),
        deny_read=deny_read,
        deny_write=deny_write,
        protected=tuple(os.path.realpath(p) for p in protected_paths),
    )
    limits = Limits(**{_snake(k): v for k, v in d.DEFAULT_LIMITS.items()})
    return Policy(
        workspace=ws,
        home=home_dir,
        filesystem=fs,
        network=NetworkPolicy(enabled=False, allowed_ports=d.DEFAULT_PORTS),
        process=ProcessPolicy(env_passthrough=d.DEFAULT_ENV_PASSTHROUGH),
        limits=limits,
        origin="defaults",
    )


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def load_policy(
    path: str | os.PathLike[str] | None = None,
    *,
    workspace: str | os.PathLike[str] | None = None,
    allow_user_expansion: bool = False,
    base: Policy | None = None,
    protected_paths: Sequence[str] = (),
    home: str | None = None,
    user_file: str | os.PathLike[str] | None = None,
    grants: Grants | None = None,
) -> Policy:
    """Build the effective policy.

    ``path`` is the workspace's policy file (``None``: none): untrusted, restrict-only unless
    ``allow_user_expansion``. ``user_file`` (the user-level file, see
    ``capgate.policy.sources``) and ``grants`` (command-line grants) are trusted: they widen
    the defaults first, in that order; the workspace file then narrows what stands. Deny lists
    and the mandatory write-deny list always win. ``base`` replaces the built-in defaults as the
    starting point — a launcher inside a sandbox passes the policy it was given, so nothing can
    widen it there. ``protected_paths`` are files nobody under the gate may write (the audit
    log); the policy files themselves are always protected.
    """
    if isinstance(allow_user_expansion, bool) is False:
        raise PolicyError("allow_user_expansion must be a bool", "allow_user_expansion")
    if base is None:
        base = default_policy(workspace, home=home, protected_paths=protected_paths)
    elif protected_paths:
        base = _protect(base, *protected_paths)
    user_real = None
    if user_file is not None:
        user_real = check_user_config(coerce_path(user_file), base.workspace)
        try:
            layer = parse_policy_text(_read_capped(user_real))
        except PolicyError as exc:
            raise PolicyError(f"{user_real}: {exc}", exc.key) from None
        base = merge(_protect(base, user_real), layer, allow_user_expansion=True, source=user_real,
                     label=f"user-level file {user_real}", keep_source=True, trusted=True)
    if grants:
        base = _apply_grants(base, grants)
    if path is not None:
        source = os.path.realpath(coerce_path(path))
        try:
            user = parse_policy_text(_read_capped(source))
        except PolicyError as exc:
            raise PolicyError(exc.args[0] if source in str(exc) else f"{source}: {exc}", exc.key) from None
        base = merge(_protect(base, source), user, allow_user_expansion=allow_user_expansion, source=source)
    if grants is not None and grants.resolve:
        base = _apply_resolve(base, grants.resolve)
    if grants is not None and grants.offline and base.network.enabled:
        base = replace(base, network=replace(base.network, enabled=False))
    if user_real is not None:
        check_user_config_outside_writes(user_real, base.filesystem.write)
    return base


def _apply_resolve(policy: Policy, values: Sequence[str]) -> Policy:
    """``--resolve HOST:PORT:ADDR`` (trusted: typed by the user): the gate and the proxy resolve
    HOST on PORT to ADDR, which the address rules then judge like any resolver's answer."""
    from capgate.policy.model import ResolveEntry
    from capgate.policy.sources import parse_resolve

    entries = [ResolveEntry(*parse_resolve(v)) for v in values]
    return replace(policy, network=replace(policy.network, resolve=(*policy.network.resolve, *entries)))


def _protect(policy: Policy, *paths: str) -> Policy:
    """``policy`` with ``paths`` (canonical) among the files nobody under the gate may write."""
    extra = tuple(os.path.realpath(p) for p in paths)
    protected = tuple(dict.fromkeys((*policy.filesystem.protected, *extra)))
    return replace(policy, filesystem=replace(policy.filesystem, protected=protected))


def _apply_grants(policy: Policy, grants: Grants) -> Policy:
    """Widen ``policy`` by each command-line grant in turn (trusted: the person running capgate
    typed them). An invalid grant is a ``PolicyError`` naming the flag, not a policy key."""
    from capgate.policy.schema import PolicyFile

    for flag, value, label in grant_items(grants):
        body = grant_body(flag, value, policy)
        try:
            layer = PolicyFile.model_validate(body)
            policy = merge(policy, layer, allow_user_expansion=True, source=policy.source, label=label,
                           keep_source=True, trusted=True)
        except PolicyError as exc:
            detail = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
            raise PolicyError(f"{label}: {detail}", flag) from None
        except ValueError:  # pydantic's ValidationError: an empty or oversized value
            raise PolicyError(f"{label}: not a valid value", flag) from None
    return policy
