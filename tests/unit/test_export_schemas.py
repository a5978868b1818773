"""Every emitted core object validates strictly against several Kubernetes versions' OpenAPI
schemas (``kubernetes-validate``, which bundles them). Strict: unknown fields fail. A missing
schema is a failure, never a warning. Custom resources (SandboxTemplate, SandboxWarmPool,
CiliumNetworkPolicy) have no bundled schema: the pod template inside a SandboxTemplate is
validated as a core Pod, and their own fields are checked against the field names of the
upstream CRDs (kubernetes-sigs/agent-sandbox ``extensions/api/v1beta1``; cilium.io/v2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capgate.export import pod_from_objects
from tests._export_samples import SAMPLES, Sample, export, require

VERSIONS = ("1.30", "1.33", "1.35", "1.37")
CUSTOM = {"SandboxTemplate", "SandboxWarmPool", "CiliumNetworkPolicy"}
# Field names of the upstream CRDs (spec level), as the export may use them.
SANDBOX_TEMPLATE_FIELDS = {"podTemplate", "volumeClaimTemplates", "service", "networkPolicy",
                           "networkPolicyManagement", "envVarsInjectionPolicy", "volumeClaimTemplatesPolicy"}
WARM_POOL_FIELDS = {"replicas", "sandboxTemplateRef", "updateStrategy"}
CILIUM_FIELDS = {"endpointSelector", "egress", "egressDeny", "ingress", "ingressDeny", "labels", "description"}


def _validate(obj: dict[str, Any], version: str) -> None:
    kv = require("kubernetes_validate")
    try:
        used = kv.validate(obj, version, strict=True)
    except kv.SchemaNotFoundError as exc:  # a missing schema is a failure, not a pass
        pytest.fail(f"no schema for {obj['kind']} {obj['apiVersion']} in Kubernetes {version}: {exc.message}")
    except kv.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: "
                    f"{'.'.join(map(str, exc.path))}: {exc.message}")
    assert used == version  # the schema of exactly this version was used


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_core_objects_validate_strictly(sample: Sample, version: str, tmp_path: Path) -> None:
    objects = export(sample, tmp_path)
    checked = 0
    for obj in objects:
        if obj["kind"] in CUSTOM:
            continue
        _validate(obj, version)
        checked += 1
    _validate(pod_from_objects(objects), version)  # the pod template (also a SandboxTemplate's) as a Pod
    assert checked >= 2


def test_strict_validation_catches_an_unknown_field() -> None:
    """The validator itself: a misspelt field fails in strict mode (so a pass means something)."""
    kv = require("kubernetes_validate")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "a", "image": "i", "securityContext": {"readOnlyRootFS": True}}]}}
    with pytest.raises(kv.ValidationError):
        kv.validate(pod, "1.37", strict=True)
    pod["spec"]["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": True}
    assert kv.validate(pod, "1.37", strict=True) == "1.37"


def test_a_kind_without_a_schema_fails() -> None:
    kv = require("kubernetes_validate")
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                     "metadata": {"name": "x"}, "spec": {}}, "1.37", strict=True)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_custom_resources_use_only_upstream_fields(sample: Sample, tmp_path: Path) -> None:
    for obj in export(sample, tmp_path):
        if obj["kind"] == "SandboxTemplate":
            assert obj["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
            assert set(obj["spec"]) <= SANDBOX_TEMPLATE_FIELDS
            assert set(obj["spec"]["podTemplate"]) == {"metadata", "spec"}
            assert set(obj["spec"]["networkPolicy"]) <= {"ingress", "egress"}
            # The networkPolicy rules are core NetworkPolicy rules: validate them inside one.
            _validate({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "t"},
                       "spec": {"podSelector": {}, **obj["spec"]["networkPolicy"]}}, "1.37")
        elif obj["kind"] == "SandboxWarmPool":
            assert set(obj["spec"]) <= WARM_POOL_FIELDS
            assert set(obj["spec"]["sandboxTemplateRef"]) == {"name"}
        elif obj["kind"] == "CiliumNetworkPolicy":
            assert obj["apiVersion"] == "cilium.io/v2"
            assert set(obj["spec"]) <= CILIUM_FIELDS
            for rule in obj["spec"]["egress"]:
                assert set(rule) <= {"toEndpoints", "toFQDNs", "toCIDR", "toPorts"}
                for ports in rule["toPorts"]:
                    assert all(isinstance(p["port"], str) for p in ports["ports"])
