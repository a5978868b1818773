"""The container backend's pure argv builder: the namespace view turned into --mount arguments
and the hardening flags, the same for podman and Docker."""

from __future__ import annotations

import pytest

from capgate.backends.container import exit_limits
from capgate.backends.container_argv import (
    ContainerSpec,
    Mount,
    Overlay,
    UnmountablePath,
    container_argv,
    container_mounts,
)
from capgate.backends.namespace_view import Scan, View
from capgate.policy.model import Limits


def _view(**scan: tuple[str, ...]) -> View:
    return View(system=("/usr",), read=("/ws", "/ws/out/ro"), write=("/ws/out",), sockets=("/run/ok.sock",),
                scan=Scan(**scan), empty_file="/run/cg/empty-file", empty_dir="/run/cg/empty-dir", workspace="/ws",
                uid=1000, gid=1000)


def _spec(runtime: str = "podman", **kw: object) -> ContainerSpec:
    base: dict[str, object] = dict(runtime=runtime, executable=f"/usr/bin/{runtime}", image="localhost/capgate:k1",
                                   name="capgate-x", mounts=(Mount("/ws", "/ws"),), env_file="/run/cg/env",
                                   workdir="/ws", user="1000:1000", limits=Limits(), nproc=99,
                                   command=("/opt/capgate/bin/python", "-I", "entry.py", "--", "true"))
    base.update(kw)
    return ContainerSpec(**base)  # type: ignore[arg-type]


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_view_becomes_mounts_roots_then_readonly_then_covers() -> None:
    mounts = container_mounts(_view(hidden_files=("/ws/.env",), hidden_dirs=("/ws/secrets",),
                                    readonly=("/ws/out/.git/hooks",)),
                              run_binds=(("/run/cg/policy.json", False),), tmpfs=("/tmp", "/run/cg/home"),
                              volumes=(("capgate-cache", "/run/cg/home/.cache"),))
    args = [m.argument() for m in mounts]
    assert args == [  # by depth (as the runtimes apply them); at one depth, the namespace backend's order
        "type=tmpfs,destination=/tmp,tmpfs-mode=1777",
        "type=bind,source=/ws,destination=/ws,readonly",
        "type=bind,source=/ws/out,destination=/ws/out",
        "type=bind,source=/run/ok.sock,destination=/run/ok.sock",
        "type=bind,source=/run/cg/empty-dir,destination=/ws/secrets,readonly",
        "type=bind,source=/run/cg/empty-file,destination=/ws/.env,readonly",
        "type=tmpfs,destination=/run/cg/home,tmpfs-mode=700",
        "type=bind,source=/ws/out/ro,destination=/ws/out/ro",  # a read root inside a write root stays writable
        "type=bind,source=/run/cg/policy.json,destination=/run/cg/policy.json,readonly",
        "type=volume,source=capgate-cache,destination=/run/cg/home/.cache",
        "type=bind,source=/ws/out/.git/hooks,destination=/ws/out/.git/hooks,readonly",
    ]
    # every mount lands after (on top of) every mount that holds it
    targets = [m.target for m in mounts]
    for i, inner in enumerate(targets):
        assert not any(inner.startswith(outer + "/") for outer in targets[i + 1:])
    # the system part of the view is the image's: no host /usr goes in
    assert not any("/usr" in a for a in args)


def test_a_cover_replaces_a_bind_at_the_same_destination() -> None:
    # (a runtime refuses a duplicate destination; the cover, the more restrictive, wins)
    mounts = container_mounts(_view(hidden_dirs=("/ws/out",)))
    at = [m for m in mounts if m.target == "/ws/out"]
    assert len(at) == 1 and at[0].source == "/run/cg/empty-dir" and at[0].readonly


@pytest.mark.parametrize("bad", ["/ws/a,b", '/ws/a"b', "/ws/a\nb", "relative"])
def test_a_path_the_mount_syntax_cannot_carry_is_refused(bad: str) -> None:
    with pytest.raises(UnmountablePath):
        container_mounts(_view(hidden_files=(bad,)))
    control = container_mounts(_view(hidden_files=("/ws/a:b",)))  # (':' is fine with --mount)
    assert any(m.target == "/ws/a:b" for m in control)


