"""Every spelling of "the secret in ~/.ssh" is denied, on the real filesystem.

Each case builds its hostile path (and any symlink or hard link it needs) inside a real temp
workspace, then tries every reading API. The secret's bytes must never come back, and the
gate must refuse with PermissionError (or refuse the path outright as malformed).
Benign controls read a real source file through the same spellings, so a deny-everything
gate fails this file too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import capgate
from capgate import fs
from tests.conftest import SECRET

Builder = Callable[[Path, Path, Path], object]  # (workspace, home, tmp) -> target


def _fd_path(prefix: str) -> Builder:
    def build(ws: Path, home: Path, tmp: Path) -> object:
        fd = os.open(home / ".ssh" / "id_rsa", os.O_RDONLY)
        _OPEN_FDS.append(fd)
        return f"{prefix}/{fd}"

    return build


def _symlink(name: str, to: Callable[[Path, Path], str], read: str | None = None) -> Builder:
    def build(ws: Path, home: Path, tmp: Path) -> object:
        link = ws / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(to(ws, home), link)
        return read or name

    return build


def _chain(ws: Path, home: Path, tmp: Path) -> object:
    (ws / "a").symlink_to("b")
    (ws / "b").symlink_to("src/c")
    (ws / "src" / "c").symlink_to(os.path.relpath(home / ".ssh" / "id_rsa", ws / "src"))
    return "a"


def _hard_link(ws: Path, home: Path, tmp: Path) -> object:
    os.link(home / ".ssh" / "id_rsa", ws / "src" / "notes.txt")
    return "src/notes.txt"


def _cwd(ws: Path, home: Path, tmp: Path) -> object:
    os.chdir(tmp)
    return "/proc/self/cwd/home/.ssh/id_rsa"


def _secret_in(sub: str) -> Builder:
    def build(ws: Path, home: Path, tmp: Path) -> object:
        target = ws / sub
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(SECRET)
        return sub

    return build


_OPEN_FDS: list[int] = []

ESCAPES: dict[str, Builder] = {
    "absolute": lambda ws, home, tmp: str(home / ".ssh" / "id_rsa"),
    "tilde": lambda ws, home, tmp: "~/.ssh/id_rsa",
    "tilde-dir-dotdot": lambda ws, home, tmp: "~/.aws/../.ssh/id_rsa",
    "dotdot": lambda ws, home, tmp: "../home/.ssh/id_rsa",
    "dotdot-deep": lambda ws, home, tmp: "src/../../home/.ssh/id_rsa",
    "dot-dotdot": lambda ws, home, tmp: "./../home/.ssh/id_rsa",
    "repeated-slashes": lambda ws, home, tmp: "src//..//..//home//.ssh//id_rsa",
    "absolute-through-workspace": lambda ws, home, tmp: f"{ws}/../home/.ssh/id_rsa",
    "many-dotdots": lambda ws, home, tmp: "../" * 30 + str(home / ".ssh" / "id_rsa").lstrip("/"),
    "proc-self-root": lambda ws, home, tmp: f"/proc/self/root{home}/.ssh/id_rsa",
    "proc-pid-root": lambda ws, home, tmp: f"/proc/{os.getpid()}/root{home}/.ssh/id_rsa",
    "proc-thread-self-root": lambda ws, home, tmp: f"/proc/thread-self/root{home}/.ssh/id_rsa",
    "proc-self-cwd": _cwd,
    "proc-self-fd": _fd_path("/proc/self/fd"),
    "dev-fd": _fd_path("/dev/fd"),
    "proc-pid-fd": lambda ws, home, tmp: _fd_path(f"/proc/{os.getpid()}/fd")(ws, home, tmp),
    "symlink-file": _symlink("src/link.py", lambda ws, home: str(home / ".ssh" / "id_rsa")),
    "symlink-dir": _symlink("src/keys", lambda ws, home: str(home / ".ssh"), "src/keys/id_rsa"),
    "symlink-relative-chain": _chain,
    "symlink-to-proc-root": _symlink("src/root", lambda ws, home: "/proc/self/root", None),
    "symlink-dotdot-after-link": _symlink(
        "src/deep", lambda ws, home: str(home / ".aws"), "src/deep/../.ssh/id_rsa"
    ),
    "hard-link-in-workspace": _hard_link,
    "dotenv-root": lambda ws, home, tmp: ".env",
    "dotenv-nested": _secret_in("src/config/.env.production"),
    "pem-anywhere": _secret_in("src/certs/server.pem"),
    "ssh-key-copied": _secret_in("backup/id_ed25519"),
    "aws-credentials": lambda ws, home, tmp: "~/.aws/credentials",
}


@pytest.fixture(autouse=True)
def _close_fds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(os.getcwd())  # _cwd changes directory; undo it after each test
    yield
    while _OPEN_FDS:
        os.close(_OPEN_FDS.pop())


READERS: dict[str, Callable[[object], object]] = {
    "read_text": lambda t: fs.read_text(t),  # type: ignore[arg-type]
    "read_bytes": lambda t: fs.read_bytes(t),  # type: ignore[arg-type]
    "open": lambda t: fs.open(t).read(),  # type: ignore[arg-type]
    "open-rb": lambda t: fs.open(t, "rb").read(),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escape_spelling_never_yields_secret(
    case: str, reader: str, gate: capgate.Gate, workspace: Path, fake_home: Path, tmp_path: Path
) -> None:
    target = ESCAPES[case](workspace, fake_home, tmp_path)
    if case == "symlink-to-proc-root":
        target = f"src/root{fake_home}/.ssh/id_rsa"
    with pytest.raises(PermissionError) as info:
        result = READERS[reader](target)
        assert SECRET not in str(result)  # pragma: no cover - reached only if not denied
    assert SECRET not in str(info.value)
    assert isinstance(info.value, capgate.PermissionDenied)
    assert info.value.op == "fs.read"


# A hard link is a name inside the workspace; fs refuses it when it opens it (tested above).
@pytest.mark.parametrize("case", sorted(set(ESCAPES) - {"hard-link-in-workspace"}))
def test_escape_spelling_denied_by_check(case: str, gate: capgate.Gate, workspace: Path, fake_home: Path,
                                         tmp_path: Path) -> None:
    target = ESCAPES[case](workspace, fake_home, tmp_path)
    if case == "symlink-to-proc-root":
        target = f"src/root{fake_home}/.ssh/id_rsa"
    assert gate.check("fs.read", target).allowed is False


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escape_spelling_metadata_apis_denied(case: str, gate: capgate.Gate, workspace: Path, fake_home: Path,
                                              tmp_path: Path) -> None:
    target = ESCAPES[case](workspace, fake_home, tmp_path)
    if case in ("hard-link-in-workspace",):
        return  # stat of a hard-linked file reveals no content; reading it is what is refused
    if case == "symlink-to-proc-root":
        target = f"src/root{fake_home}/.ssh/id_rsa"
    with pytest.raises(PermissionError):
        fs.stat(target)  # type: ignore[arg-type]
    with pytest.raises(PermissionError):
        fs.exists(target)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target",
    [b"src/app.py", 42, None, "", "src/app.py\x00/../../home/.ssh/id_rsa", ["src/app.py"]],
    ids=["bytes", "int", "none", "empty", "nul-byte", "list"],
)
def test_malformed_paths_are_rejected(target: object, gate: capgate.Gate) -> None:
    assert gate.check("fs.read", target).allowed is False
    with pytest.raises((PermissionError, TypeError, ValueError)):
        fs.read_text(target)  # type: ignore[arg-type]


def test_secret_dirs_cannot_be_listed(gate: capgate.Gate, fake_home: Path) -> None:
    with pytest.raises(PermissionError):
        fs.listdir("~/.ssh")
    with pytest.raises(PermissionError):
        fs.listdir(str(fake_home))


BENIGN = {
    "relative": "src/app.py",
    "dot-relative": "./src/app.py",
    "dotdot-inside": "src/../src/app.py",
    "absolute": None,
    "symlink-inside": "src/alias.py",
}


@pytest.mark.parametrize("case", sorted(BENIGN))
def test_benign_spellings_read_the_source(case: str, gate: capgate.Gate, workspace: Path) -> None:
    (workspace / "src" / "alias.py").symlink_to("app.py")
    target = BENIGN[case] or str(workspace / "src" / "app.py")
    assert fs.read_text(target) == "print('hello')\n"
    assert fs.read_bytes(target) == b"print('hello')\n"
    with fs.open(target) as fh:
        assert fh.read() == "print('hello')\n"
    assert gate.check("fs.read", target).allowed


def test_relative_paths_ignore_the_process_cwd(gate: capgate.Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    elsewhere = tmp_path / "elsewhere" / "src"
    elsewhere.mkdir(parents=True)
    (elsewhere / "app.py").write_text("wrong file\n")
    monkeypatch.chdir(elsewhere.parent)
    assert fs.read_text("src/app.py") == "print('hello')\n"


def test_listdir_and_stat_of_workspace(gate: capgate.Gate) -> None:
    assert "app.py" in fs.listdir("src")
    assert fs.stat("src/app.py").st_size == len("print('hello')\n")
    assert fs.exists("src/app.py") and not fs.exists("src/missing.py")


def test_denial_message_names_op_target_and_rule(gate: capgate.Gate) -> None:
    with pytest.raises(capgate.PermissionDenied) as info:
        fs.read_text("~/.ssh/id_rsa")
    err = info.value
    assert str(err) == "fs.read denied: ~/.ssh/id_rsa (denyRead '~/.ssh')"
    assert (err.op, err.target, err.rule) == ("fs.read", "~/.ssh/id_rsa", "filesystem.denyRead[0]")
    assert isinstance(err, PermissionError)
