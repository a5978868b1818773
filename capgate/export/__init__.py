"""Exports of the effective policy to other systems' own objects.

``capgate.export.kubernetes(policy, image=, command=, ...)`` returns the Kubernetes objects
(plain dicts) that run a command under the policy; ``capgate export kubernetes`` writes them as
YAML with a generated ``ENFORCEMENT.md``. See docs/kubernetes.md.
"""

from __future__ import annotations

from capgate.export.enforcement import enforcement_markdown
from capgate.export.k8s import TARGETS, kubernetes, pod_from_objects
from capgate.export.k8s_check import check_objects
from capgate.export.k8s_network import EGRESS_MODES
from capgate.export.yaml_text import dump_all

__all__ = ["EGRESS_MODES", "TARGETS", "check_objects", "dump_all", "enforcement_markdown", "kubernetes",
           "pod_from_objects"]