def test_kernel_made_roots_are_never_bound() -> None:
    view = View(system=(), read=("/proc", "/dev/shm", "/sys/fs", "/ws"), write=(), sockets=(), scan=Scan(),
                empty_file="/e", empty_dir="/d", workspace="/ws", uid=0, gid=0)
    assert [m.target for m in container_mounts(view)] == ["/ws"]


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_hardening_flags_for_both_runtimes(runtime: str) -> None:
    limits = Limits(memory_mb=300, max_processes=40, max_open_files=200, max_file_size_mb=5, cpu_seconds=30)
    argv = container_argv(_spec(runtime, limits=limits))
    assert argv[:5] == [f"/usr/bin/{runtime}", "run", "--rm", "--name", "capgate-x"]
    for flag in ("--network=none", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                 "--log-driver=none", "--interactive"):
        assert flag in argv
    assert _pairs(argv, "--user") == ["1000:1000"]
    assert _pairs(argv, "--pids-limit") == ["40"]
    assert _pairs(argv, "--memory") == ["300m"] and _pairs(argv, "--memory-swap") == ["300m"]
    assert _pairs(argv, "--ulimit") == ["nofile=200:200", "nproc=99:99", f"fsize={5 << 20}:{5 << 20}", "core=0:0",
                                        "cpu=30:31"]
    assert _pairs(argv, "--env-file") == ["/run/cg/env"]
    assert _pairs(argv, "--mount") == ["type=bind,source=/ws,destination=/ws,readonly"]
    # the image, then the command: the entrypoint is the shim, never the image's own
    i = argv.index("localhost/capgate:k1")
    assert argv[i - 2:i] == ["--entrypoint", "/opt/capgate/bin/python"]
    assert argv[i + 1:] == ["-I", "entry.py", "--", "true"]
    assert not any(a.startswith(("--network=host", "--privileged", "--net=", "-p")) for a in argv)


def test_podman_only_flags() -> None:
    podman = container_argv(_spec("podman", oci_runtime="runc", rootless=True))
    assert _pairs(podman, "--runtime") == ["runc"]
    assert "--http-proxy=false" in podman and "--userns=keep-id" in podman
    docker = container_argv(_spec("docker", oci_runtime="runc", rootless=True))
    assert "--runtime" not in docker and "--http-proxy=false" not in docker and "--userns=keep-id" not in docker


def test_unknown_runtime_and_unmountable_workdir_refused() -> None:
    with pytest.raises(ValueError, match="unknown container runtime"):
        container_argv(_spec("lxc"))
    with pytest.raises(UnmountablePath):
        container_argv(_spec(workdir="/ws,x"))


def test_exit_status_names_the_limit() -> None:
    assert exit_limits(137, True) == ("wall_time",)
    assert exit_limits(152, False) == ("cpuSeconds",)
    assert exit_limits(153, False) == ("maxFileSizeMb",)
    assert exit_limits(137, False)[0].startswith("memoryMb")
    assert exit_limits(0, False) == () and exit_limits(1, False) == ()


def _staged_mounts() -> tuple[Mount, ...]:
    view = View(system=("/usr",), read=("/ws", "/ws/src"), write=("/ws", "/ws/output", "/elsewhere"),
                sockets=("/ws/dev.sock",), scan=Scan(hidden_files=("/ws/.env",), hidden_dirs=("/ws/secrets",),
                                                     readonly=("/ws/.git/hooks", "/ws/.bashrc")),
                empty_file="/run/cg/empty-file", empty_dir="/run/cg/empty-dir", workspace="/ws", uid=0, gid=0)
    return container_mounts(view, run_binds=(("/run/cg", False),),
                            overlay=Overlay("/ws", "/st/run/upper", "/st/run/work"))


