"""The effective policy as JSON, and back.

The same camelCase JSON is what ``--dry-run-policy`` and ``capgate policy show`` print and
what the launcher hands a sandboxed child through ``CAPGATE_POLICY``: absolute paths, every
deny pattern with the absolute patterns it was anchored to, and ``origin`` (``defaults``,
``restrict-only`` or ``expanded``). Reading it back is strict: unknown keys and wrong types
are refused just as for a user file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import pydantic

from capgate.errors import PolicyError
from capgate.policy.model import Policy

__all__ = ["load_effective_policy", "policy_from_dict", "policy_to_dict"]

FORMAT = "capgate-effective-policy"


@lru_cache(maxsize=1)
def _adapter() -> pydantic.TypeAdapter[Policy]:
    return pydantic.TypeAdapter(Policy)


def policy_to_dict(policy: Policy, *, redact: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"format": FORMAT}
    data.update(_adapter().dump_python(policy, mode="json", by_alias=True))
    if redact:
        # Nothing in a policy is a credential, but reasons and sources are free text that
        # a user may have pasted a token into: keep them out of shared logs.
        for entry in data["network"]["deniedDomains"]:
            if entry.get("reason"):
                entry["reason"] = "<redacted>"
    return data


def policy_from_dict(data: Any) -> Policy:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PolicyError(f"not an effective policy (expected format {FORMAT!r})", "format")
    body = {k: v for k, v in data.items() if k != "format"}
    try:
        return _adapter().validate_python(body, strict=False)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"invalid effective policy: {key}: {first['msg']}", key) from exc


def load_effective_policy(path: str | os.PathLike[str]) -> Policy:
    """Read an effective policy written by the launcher (``CAPGATE_POLICY``)."""
    import json

    from capgate.policy.load import _read_capped

    raw = _read_capped(os.fspath(path)) if os.path.getsize(path) <= 64 * 1024 else open(path, "rb").read(4 << 20)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"effective policy {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    return policy_from_dict(data)
