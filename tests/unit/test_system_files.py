"""``system_files()``: a reviewed directory holding a private file is narrowed to its
world-readable files, so neither layer opens the private one (real files and modes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capgate import launcher


def _pip_dir(tmp_path: Path, private_mode: int) -> Path:
    pip = tmp_path / "xdg" / "pip"
    pip.mkdir(parents=True)
    (pip / "pip.conf").write_text("[global]\nindex-url = https://token@example.invalid/simple\n")
    (pip / "pip.conf").chmod(private_mode)
    (pip / "constraints.txt").write_text("requests<3\n")
    (pip / "constraints.txt").chmod(0o644)
    return pip


def test_a_private_file_inside_a_listed_directory_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = _pip_dir(tmp_path, 0o600)
    monkeypatch.setattr(launcher, "SYSTEM_FILES", (str(pip),))
    files = launcher.system_files()
    assert str(pip / "pip.conf") not in files and str(pip) not in files
    assert str(pip / "constraints.txt") in files


def test_a_listed_directory_with_only_public_files_stays_whole_control(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pip = _pip_dir(tmp_path, 0o644)
    monkeypatch.setattr(launcher, "SYSTEM_FILES", (str(pip),))
    assert launcher.system_files() == (str(pip),)
