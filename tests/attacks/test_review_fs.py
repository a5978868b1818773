"""Adversarial review of capgate.fs / paths / policy (public API only).

Every test asserts the SECURE behaviour: a failing test marks a hole.
Real temp dirs, real links, real threads; every race is bounded in time.
"""

from __future__ import annotations

import io
import json
import os
import stat as stat_mod
import threading
import time
from pathlib import Path

import pytest

import capgate
from capgate import fs
from capgate.audit import AuditLog
from tests.conftest import SECRET


def _gate(ws: Path, policy: dict | None = None, *, expand: bool = True, home: Path | None = None,
          tmp: Path | None = None) -> capgate.Gate:
    path = None
    if policy is not None:
        assert tmp is not None
        path = tmp / "review-policy.json"
        path.write_text(json.dumps({"version": 1, **policy}))
    loaded = capgate.load_policy(path, workspace=ws, allow_user_expansion=expand,
                                 home=str(home) if home else None)
    return capgate.Gate(loaded, audit=AuditLog(io.StringIO()))


# =====================================================================================
# 1. An open AtomicFile keeps its directory fd: renaming that directory afterwards moves
#    the final rename() into a place whose *name* was never checked.
# =====================================================================================
@pytest.mark.parametrize("dest", ["output/.git", "output/repo/.git/modules/sub"])
def test_atomic_writer_directory_renamed_into_git_cannot_plant_config(dest: str, gate: capgate.Gate,
                                                                    workspace: Path) -> None:
    fs.mkdir("output/g")
    fh = fs.open("output/g/config", "w")          # checked: output/g/config is fine
    fh.write("[core]\n\tfsmonitor = touch /tmp/pwned-capgate\n")
    fs.mkdir(os.path.dirname(dest), parents=True, exist_ok=True)
    try:
        fs.rename("output/g", dest)               # output/.git itself is not denied
    except PermissionError:
        fh.discard()
        return                                    # secure: the rename was refused
    try:
        fh.close()                                # os.replace(tmp, "config", dir_fd=<moved dir>)
    except PermissionError:
        pass
    planted = workspace / dest / "config"
    assert not planted.exists(), f"mandatory-denied {planted} was written through a held dir fd"


def test_atomic_writer_directory_renamed_into_git_at_workspace_root(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"write": ["."]}})
    with g:
        fs.mkdir("g")
        fh = fs.open("g/config", "w")
        fh.write("[core]\n\tfsmonitor = touch /tmp/pwned-capgate\n")
        try:
            fs.rename("g", ".git")
        except PermissionError:
            fh.discard()
            return
        try:
            fh.close()
        except PermissionError:
            pass
    assert not (workspace / ".git" / "config").exists(), ".git/config planted at the workspace root"


def test_user_deny_glob_tail_holds_against_directory_rename(make_gate, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"denyWrite": ["output/locked/*"]}}, expand=False)
    with g:
        with pytest.raises(PermissionError):
            fs.write_text("output/locked/a.txt", "x")
        fs.mkdir("output/tmpdir")
        fh = fs.open("output/tmpdir/a.txt", "w")
        fh.write("pwned")
        try:
            fs.rename("output/tmpdir", "output/locked")
        except PermissionError:
            fh.discard()
            return
        try:
            fh.close()
        except PermissionError:
            pass
    assert not (workspace / "output" / "locked" / "a.txt").exists()