def test_staged_workspace_is_an_overlay_with_every_cover_on_top() -> None:
    mounts = _staged_mounts()
    targets = [m.target for m in mounts]
    (overlay,) = [m for m in mounts if m.kind == "overlay"]
    assert overlay.target == overlay.source == "/ws" and not overlay.readonly
    # nothing beneath the workspace is bound from the host as a root (its writes would be real)
    assert not [m for m in mounts if m.kind == "bind" and m.source in ("/ws", "/ws/src", "/ws/output")]
    assert ("/elsewhere" in targets) and ("/run/cg" in targets)  # roots outside it stay
    # the covers, read-only re-binds and sockets beneath it come after it: on top of it
    beneath = [m for m in mounts if m.target.startswith("/ws/")]
    assert {m.target for m in beneath} == {"/ws/.env", "/ws/secrets", "/ws/.git/hooks", "/ws/.bashrc",
                                           "/ws/dev.sock"}
    assert all(targets.index(m.target) > targets.index("/ws") for m in beneath)
    assert all(m.readonly for m in beneath if m.target != "/ws/dev.sock")
    # control: without an overlay the same view binds the workspace and its roots from the host
    plain = container_mounts(View(system=(), read=("/ws", "/ws/src"), write=("/ws", "/ws/output"), sockets=(),
                                  scan=Scan(), empty_file="/e", empty_dir="/d", workspace="/ws", uid=0, gid=0))
    assert [(m.kind, m.source) for m in plain] == [("bind", "/ws"), ("bind", "/ws/output"), ("bind", "/ws/src")]


def test_staged_overlay_argument_per_runtime() -> None:
    mounts = _staged_mounts()
    podman = container_argv(_spec("podman", mounts=mounts))
    assert "/ws:/ws:O,upperdir=/st/run/upper,workdir=/st/run/work" in _pairs(podman, "-v")
    docker = container_argv(_spec("docker", mounts=mounts))
    assert not _pairs(docker, "-v")
    (volume,) = [a for a in _pairs(docker, "--mount") if a.startswith("type=volume")]
    import csv

    fields = next(csv.reader([volume]))  # (Docker reads --mount as CSV)
    assert fields[:7] == ["type=volume", "destination=/ws", "volume-driver=local", "volume-nocopy=true",
                          "volume-label=capgate.staged=1", "volume-opt=type=overlay", "volume-opt=device=overlay"]
    assert fields[7] == ("volume-opt=o=lowerdir=/ws,upperdir=/st/run/upper,workdir=/st/run/work,"
                         "metacopy=off,redirect_dir=nofollow,index=off")
    assert len(fields) == 8 and "source=" not in volume  # anonymous: removed with the container (--rm)
    # every cover comes after the overlay on both command lines
    for argv in (podman, docker):
        text = " ".join(argv)
        assert text.index("/st/run/upper") < text.index("destination=/ws/.env")


@pytest.mark.parametrize("bad", ["/w:s", "/w,s", '/w"s'])
def test_overlay_paths_that_cannot_be_said_are_refused(bad: str) -> None:
    view = View(system=(), read=(bad,), write=(bad,), sockets=(), scan=Scan(), empty_file="/e", empty_dir="/d",
                workspace=bad, uid=0, gid=0)
    with pytest.raises(UnmountablePath):
        for runtime in ("podman", "docker"):
            container_argv(_spec(runtime, mounts=container_mounts(view, overlay=Overlay(bad, "/u", "/w"))))
    for field_ in ("upper", "work"):  # the staging side too
        paths = {"lower": "/ws", "upper": "/u", "work": "/w", field_: "/st:x"}
        with pytest.raises(UnmountablePath):
            Mount("/ws", "/ws", kind="overlay", overlay=Overlay(**paths)).arguments("docker")
    # control: a plain bind may hold a colon (--mount does not split on it)
    assert Mount("/w:s", "/w:s").argument() == "type=bind,source=/w:s,destination=/w:s,readonly"


def test_podman_staging_refuses_a_kernel_whose_overlay_defaults_changes_cannot_read(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from capgate.backends import container
    from capgate.errors import BackendUnavailable

    params = Path(str(tmp_path))
    monkeypatch.setattr(container, "_OVERLAY_PARAMETERS", str(params))
    (params / "metacopy").write_text("N\n")
    (params / "redirect_dir").write_text("N\n")
    container._check_overlay_defaults("podman")  # control: the defaults capgate changes can read
    for name in ("metacopy", "redirect_dir"):
        (params / name).write_text("Y\n")
        with pytest.raises(BackendUnavailable, match=f"{name}=Y"):
            container._check_overlay_defaults("podman")
        container._check_overlay_defaults("docker")  # Docker's overlay is mounted with our options
        (params / name).write_text("N\n")
