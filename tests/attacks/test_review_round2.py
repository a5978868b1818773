"""Adversarial review, round 2: ``capgate.proc.run`` under ``allowShell: false``.

Every test asserts the *secure* behaviour, so each failure marks a hole found by this review.
Code execution is detected with a marker file outside the workspace (in ``tmp_path``); the
hostile payload is always ``/bin/sh`` reading a one-line script on stdin (``echo > marker``),
which Landlock's exec allowlist is supposed to make impossible. Every run is bounded by a
timeout; nothing is left running.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from capgate import proc
from capgate.errors import PermissionDenied

pytestmark = pytest.mark.timeout(60)

LOADER = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
SH = "/bin/sh"

needs_loader = pytest.mark.skipif(not os.path.exists(LOADER), reason="x86-64 glibc loader not present")


@pytest.fixture
def mark(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    return outside / "pwned"


def _script(mark: Path) -> bytes:
    return f"echo pwned > {mark}\n".encode()


def _run_attack(argv: list[str], mark: Path, **kw: object) -> None:
    """Run ``argv``; a denial is the secure outcome, so is a run that leaves no marker."""
    try:
        proc.run(argv, timeout=15, **kw)  # type: ignore[arg-type]
    except PermissionDenied:
        pass
    assert not mark.exists(), f"{argv!r} ran a shell despite allowShell: false"


def _git(*args: str, cwd: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=20)


# ---------------------------------------------------------------------------------------------
# 1. env: the trampoline grammar does not follow GNU getopt (clusters, abbreviations)
# ---------------------------------------------------------------------------------------------


@needs_loader
@pytest.mark.parametrize("argv", [
    # "-iu git": -i, then -u takes "git" as its value; capgate reads "git" as the program
    ["env", "-iu", "git", LOADER, SH],
    # "--uns" is getopt's abbreviation of --unset (takes a value)
    ["env", "--uns", "git", LOADER, SH],
    # "-iS…" is -i plus -S (split string); capgate only looks for a leading "-S"
    ["env", f"-iS{LOADER} {SH}"],
    # "--split=…" abbreviates --split-string=…; capgate only looks for "--split-string="
    ["env", f"--split={LOADER} {SH}"],
], ids=["cluster-iu", "abbrev-unset", "cluster-iS", "abbrev-split"])
def test_env_option_grammar_cannot_hide_the_program(make_gate, mark: Path, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"process": {"allowedCommands": ["env", "git"], "allowShell": False}}):
        _run_attack(argv, mark, input=_script(mark))


# ---------------------------------------------------------------------------------------------
# 2. Landlock allows the ELF loader: whoever can exec it runs any readable file (a shell)
# ---------------------------------------------------------------------------------------------


@needs_loader
def test_make_cannot_run_a_shell_through_the_elf_loader(make_gate, workspace: Path, mark: Path) -> None:  # type: ignore[no-untyped-def]
    """A Makefile in the workspace sets ``SHELL`` to the loader (an allowed exec target) and
    ``.SHELLFLAGS`` to ``/bin/sh -c``: make execs the loader, which maps /bin/sh itself (no
    execve, so no Landlock check) and the recipe runs in a real shell."""
    (workspace / "Makefile").write_text(
        f"SHELL := {LOADER}\n.SHELLFLAGS := {SH} -c\nall:\n\techo pwned > {mark}\n"
    )
    with make_gate({"process": {"allowedCommands": ["make"], "allowShell": False}}):
        _run_attack(["make", "-s"], mark)


@needs_loader
def test_tar_options_from_the_environment_cannot_run_a_shell(make_gate, workspace: Path, mark: Path) -> None:  # type: ignore[no-untyped-def]
    """``TAR_OPTIONS`` reaches the child (only LD_*, GIT_*, … are stripped), so the argument
    rules never see ``--use-compress-program``; tar execs the loader, which runs /bin/sh."""
    archive = workspace / "output" / "a.tar"
    payload = workspace / "output" / "f"
    payload.write_text("x")
    with tarfile.open(archive, "w") as tf:
        tf.add(payload, arcname="f")
    opts = f"--use-compress-program='{LOADER} {SH} -c \"echo pwned > {mark}\"'"
    with make_gate({"process": {"allowedCommands": ["tar"], "allowShell": False}}):
        _run_attack(["tar", "-tf", "output/a.tar"], mark, env={"TAR_OPTIONS": opts})


# ---------------------------------------------------------------------------------------------
# 3. git: the configuration check lists a different repository than the one git uses
# ---------------------------------------------------------------------------------------------


def _hostile_alias_config() -> str:
    # "!" + one word without shell metacharacters: git execs it directly (no /bin/sh), with
    # the alias's arguments appended: git x /bin/sh  ->  LOADER /bin/sh
    return f"[alias]\n\tx = !{LOADER}\n"


@needs_loader
def test_git_bare_uses_a_config_the_check_never_listed(make_gate, workspace: Path, mark: Path) -> None:  # type: ignore[no-untyped-def]
    """``output/`` (agent-writable) holds an empty ``.git`` (discovery finds it: the check lists
    its inert config) *and* a bare-repository layout whose ``config`` has a hostile alias.
    ``git --bare`` makes git use the cwd itself as GIT_DIR: the alias runs."""
    out = workspace / "output"
    _git("init", "-q", cwd=out)  # benign .git (the check lists this one)
    (out / ".git" / "config").write_text("[core]\n\trepositoryformatversion = 0\n")
    (out / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "objects").mkdir()
    (out / "refs").mkdir()
    (out / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n" + _hostile_alias_config())
    with make_gate({"process": {"allowedCommands": ["git"], "allowShell": False}}):
        _run_attack(["git", "--bare", "x", SH], mark, cwd="output", input=_script(mark))


@needs_loader
@pytest.mark.parametrize("how", ["env-chdir", "find-execdir"])
def test_git_behind_a_trampoline_that_changes_directory_is_checked_there(  # type: ignore[no-untyped-def]
    make_gate, workspace: Path, mark: Path, how: str
) -> None:
    """The check runs ``git config --list`` in proc.run's cwd; ``env -C sub git …`` and
    ``find sub -execdir git …`` run git in ``sub``, whose repository has a hostile alias."""
    sub = workspace / "vendor" / "lib"
    sub.mkdir(parents=True)
    _git("init", "-q", cwd=sub)
    with open(sub / ".git" / "config", "a") as fh:
        fh.write(_hostile_alias_config())
    (sub / "file").write_text("x")
    if how == "env-chdir":
        argv = ["env", "-C", "vendor/lib", "git", "x", SH]
        allowed = ["env", "git"]
    else:
        argv = ["find", "vendor/lib/file", "-execdir", "git", "x", SH, ";"]
        allowed = ["find", "git"]
    with make_gate({"process": {"allowedCommands": allowed, "allowShell": False}}):
        _run_attack(argv, mark, input=_script(mark))


@needs_loader
def test_git_config_exemption_does_not_cover_a_second_git(make_gate, workspace: Path, mark: Path) -> None:  # type: ignore[no-untyped-def]
    """``_git_config_decision`` returns "allowed" at the first ``git config`` it sees, without
    listing anything; a second git on the same command line (``find -exec … -exec …``) then
    runs in the workspace repository whose ``.git/config`` has a hostile alias."""
    _git("init", "-q", cwd=workspace)
    with open(workspace / ".git" / "config", "a") as fh:
        fh.write(_hostile_alias_config())
    argv = ["find", "src/app.py", "-exec", "git", "config", "--list", ";", "-exec", "git", "x", SH, ";"]
    with make_gate({"process": {"allowedCommands": ["find", "git"], "allowShell": False}}):
        with pytest.raises(PermissionDenied):  # the plain form is refused: the check works
            proc.run(["git", "x", SH], timeout=15, input=_script(mark))
        _run_attack(argv, mark, input=_script(mark))