# =====================================================================================
# 2. rename's subtree check and the rename itself are not atomic (threads).
# =====================================================================================
def test_directory_rename_race_cannot_plant_git_hooks(gate: capgate.Gate, workspace: Path) -> None:
    out = workspace / "output"
    hit = False
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline and not hit:
        fs.mkdir("output/d", exist_ok=True)
        go = threading.Event()
        stop = threading.Event()

        def planter() -> None:
            go.wait(1)
            while not stop.is_set():
                try:
                    fs.mkdir("output/d/hooks")
                    return
                except (FileExistsError, FileNotFoundError, PermissionError, OSError):
                    return

        t = threading.Thread(target=planter, daemon=True)
        t.start()
        go.set()
        try:
            fs.rename("output/d", "output/.git")
        except (PermissionError, OSError):
            pass
        stop.set()
        t.join(2)
        if (out / ".git" / "hooks").is_dir():
            hit = True
            break
        # reset with the raw os module (test scaffolding, not the attack)
        for p in (out / ".git", out / "d"):
            if p.exists():
                for sub in sorted(p.rglob("*"), reverse=True):
                    sub.rmdir() if sub.is_dir() else sub.unlink()
                p.rmdir()
    assert not hit, "a .git/hooks directory appeared through a rename/mkdir race"


# =====================================================================================
# 3. chmod / utime act on the inode: a hard link in a write root reaches a file outside.
# =====================================================================================
@pytest.fixture
def planted_hardlink(workspace: Path, fake_home: Path) -> Path:
    link = workspace / "output" / "notes.txt"
    os.link(fake_home / ".bashrc", link)          # e.g. shipped by a hostile archive
    return link


def test_chmod_through_hard_link_cannot_touch_outside_file(gate: capgate.Gate, fake_home: Path,
                                                           planted_hardlink: Path) -> None:
    before = stat_mod.S_IMODE(os.stat(fake_home / ".bashrc").st_mode)
    try:
        fs.chmod("output/notes.txt", 0o777)
    except PermissionError:
        pass
    assert stat_mod.S_IMODE(os.stat(fake_home / ".bashrc").st_mode) == before, "~/.bashrc mode changed"


def test_utime_through_hard_link_cannot_touch_outside_file(gate: capgate.Gate, fake_home: Path,
                                                           planted_hardlink: Path) -> None:
    before = os.stat(fake_home / ".bashrc").st_mtime_ns
    try:
        fs.utime("output/notes.txt", (1, 1))
    except PermissionError:
        pass
    assert os.stat(fake_home / ".bashrc").st_mtime_ns == before, "~/.bashrc mtime changed"


def test_check_agrees_with_fs_on_hard_linked_secret(gate: capgate.Gate, workspace: Path,
                                                    fake_home: Path) -> None:
    os.link(fake_home / ".ssh" / "id_rsa", workspace / "output" / "key.txt")
    with pytest.raises(PermissionError):
        fs.read_text("output/key.txt")
    assert not gate.check("fs.read", "output/key.txt").allowed, "check allows what fs refuses"


# =====================================================================================
# 4. Size cap: AtomicFile forwards truncate() to the temp file, bypassing the capped write().
# =====================================================================================
def test_truncate_cannot_exceed_max_file_size(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"limits": {"maxFileSizeMb": 1, "outputQuotaMb": 64}}, expand=False)
    with g:
        try:
            with fs.open("output/big.bin", "wb") as fh:
                fh.write(b"x")
                fh.truncate(8 * 1024 * 1024)
        except PermissionError:
            pass
    big = workspace / "output" / "big.bin"
    assert not big.exists() or big.stat().st_size <= 1024 * 1024, "file larger than maxFileSizeMb"


def test_seek_past_cap_then_write_is_refused(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"limits": {"maxFileSizeMb": 1}}, expand=False)
    with g:
        with pytest.raises(PermissionError):
            with fs.open("output/holes.bin", "wb") as fh:
                fh.seek(4 * 1024 * 1024)
                fh.write(b"x")
    assert not (workspace / "output" / "holes.bin").exists()


def test_quota_holds_with_truncate(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"limits": {"maxFileSizeMb": 4, "outputQuotaMb": 1}}, expand=False)
    with g:
        try:
            with fs.open("output/q.bin", "wb") as fh:
                fh.truncate(3 * 1024 * 1024)
        except PermissionError:
            pass
    assert not (workspace / "output" / "q.bin").exists()


