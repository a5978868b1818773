"""Nothing is silently dropped: every policy key — of the user file's schema and of the
effective policy the launcher builds — is either mapped to who enforces it in the cluster, or
listed as computed again inside the pod. A new key added to either fails here until the
export (``capgate/export/enforcement.py``) says what happens to it."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from pydantic import BaseModel

from capgate.export.enforcement import ENFORCEMENT, INTERNAL_KEYS, enforcement_markdown
from capgate.policy import model
from capgate.policy.dump import _camel
from capgate.policy.schema import PolicyFile


def _schema_keys(cls: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, info in cls.model_fields.items():
        key = prefix + (info.alias or name)
        nested = [a for a in typing.get_args(info.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and not typing.get_origin(typing.get_args(info.annotation)[0]):
            keys |= _schema_keys(nested[0], key + ".")
        else:
            keys.add(key)
    return keys


def _model_keys(cls: type, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(cls, vars(model))
    for f in dataclasses.fields(cls):
        key = prefix + _camel(f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _model_keys(hint, key + ".")  # type: ignore[arg-type]
        else:
            keys.add(key)
    return keys


def test_walk_finds_the_keys_it_should() -> None:
    """The walk itself reaches nested keys (else an empty walk would pass the test below)."""
    schema = _schema_keys(PolicyFile)
    assert {"version", "filesystem.denyRead", "network.allowedDomains", "limits.maxCapturedOutputMb"} <= schema
    assert "filesystem" not in schema
    assert {"workspace", "filesystem.runtimeRead", "limits.wallTimeSeconds"} <= _model_keys(model.Policy)


def test_every_policy_key_is_mapped_or_listed() -> None:
    mapped = {row.key for row in ENFORCEMENT}
    listed = set(INTERNAL_KEYS)
    keys = _schema_keys(PolicyFile) | _model_keys(model.Policy) | {"format"}
    missing = sorted(keys - mapped - listed)
    assert missing == [], f"policy keys the Kubernetes export does not account for: {missing}"
    stale = sorted((mapped | listed) - keys)
    assert stale == [], f"enforcement rows for keys that no longer exist: {stale}"


def test_docs_carry_the_same_table() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "kubernetes.md").read_text()
    for row in ENFORCEMENT:
        assert f"| `{row.key}` | {row.cluster} | {row.gate} | {row.node or '—'} |" in docs, row.key


def test_markdown_names_the_dns_channel_only_where_it_exists() -> None:
    assert "DNS is an exfiltration channel" in enforcement_markdown(egress="proxy", target="job")
    assert "DNS is an exfiltration channel" not in enforcement_markdown(egress="none", target="job")
    assert "podPidsLimit" in enforcement_markdown(egress="none", target="job")
