"""Shared by the namespace-backend tests: whether it can run here, and the native probe.

The namespace backend needs bubblewrap and unprivileged user namespaces. ``.ci/run`` installs
bubblewrap, so in CI (``CI=true``) a missing piece is a failure, never a skip; elsewhere the
tests say what is missing and skip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from capgate.backends.namespace import NamespaceBackend

PROBE_SOURCE = Path(__file__).resolve().parent / "probes" / "native_probe.c"


def require_namespace_backend() -> None:
    ok, why = NamespaceBackend().available()
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the namespace backend must run in CI: {why}")
    pytest.skip(f"namespace backend unavailable here: {why}")


def build_probe(directory: Path) -> Path:
    """Compile the native probe into ``directory`` (gcc is on every machine we test on)."""
    out = directory / "native_probe"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(PROBE_SOURCE)], check=True, capture_output=True)
    return out