# =====================================================================================
# 5. Policy file: coercion and pattern tricks.
# =====================================================================================
@pytest.mark.parametrize("version", ["true", "1.0"])
def test_version_is_not_coerced(version: str, workspace: Path, tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text('{"version": ' + version + '}')
    with pytest.raises(capgate.PolicyError):
        capgate.load_policy(p, workspace=workspace)


def test_double_star_deny_pattern_denies_everything(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"denyWrite": ["**"]}}, expand=False)  # gitignore: matches everything
    with g:
        assert not g.check("fs.write", "output/x.txt").allowed
        with pytest.raises(PermissionError):
            fs.write_text("output/x.txt", "x")
    assert not (workspace / "output" / "x.txt").exists()


def test_tilde_deny_pattern_denies_home(make_gate, fake_home: Path) -> None:  # type: ignore[no-untyped-def]
    (fake_home / "notes.txt").write_text("private")
    g = make_gate({"filesystem": {"read": [".", "~"], "denyRead": ["~"]}})
    with g:
        assert not g.check("fs.read", "~/notes.txt").allowed, "denyRead ['~'] does not deny the home dir"


@pytest.mark.parametrize("pattern", ["\\", "a\\", "[a-"])
def test_bad_deny_pattern_is_a_policy_error(pattern: str, workspace: Path, tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"version": 1, "filesystem": {"denyRead": [pattern]}}))
    with pytest.raises(capgate.PolicyError):
        capgate.load_policy(p, workspace=workspace)


@pytest.mark.parametrize("entry", ["\ud800", "output/\ud800"])
def test_lone_surrogate_root_is_a_policy_error(entry: str, workspace: Path, tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"version": 1, "filesystem": {"write": [entry]}}))
    with pytest.raises(capgate.PolicyError):
        capgate.load_policy(p, workspace=workspace)


@pytest.mark.parametrize(
    "fs_section",
    [
        {"read": ["~"]},
        {"read": ["/"]},
        {"write": ["src"]},
        {"write": ["output/../src"]},
        {"write": ["output/", "."]},
        {"recursiveDelete": ["output"]},
        {"read": ["link_out"]},
        {"denyRead": ["!.env"]},
        {"denyRead": ["src/../../x"]},
        {"denyRead": [1]},
        {"deny_read": [".x"]},
        {"extra": []},
        {"read": "."},
    ],
)
def test_restrict_only_refuses_widening_and_junk(fs_section: dict, workspace: Path, fake_home: Path,
                                                 tmp_path: Path) -> None:
    (workspace / "link_out").symlink_to(fake_home)
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"version": 1, "filesystem": fs_section}))
    with pytest.raises(capgate.PolicyError):
        capgate.load_policy(p, workspace=workspace)


