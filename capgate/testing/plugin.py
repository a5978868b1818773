"""capgate's pytest plugin for tool authors (registered through ``pytest11``).

Fixtures:

* ``capgate_workspace`` — a real temp workspace (``src/app.py``, ``output/``, a ``.env``)
  with a fake ``HOME`` holding canary secrets (``~/.ssh/id_rsa``, ``~/.aws/credentials``);
* ``capgate_gate`` — a ``Gate`` on that workspace, active for the test; its policy is the
  defaults, or what the closest ``@pytest.mark.capgate_policy({...})`` says (loaded with
  expansion allowed: a test states what it grants);
* ``capgate_fast_fs`` — the same gate over pyfakefs, for fast tests of tools that use
  ``capgate.fs`` (decisions are the real gate's; the opening is pyfakefs' — use the real
  ``capgate_gate`` to prove a security property).

Helpers: ``assert_denied(fn, *args, op=None)`` and ``run_attack_corpus(tool, kinds=...)``,
which feeds a tool every hostile input of the shared corpus and returns what got through.

Example::

    from capgate.testing import assert_denied, run_attack_corpus

    def test_my_reader_stays_inside(capgate_gate):
        assert run_attack_corpus(my_read_tool, kinds=["paths"]) == []
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate.testing.harness import CANARY, build_workspace, gate_for

__all__ = ["capgate_fast_fs", "capgate_gate", "capgate_workspace", "pytest_assertrepr_compare", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "capgate_policy(policy): the policy (a dict in agent-permissions.json form) for capgate_gate"
    )


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """``assert run_attack_corpus(...) == []`` fails with the findings' table."""
    from capgate.testing.harness import Findings

    if op == "==" and isinstance(left, Findings) and right == []:
        return ["the tool let hostile inputs through:", *left.table().splitlines()]
    return None


@pytest.fixture
def capgate_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real temp workspace (``src/app.py``, ``output/``, a ``.env`` canary) and a fake HOME
    holding canary secrets (``~/.ssh/id_rsa``, ``~/.aws/credentials``); proxy and capgate
    variables are cleared for the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for name in ("CAPGATE_POLICY", "CAPGATE_AUDIT_LOG", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return build_workspace(tmp_path / "ws", home)


def _policy_from_marker(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    marker = request.node.get_closest_marker("capgate_policy")
    if marker is None:
        return None
    if not marker.args or not isinstance(marker.args[0], dict):
        raise pytest.UsageError("capgate_policy needs one dict argument")
    return dict(marker.args[0])


def _gate(workspace: Path, request: pytest.FixtureRequest) -> Any:
    """``gate_for``; a bad marker policy fails the test with the ``PolicyError`` alone."""
    try:
        return gate_for(workspace, _policy_from_marker(request))
    except capgate.PolicyError as exc:
        message = f"capgate_policy marker: {exc}"
    pytest.fail(message, pytrace=False)  # (outside the except: no "during handling" chain)


@pytest.fixture
def capgate_gate(capgate_workspace: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A ``Gate`` on ``capgate_workspace``, active for the test: the defaults, or the policy
    of the closest ``@pytest.mark.capgate_policy({...})`` (expansion allowed)."""
    gate = _gate(capgate_workspace, request)
    with gate:
        yield gate


@pytest.fixture
def capgate_fast_fs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A gate over a pyfakefs filesystem (fast; decisions only — see the module docstring)."""
    from pyfakefs.fake_filesystem_unittest import Patcher

    from capgate.testing import fastfs

    # capgate's lazily loaded modules must be loaded and in sys.modules before pyfakefs starts,
    # and what pyfakefs unloads when it stops must not stay reachable from the capgate package
    # (see capgate.testing.fastfs) — else a real-fs test before or after this one breaks it.
    loaded = fastfs.prepare()
    try:
        with Patcher() as patcher:
            assert patcher.fs is not None
            home = Path("/home/agent")
            monkeypatch.setenv("HOME", str(home))
            ws = build_workspace(Path("/work/ws"), home, hard_links=False)
            gate = _gate(ws, request)
            fastfs.install(monkeypatch)
            with gate:
                yield gate
    finally:
        fastfs.forget_loaded_while_patched(loaded)


_ = CANARY
