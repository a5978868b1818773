"""The ``capgate init`` template spells out every key of the policy file (no comments: JSON has
none), and docs/policy.md explains each one. A key added to the schema fails here until the
template and the docs carry it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from capgate.init_template import TEMPLATE, TRUSTED_ONLY_KEYS, template_data
from capgate.policy.schema import PolicyFile

ROOT = Path(__file__).resolve().parents[2]


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key path of the policy file, by the names a file uses (the aliases)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        keys.add(key)
        annotation: Any = info.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and key.count(".") == 0 and (
                    candidate.__name__.endswith("Section")):
                keys |= schema_keys(candidate, key + ".")
    return keys


def template_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and not prefix:  # the sections; deniedArguments' own keys are commands
            keys |= template_keys(value, prefix + key + ".")
    return keys


def test_the_template_has_every_key_of_the_schema() -> None:
    expected = schema_keys(PolicyFile)
    assert "filesystem.recursiveDelete" in expected and "limits.maxCapturedOutputMb" in expected
    assert template_keys(template_data()) == expected - TRUSTED_ONLY_KEYS
    assert TRUSTED_ONLY_KEYS <= expected  # (a trusted-only key that no longer exists fails here)


def test_the_template_is_plain_json_without_comments() -> None:
    assert json.loads(TEMPLATE) == template_data()
    assert "//" not in TEMPLATE and "/*" not in TEMPLATE and "#" not in TEMPLATE
    PolicyFile.model_validate(json.loads(TEMPLATE))  # and the strict schema accepts it


def test_docs_explain_every_key_of_the_template() -> None:
    policy_doc = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Za-z.]+)` \|", policy_doc, flags=re.M))
    sections = {"filesystem", "network", "process", "limits"}
    assert template_keys(template_data()) - sections == documented - TRUSTED_ONLY_KEYS