# =====================================================================================
# 6. Deny patterns with glob metacharacters in the HOME / workspace path.
# =====================================================================================
@pytest.mark.parametrize("name", ["h[a]", "h*", "h?x", "h\\x", "h]", "!h", "#h", "h ", "h]*[", "[!h]"])
def test_glob_chars_in_home_do_not_weaken_home_denies(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / name
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(SECRET)
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text(SECRET)
    ws = tmp_path / f"ws-{name}"
    ws.mkdir()
    (ws / "output").mkdir()
    (ws / ".git").mkdir()
    monkeypatch.setenv("HOME", str(home))
    g = _gate(ws, {"filesystem": {"read": [".", "~"], "write": ["output", "."]}}, home=home, tmp=tmp_path)
    with g:
        for target in ("~/.aws/credentials", "~/.docker/config.json"):
            assert not g.check("fs.read", target).allowed, target
            with pytest.raises(PermissionError):
                fs.read_text(target)
        with pytest.raises(PermissionError):
            fs.write_text(".git/config", "x")
        with pytest.raises(PermissionError):
            fs.write_text(".git/hooks/pre-commit", "x")


# =====================================================================================
# 7. Things expected to hold (regression guards for the review).
# =====================================================================================
def test_fifo_read_does_not_hang_and_is_refused(gate: capgate.Gate, workspace: Path) -> None:
    os.mkfifo(workspace / "output" / "pipe")
    with pytest.raises(PermissionError):
        fs.read_bytes("output/pipe")
    with pytest.raises(PermissionError):
        fs.open("output/pipe", "a")


def test_magic_link_spellings(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    fd = os.open(fake_home / ".ssh" / "id_rsa", os.O_RDONLY)
    try:
        for spelling in (f"/dev/fd/{fd}", f"/proc/self/fd/{fd}", f"/proc/{os.getpid()}/fd/{fd}",
                         f"/proc/{os.getpid()}/task/{threading.get_native_id()}/fd/{fd}",
                         f"/proc/self/root{fake_home}/.ssh/id_rsa", f"//{fake_home}/.ssh/id_rsa",
                         f"/proc/{os.getpid()}/cwd/../../{fake_home}/.ssh/id_rsa"):
            assert not gate.check("fs.read", spelling).allowed, spelling
            with pytest.raises((PermissionError, FileNotFoundError)):
                fs.read_text(spelling)
    finally:
        os.close(fd)


def test_root_read_policy_still_denies_secrets_by_alias(make_gate, fake_home: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"read": ["/"]}})
    pid = os.getpid()
    with g:
        for spelling in (f"/proc/{pid}/root{fake_home}/.aws/credentials", f"//{fake_home}/.aws/credentials",
                         f"/proc/self/root/{fake_home}/.aws/credentials", f"{fake_home}/.aws/./credentials",
                         f"/proc/{pid}/cwd/{fake_home}/.aws/credentials"):
            with pytest.raises((PermissionError, FileNotFoundError)):
                data = fs.read_text(spelling)
                assert SECRET not in data


@pytest.mark.parametrize("mode", ["r+", "a", "a+", "rb+", "w+", "x", "ab", "r"])
def test_open_modes_through_symlink_to_secret(mode: str, gate: capgate.Gate, workspace: Path,
                                              fake_home: Path) -> None:
    (workspace / "output" / "l").symlink_to(fake_home / ".aws" / "credentials")
    with pytest.raises((PermissionError, FileExistsError)):
        fh = fs.open("output/l", mode)
        fh.close()
    assert (fake_home / ".aws" / "credentials").read_text() == SECRET
    assert (workspace / "output" / "l").is_symlink()


