"""``capgate doctor``: every line comes from the probe the sandbox itself uses, and each
"no" says why. Real processes throughout: the command itself, the machine's podman, docker
and runc where installed (docker pointed at a dead socket for the refusal), stand-in
runtimes on PATH (small scripts printing what an old or a broken runtime prints) for the
version warning, and a user namespace whose ``user.max_user_namespaces`` is 0 for the
namespace refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capgate import runtimes
from capgate._sys import landlock, openat2
from tests.integration._soft_helpers import launcher_messages

REPO = Path(__file__).resolve().parents[2]


def doctor(*args: str, env: dict[str, str] | None = None,
           prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX"))}
    return subprocess.run([*prefix, sys.executable, "-m", "capgate", "doctor", *args], capture_output=True, text=True,
                          timeout=120, env={**base, **(env or {})}, cwd=REPO, check=False)


def test_json_report_matches_the_probes_the_sandbox_uses(tmp_path: Path) -> None:
    done = doctor("--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["landlock"]["abi"] == landlock.available()
    assert report["openat2"]["available"] == openat2.AVAILABLE
    assert report["python"] == {"version": sys.version.split()[0], "implementation": "cpython",
                                "executable": sys.executable, "supported": True}
    assert {rt["name"] for rt in report["containerRuntimes"]} == {"podman", "docker", "runc"}
    assert set(report["cgroups"]["controllers"]) == {"pids", "memory"}
    assert report["cgroups"]["version"] in ("v1", "v2", "hybrid", "none")
    # The backend doctor names is the one `capgate run` picks (its --dry-run-policy says).
    dry = subprocess.run([sys.executable, "-m", "capgate", "run", "--workspace", str(tmp_path), "--dry-run-policy",
                          "--", "true"], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert dry.returncode == 0, dry.stderr
    messages = "\n".join(launcher_messages(dry.stderr))  # (the banner wraps at 100 columns)
    assert f"capgate: backend: {report['backend']['auto']} (auto: {report['backend']['why']})" in messages


def test_text_report_has_a_line_per_topic() -> None:
    done = doctor()
    assert done.returncode == 0, done.stderr
    starts = [line.split()[0] for line in done.stdout.splitlines() if line and not line.startswith(" ")]
    for topic in ("capgate", "python", "system", "container", "user", "landlock", "openat2", "cgroups", "backend",
                  "warnings:"):
        assert topic in starts, done.stdout
    assert "tested: podman 4.3.1, Docker Engine 20.10.24, runc 1.1.5" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 100, done.stdout  # a 100-column terminal


def test_a_refused_user_namespace_is_explained() -> None:
    """In a user namespace whose max_user_namespaces is 0, bubblewrap and the kernel both
    refuse, doctor says why (naming the sysctl) and auto falls back to soft."""
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed")
    script = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""
    done = doctor("--json", prefix=("unshare", "--user", "--map-root-user", "sh", "-c", script, "sh"))
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot make a user namespace here to test in: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    userns = report["userNamespaces"]
    assert userns["works"] is False
    assert userns["kernel"]["works"] is False
    assert "user.max_user_namespaces is 0" in userns["why"]
    assert report["backend"]["auto"] in ("soft", "container")
    assert any(w.startswith("no namespace backend") for w in report["warnings"])
    # The control: the same command outside says they work (where bubblewrap is installed).
    outside = json.loads(doctor("--json").stdout)["userNamespaces"]
    assert outside["kernel"]["works"] is True
    if outside["bwrap"]:
        assert outside["works"] is True, outside


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_an_old_runtime_is_warned_about_naming_the_tested_minimum(tmp_path: Path) -> None:
    old, current = tmp_path / "old", tmp_path / "current"
    old.mkdir()
    current.mkdir()
    fake_tool(old, "podman", """echo '{"Client":{"Version":"4.2.0"}}'\n""")
    fake_tool(old, "runc", "echo 'runc version 1.0.0-rc93'\n")
    fake_tool(current, "podman", """echo '{"Client":{"Version":"4.3.1"}}'\n""")
    fake_tool(current, "runc", "echo 'runc version 1.1.5+ds1'\n")
    warned = runtimes.detect("podman", env={"PATH": str(old)})
    assert warned.usable and warned.version == "4.2.0"
    assert warned.warnings == ("podman 4.2.0 is older than 4.3.1, the oldest version capgate was tested with",)
    assert runtimes.detect("runc", env={"PATH": str(old)}).warnings == (
        "runc 1.0.0-rc93 is older than 1.1.5, the oldest version capgate was tested with",)
    assert runtimes.detect("podman", env={"PATH": str(current)}).warnings == ()  # the control
    assert runtimes.detect("runc", env={"PATH": str(current)}).warnings == ()
    # And through the command, in its text.
    done = doctor(env={"PATH": f"{old}:/usr/bin:/bin"})
    assert "podman 4.2.0 is older than 4.3.1" in done.stdout, done.stdout


def test_a_docker_daemon_that_does_not_answer(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "docker", """echo '{"Client":{"Version":"20.10.24+dfsg1"},"Server":null}'
echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2
exit 1
""")
    down = runtimes.detect("docker", env={"PATH": str(bin_dir)})
    assert not down.usable and down.version == "20.10.24+dfsg1" and down.engine_version is None
    assert "the Docker daemon does not answer (Cannot connect to the Docker daemon" in down.why
    missing = runtimes.detect("docker", env={"PATH": str(tmp_path / "nowhere")})
    assert not missing.installed and "not installed" in missing.why


def test_the_real_docker_cli_against_a_dead_socket(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        if os.environ.get("CI"):
            pytest.fail("docker is not installed (CI installs docker.io)")
        pytest.skip("docker is not installed")
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path),
           "DOCKER_HOST": f"unix://{tmp_path}/dead.sock"}
    down = runtimes.detect("docker", env=env)
    assert down.installed and not down.answers
    assert "does not answer" in down.why and "dead.sock" in down.why
    report = json.loads(doctor("--json", env={"DOCKER_HOST": f"unix://{tmp_path}/dead.sock"}).stdout)
    (entry,) = [rt for rt in report["containerRuntimes"] if rt["name"] == "docker"]
    assert entry["answers"] is False and "dead.sock" in entry["why"]


def test_the_real_podman_and_runc_report_their_versions() -> None:
    for name in ("podman", "runc"):
        path = shutil.which(name)
        if path is None:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is not installed (CI installs it)")
            pytest.skip(f"{name} is not installed")
        found = runtimes.detect(name)
        printed = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
        assert found.version and found.version in printed, (found, printed)
        assert found.path == path


def test_version_parsing() -> None:
    assert runtimes.parse_version("Docker version 20.10.24+dfsg1, build 297e128") == (20, 10, 24)
    assert runtimes.parse_version("runc version 1.1.5+ds1") == (1, 1, 5)
    assert runtimes.parse_version("no digits") is None
    assert runtimes.version_below("4.2.9", "4.3.1") and not runtimes.version_below("4.3.1", "4.3.1")
    assert not runtimes.version_below(None, "4.3.1") and not runtimes.version_below("5.0", "4.3.1")
    with pytest.raises(ValueError, match="unknown container runtime"):
        runtimes.detect("lxc")
