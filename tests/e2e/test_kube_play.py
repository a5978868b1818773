"""The exported pod, played for real with ``podman kube play`` (podman 4.3, ``--runtime runc``).

The Job's pod template becomes a Pod (``pod_from_objects``) next to its ConfigMap; podman
applies the security context as a kubelet would, so ``podman inspect`` shows from the host
that it took effect (read-only root, no capabilities, no-new-privileges, the uid, memory and
CPU limits). Then the acceptance attacks run inside it (``kube_attacks.py``, baked into the
image's ``/workspace`` beside a planted ``.env``), each with a benign control.

The image: ``capgate image build``'s registry-free builder (``container_shim``) makes the base
from this checkout, and ``podman build`` adds the workspace files on top (a local ``FROM``, no
registry). podman's default nofile/nproc ulimits are refused here, so ``CONTAINERS_CONF``
points at a file with ``default_ulimits`` (design.md, machine facts). What podman cannot show
— a network plugin enforcing the NetworkPolicy — is not claimed: ``--egress none`` is checked
here as the gate's refusal inside the pod (docs/kubernetes.md lists what was not tested).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate.export import dump_all, kubernetes, pod_from_objects
from capgate.policy.sources import Grants

pytestmark = [pytest.mark.container, pytest.mark.slow]
HERE = Path(__file__).parent
PODMAN = shutil.which("podman")


def _need_podman() -> str:
    if PODMAN is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("podman must be installed in CI (apt-get install podman runc)")
        pytest.skip("podman is not installed")
    return PODMAN


def _podman(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_need_podman(), "--runtime", "runc", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _need_podman()
    from capgate.container_shim.build import build_image

    tag = uuid.uuid4().hex[:10]
    base = build_image("podman", tag=f"localhost/capgate-kube-test-base:{tag}")
    ctx = tmp_path_factory.mktemp("image")
    (ctx / "ws" / "src").mkdir(parents=True)
    (ctx / "ws" / "src" / "app.py").write_text("print('app')\n")
    (ctx / "ws" / ".env").write_text("API_TOKEN=capgate-kube-secret-31f9\n")
    shutil.copy(HERE / "kube_attacks.py", ctx / "ws" / "agent.py")
    (ctx / "Containerfile").write_text(f"FROM {base}\nCOPY ws/ /workspace/\n")
    name = f"localhost/capgate-kube-test:{tag}"
    built = _podman("build", "--pull=never", "-t", name, str(ctx))
    try:
        assert built.returncode == 0, built.stderr
        yield name
    finally:
        _podman("rmi", "-f", name, base)


def _play(objects: list[dict[str, Any]], tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Play [ConfigMap, Pod], wait for the agent container to exit; (its log, its inspect)."""
    pod = pod_from_objects(objects)
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    name = pod["metadata"]["name"]
    (tmp_path / "pod.yaml").write_text(dump_all([configmap, pod]))
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=512:512"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    container = f"{name}-agent"
    try:
        played = _podman("kube", "play", str(tmp_path / "pod.yaml"), env=env)
        assert played.returncode == 0, played.stderr
        deadline = time.monotonic() + 120
        while True:
            state = _podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            if state in ("exited", "stopped") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert state in ("exited", "stopped"), state
        logs = _podman("logs", container)
        inspect = json.loads(_podman("inspect", container).stdout)[0]
        return logs.stdout + logs.stderr, inspect
    finally:
        _podman("pod", "rm", "-f", name)
        _podman("volume", "rm", "-f", configmap["metadata"]["name"])


def _export(tmp_path: Path, image: str, name: str, **kwargs: Any) -> list[dict[str, Any]]:
    ws = tmp_path / "host-ws"
    ws.mkdir()
    home = tmp_path / "host-home"
    home.mkdir()
    policy = capgate.load_policy(None, workspace=str(ws), home=str(home), grants=Grants(run=("cat",)))
    return kubernetes(policy, image=image, name=name, egress="none",
                      command=["/opt/capgate/bin/python", "/workspace/agent.py"], **kwargs)


def test_the_exported_pod_runs_hardened_and_refuses_the_attacks(image: str, tmp_path: Path) -> None:
    name = f"capgate-kube-{uuid.uuid4().hex[:8]}"
    log, inspect = _play(_export(tmp_path, image, name), tmp_path)

    # From the host: the security context took effect.
    host = inspect["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapAdd"] in ([], None)
    assert inspect["EffectiveCaps"] in ([], None)
    assert "no-new-privileges" in host["SecurityOpt"]
    assert inspect["Config"]["User"] == "10001:10001"
    assert host["Memory"] == 2048 * 2**20
    assert host["NanoCpus"] == 10**9 or host["CpuQuota"] == host["CpuPeriod"]
    assert host["Privileged"] is False

    results = {}
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["name"]] = entry
    assert "identity" in results, log
    assert results["identity"]["value"][:2] == [10001, 10001]
    # Attacks, each refused ...
    for attack in ("read-secret-env", "read-policy-dir-listing", "write-source", "write-root-fs", "write-policy",
                   "shell", "unlisted-command", "connect-loopback"):
        assert results[attack]["outcome"] == "denied", (attack, results[attack], log)
    assert "capgate-kube-secret" not in log
    # ... and the benign controls beside them work.
    assert results["read-source"] == {"name": "read-source", "outcome": "ok", "value": "print('app')\n"}
    assert results["write-output"]["value"] == "fine"
    assert results["listed-command"]["value"] == "print('app')\n"
    assert "capgate: backend: soft" in log
