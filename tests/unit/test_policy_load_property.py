"""Property: the policy loader raises nothing but ``PolicyError`` for any document under the
size cap — random JSON of any shape, and random documents shaped like a policy (real keys,
hostile values). ``capgate check`` exits 1 for "denied"; a stray ``ValueError`` or
``RecursionError`` would make a broken file look like a denial, with a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import capgate
from capgate.policy import MAX_POLICY_BYTES
from capgate.policy.load import parse_policy_text

_HUGE = "@@huge-number@@"  # replaced in the JSON text by a literal of 4,400 digits (json.dumps cannot write one)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["", ".", "..", "/", "~", "~/.ssh", "**", "*.pem", "\x00", "a\nb", "!x", "[", "127.1", "*.com"])
    | st.just(_HUGE)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)

_KEYS: dict[str, list[str]] = {
    "filesystem": ["read", "write", "denyRead", "denyWrite", "recursiveDelete"],
    "network": ["enabled", "allowedDomains", "deniedDomains", "allowedAddresses", "allowedPorts",
                "allowedUnixSockets"],
    "process": ["allowedCommands", "allowShell", "envPassthrough", "deniedArguments"],
    "limits": ["wallTimeSeconds", "cpuSeconds", "memoryMb", "maxProcesses", "maxOpenFiles", "maxFileSizeMb",
               "outputQuotaMb", "maxCapturedOutputMb"],
}


@st.composite
def _policy_shaped(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["version"] = draw(_scalars)
    for section, keys in _KEYS.items():
        if draw(st.booleans()):
            body = {key: draw(_json) for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))}
            doc[section] = body
    return doc


def _only_policy_errors(text: str, tmp_path: Path, workspace: Path, expand: bool) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        return
    text = text.replace(f'"{_HUGE}"', "9" * 4400)
    path = tmp_path / "agent-permissions.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        capgate.load_policy(path, workspace=workspace, allow_user_expansion=expand)
    except capgate.PolicyError:
        pass


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(doc=_json)
def test_any_json_document_loads_or_is_a_policy_error(doc: Any, tmp_path: Path, workspace: Path) -> None:
    _only_policy_errors(json.dumps(doc), tmp_path, workspace, expand=True)


@_SETTINGS
@given(doc=_policy_shaped(), expand=st.booleans())
def test_policy_shaped_documents_load_or_are_policy_errors(
    doc: dict[str, Any], expand: bool, tmp_path: Path, workspace: Path
) -> None:
    _only_policy_errors(json.dumps(doc), tmp_path, workspace, expand=expand)


@_SETTINGS
@given(text=st.text(max_size=200))
def test_any_text_parses_or_is_a_policy_error(text: str) -> None:
    try:
        parse_policy_text(text)
    except capgate.PolicyError:
        pass


@pytest.mark.parametrize("depth", [15, 17, 200, 999, 1001, 3000])
@pytest.mark.parametrize("opener", ["[", '{"a": '])
def test_nesting_at_any_depth_is_a_policy_error(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = '{"version": 1, "filesystem": {"read": ' + opener * depth + "1" + closer * depth + "}}"
    assert len(text) <= MAX_POLICY_BYTES
    with pytest.raises(capgate.PolicyError):
        parse_policy_text(text)