def test_mkdir_parents_through_symlink(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    (workspace / "output" / "h").symlink_to(fake_home)
    with pytest.raises(PermissionError):
        fs.mkdir("output/h/.ssh/evil/x", parents=True)
    with pytest.raises(PermissionError):
        fs.mkdir("output/.git/hooks", parents=True)
    assert not (fake_home / ".ssh" / "evil").exists()


def test_rmtree_with_symlinks_and_race(make_gate, workspace: Path, fake_home: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"recursiveDelete": ["output"]}})
    t = workspace / "output" / "t"
    (t / "a").mkdir(parents=True)
    (t / "a" / "f").write_text("x")
    (t / "home").symlink_to(fake_home)
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                os.rename(t / "a", t / "a.tmp")
                os.symlink(fake_home / ".ssh", t / "a")
                os.unlink(t / "a")
                os.rename(t / "a.tmp", t / "a")
            except OSError:
                pass

    th = threading.Thread(target=flipper, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 1.5
        with g:
            while time.monotonic() < deadline and t.exists():
                try:
                    fs.rmtree("output/t")
                except (OSError, PermissionError):
                    pass
    finally:
        stop.set()
        th.join(3)
    assert (fake_home / ".ssh" / "id_rsa").read_text() == SECRET
    assert (fake_home / ".bashrc").exists()


def test_parent_symlink_swap_on_write(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    out = workspace / "output"
    (out / "d").mkdir()
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                os.rename(out / "d", out / "d.real")
                os.symlink(fake_home, out / "d")
                os.unlink(out / "d")
                os.rename(out / "d.real", out / "d")
            except OSError:
                pass

    th = threading.Thread(target=flipper, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for call in (lambda: fs.write_text("output/d/.profile2", "pwn"),
                         lambda: fs.mkdir("output/d/newdir", exist_ok=True),
                         lambda: fs.chmod("output/d", 0o700),
                         lambda: fs.remove("output/d/.bashrc")):
                try:
                    call()
                except (OSError, PermissionError):
                    pass
    finally:
        stop.set()
        th.join(3)
    assert not (fake_home / ".profile2").exists()
    assert not (fake_home / "newdir").exists()
    assert (fake_home / ".bashrc").exists()


def test_dotdot_symlink_race_read(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    src = workspace / "src"
    (src / "x").mkdir()
    (src / "x" / "y").mkdir()
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                os.rename(src / "x" / "y", src / "x" / "y.real")
                os.symlink(fake_home / ".ssh" / "sub", src / "x" / "y")
                os.unlink(src / "x" / "y")
                os.rename(src / "x" / "y.real", src / "x" / "y")
            except OSError:
                pass

    (fake_home / ".ssh" / "sub").mkdir()
    th = threading.Thread(target=flipper, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                assert SECRET not in fs.read_text("src/x/y/../id_rsa")
            except (OSError, PermissionError):
                pass
    finally:
        stop.set()
        th.join(3)


def test_atomic_file_misuse(gate: capgate.Gate, workspace: Path) -> None:
    fs.write_text("output/keep.txt", "old")
    fh = fs.open("output/keep.txt", "w")
    fh.write("half")
    fh.flush()
    assert (workspace / "output" / "keep.txt").read_text() == "old"
    del fh
    import gc

    gc.collect()
    assert (workspace / "output" / "keep.txt").read_text() == "old"
    fh = fs.open("output/keep.txt", "w")
    fh.write("new")
    fh.close()
    with pytest.raises(ValueError):
        fh.write("after close")
    assert (workspace / "output" / "keep.txt").read_text() == "new"
    assert [p.name for p in (workspace / "output").iterdir()] == ["keep.txt"]


def test_failed_read_open_does_not_leak_descriptors(gate: capgate.Gate) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises((ValueError, LookupError)):
            fs.open("src/app.py", "r", buffering=0)
        with pytest.raises((ValueError, LookupError)):
            fs.open("src/app.py", "r", encoding="no-such-codec")
    assert len(os.listdir("/proc/self/fd")) - before < 5, "fds leaked by fs.open"


def test_rename_of_directory_holding_protected_files(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"write": ["."], "recursiveDelete": ["."]}})
    (workspace / "sub" / ".vscode").mkdir(parents=True)
    (workspace / "sub" / ".vscode" / "tasks.json").write_text("{}")
    with g:
        for call in (lambda: fs.rename("sub", "sub2"), lambda: fs.rmtree("sub"),
                     lambda: fs.remove("sub/.vscode/tasks.json"), lambda: fs.rename("output", "sub/.vscode/x")):
            with pytest.raises(PermissionError):
                call()
    assert (workspace / "sub" / ".vscode" / "tasks.json").exists()


def test_long_multibyte_name_write_does_not_leak_descriptors(gate: capgate.Gate, workspace: Path) -> None:
    name = "é" * 120                                # 240 bytes: a valid name; its temp name is not
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        try:
            fs.write_text(f"output/{name}", "x")
        except OSError:
            pass
    assert len(os.listdir("/proc/self/fd")) - before < 5, "dir fds leaked when the temp file cannot be created"


def test_long_multibyte_name_is_written(gate: capgate.Gate, workspace: Path) -> None:
    name = "é" * 120                                # 240 bytes: valid, and its temp name must fit too
    fs.write_text(f"output/{name}", "hello")
    assert (workspace / "output" / name).read_text() == "hello"
    assert [p.name for p in (workspace / "output").iterdir()] == [name], "a temp file was left behind"


def test_bad_encoding_leaves_no_temp_file_and_no_fd(gate: capgate.Gate, workspace: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        with pytest.raises(LookupError):
            fs.open("output/enc.txt", "w", encoding="no-such-codec")
    assert len(os.listdir("/proc/self/fd")) - before < 3
    assert list((workspace / "output").iterdir()) == []
