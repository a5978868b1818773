"""The namespace view's pure parts: the walk that decides what to cover (real files, real
links and sockets in a temp dir, decided by the gate's own rules) and bubblewrap's argv."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import capgate
from capgate.backends.namespace_view import Scan, View, bwrap_argv, created_denials, scan
from capgate.gate import Gate


@pytest.fixture
def rules(workspace: Path, fake_home: Path):  # type: ignore[no-untyped-def]
    policy = capgate.load_policy(None, workspace=workspace)
    return Gate(policy).path_rules, policy


def test_scan_covers_what_the_gate_refuses_and_nothing_else(rules, workspace: Path, fake_home: Path) -> None:  # type: ignore[no-untyped-def]
    paths, policy = rules
    (workspace / "src" / "keys").mkdir()
    (workspace / "src" / "keys" / "server.pem").write_text("k")
    (workspace / "secrets.env.d").mkdir()
    os.link(fake_home / ".ssh" / "id_rsa", workspace / "src" / "planted")
    (workspace / "output" / ".git" / "hooks").mkdir(parents=True)
    (workspace / "output" / ".bashrc").write_text("")
    (workspace / "output" / "fine.txt").write_text("ok")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(workspace / "s.sock"))
    try:
        found = scan(paths, policy.filesystem.read, policy.filesystem.write)
    finally:
        sock.close()
    ws = str(workspace)
    assert set(found.hidden_files) == {f"{ws}/.env", f"{ws}/src/keys/server.pem", f"{ws}/src/planted", f"{ws}/s.sock"}
    assert found.reasons[f"{ws}/src/planted"] == "filesystem.hardLinks"
    assert found.reasons[f"{ws}/s.sock"] == "network.allowedUnixSockets"
    assert set(found.readonly) == {f"{ws}/output/.git/hooks", f"{ws}/output/.bashrc"}
    # controls: ordinary files and directories are left alone
    assert f"{ws}/src/app.py" not in found.hidden_files and f"{ws}/output/fine.txt" not in found.readonly
    assert f"{ws}/src/keys" not in found.hidden_dirs
    # a listed socket stays
    again = scan(paths, policy.filesystem.read, policy.filesystem.write, allowed_sockets=(f"{ws}/s.sock",))
    assert f"{ws}/s.sock" not in again.hidden_files


def test_a_read_denied_directory_is_covered_whole(rules, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    paths, policy = rules
    (workspace / ".env.d" / "deep").mkdir(parents=True)
    (workspace / ".env.d" / "deep" / "x").write_text("s")
    found = scan(paths, policy.filesystem.read, policy.filesystem.write)
    assert f"{workspace}/.env.d" in found.hidden_dirs
    assert not any(p.startswith(f"{workspace}/.env.d/") for p in found.hidden_files)


def test_scan_refuses_past_its_limit(rules, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    paths, policy = rules
    for i in range(20):
        (workspace / "src" / f"f{i}").write_text("")
    with pytest.raises(OSError, match="too many"):
        scan(paths, policy.filesystem.read, policy.filesystem.write, limit=10)
    assert scan(paths, policy.filesystem.read, policy.filesystem.write, limit=1000).entries > 20


def test_created_denials_finds_new_mandatory_names_only(rules, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    paths, policy = rules
    before = scan(paths, policy.filesystem.read, policy.filesystem.write)
    (workspace / "output" / ".bashrc").write_text("planted")
    (workspace / "output" / "report.md").write_text("fine")
    found = created_denials(paths, policy.filesystem.write, before)
    assert [p for p, _rule, _why in found] == [f"{workspace}/output/.bashrc"]


def _view(**kw: object) -> View:
    base: dict[str, object] = dict(
        system=("/usr", "/etc/hostname", "/proc", "/dev/null"), read=("/ws", "/ws/output/inner"),
        write=("/ws/output",), sockets=(), scan=Scan(hidden_files=("/ws/.env",), hidden_dirs=("/ws/.secret",),
                                                     readonly=("/ws/output/.bashrc",)),
        empty_file="/run/e", empty_dir="/run/d", workspace="/ws", uid=1000, gid=1000)
    base.update(kw)
    return View(**base)  # type: ignore[arg-type]


def test_bwrap_argv_isolates_and_orders_mounts_so_covers_come_last() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", _view(), ["/bin/true", "x"])
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--die-with-parent", "--new-session", "--disable-userns"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-3:] == ["--", "/bin/true", "x"]

    def at(*triple: str) -> int:
        for i in range(len(argv) - 2):
            if tuple(argv[i : i + 3]) == triple:
                return i
        raise AssertionError(f"{triple} not in {argv}")

    # /proc and /dev are made by bwrap, never bound from the host
    assert "/proc" not in [argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--ro-bind")]
    ws = at("--ro-bind-try", "/ws", "/ws")
    output = at("--bind-try", "/ws/output", "/ws/output")
    inner = at("--bind-try", "/ws/output/inner", "/ws/output/inner")  # a read root inside a write root stays writable
    env = at("--ro-bind", "/run/e", "/ws/.env")
    secret = at("--ro-bind", "/run/d", "/ws/.secret")
    bashrc = at("--ro-bind", "/ws/output/.bashrc", "/ws/output/.bashrc")
    assert at("--tmpfs", "/tmp", "--ro-bind-try") < ws < output < inner < min(env, secret, bashrc)


def test_a_read_only_bind_already_shown_by_an_outer_one_is_left_out(tmp_path: Path) -> None:
    """Each mount costs bubblewrap time at start; a read-only path under a read-only bind that
    already shows it is not bound again, except where the second bind could change what is
    seen (a symlink on the way, a cover around or beneath it, a write root)."""
    root = tmp_path / "sys"
    (root / "ssl" / "private").mkdir(parents=True)
    (root / "hosts").write_text("h")
    (root / "real.conf").write_text("r")
    (root / "link.conf").symlink_to(root / "real.conf")
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "output" / "keep").mkdir(parents=True)
    s, w = str(root), str(ws)
    view = View(system=(s,), read=(f"{s}/hosts", f"{s}/link.conf", f"{s}/ssl", w, f"{w}/src", f"{w}/output/keep"),
                write=(f"{w}/output",), sockets=(), scan=Scan(), empty_file="/e", empty_dir="/d", workspace=w,
                uid=0, gid=0, system_hidden_dirs=(f"{s}/ssl/private",))
    argv = bwrap_argv("/usr/bin/bwrap", view, ["true"])
    bound = {argv[i + 1] for i, word in enumerate(argv) if word in ("--ro-bind-try", "--bind-try")}
    assert f"{s}/hosts" not in bound and f"{w}/src" not in bound  # shown by /sys and by the workspace
    assert {s, w, f"{w}/output", f"{s}/link.conf", f"{s}/ssl", f"{w}/output/keep"} <= bound  # the controls
