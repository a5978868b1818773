"""Sample policies for the Kubernetes export tests (unit, schema, golden, podman kube play).

Each sample is built with ``load_policy`` at a temp workspace and home, so the objects must
not depend on those paths: the export relocates them to the pod's layout. Golden files live in
``tests/golden/kubernetes/<sample>.yaml``; ``CAPGATE_UPDATE_GOLDEN=1`` rewrites them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate.policy.sources import Grants

GOLDEN = Path(__file__).parent / "golden" / "kubernetes"


@dataclass(frozen=True)
class Sample:
    name: str
    policy_file: dict[str, Any] | None = None
    grants: Grants = field(default_factory=Grants)
    options: dict[str, Any] = field(default_factory=dict)


SAMPLES = (
    Sample("defaults-job"),
    Sample("offline-narrowed-job", {"filesystem": {"write": ["output"], "denyRead": ["secrets/"]},
                                    "limits": {"wallTimeSeconds": 300, "memoryMb": 512, "outputQuotaMb": 100}},
           options={"runtime_class": "gvisor", "workspace_claim": "agent-ws", "cpus": "500m"}),
    Sample("proxy-job", grants=Grants(net=("api.example.com", "*.example.org", "files.example.net:8443",
                                           "203.0.113.7:8080"))),
    Sample("proxy-fixed-address-job", grants=Grants(net=("api.example.com",)),
           options={"proxy_address": "10.96.0.50", "namespace": "agents"}),
    Sample("cilium-job", grants=Grants(net=("api.example.com", "*.example.org", "198.51.100.0/24:443"))),
    Sample("agent-sandbox", options={"target": "agent-sandbox", "warm_pool": 3, "runtime_class": "gvisor"}),
    Sample("agent-sandbox-proxy", grants=Grants(net=("api.example.com",)),
           options={"target": "agent-sandbox"}),
)
EGRESS = {"proxy-job": "proxy", "proxy-fixed-address-job": "proxy", "cilium-job": "cilium",
          "agent-sandbox-proxy": "proxy"}


def build_policy(sample: Sample, tmp: Path) -> capgate.Policy:
    ws = tmp / "ws"
    home = tmp / "home"
    ws.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    path = None
    if sample.policy_file is not None:
        path = ws / "agent-permissions.json"
        path.write_text(json.dumps(sample.policy_file))
    from capgate.policy.load import load_policy

    return load_policy(path, workspace=str(ws), home=str(home), grants=sample.grants)


def export(sample: Sample, tmp: Path) -> list[dict[str, Any]]:
    from capgate.export import kubernetes

    policy = build_policy(sample, tmp)
    options = {"egress": EGRESS.get(sample.name, "none"), **sample.options}
    return kubernetes(policy, image="localhost/capgate:test", command=["python3", "agent.py", "--task", "t1"],
                      name=sample.name, **options)


def require(module: str) -> Any:
    """Import a test-only dependency: in CI (``CI=true``) its absence fails, elsewhere it skips."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} must be installed in CI (the test extra)")
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
