"""The staging store's own checks (issue 21): a staging directory must be the user's alone
(0700), a run id is spelled one way, and a policy that does not read the whole workspace
cannot be staged. Real directories; no overlay needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import capgate
from capgate import launcher
from capgate.errors import StagingError
from capgate.staging.commands import split_run_id
from capgate.staging.store import create_run, find_run, list_runs, load_run, remove_run


def _env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_a_run_directory_is_private_and_listed(tmp_path: Path) -> None:
    env = _env(tmp_path)
    run, lock = create_run(str(tmp_path / "ws"), "{}", backend="namespace", environ=env)
    assert os.stat(run.path).st_mode & 0o777 == 0o700
    assert run.running() and run.state() == "running"
    lock.finish()
    assert run.state() == "finished"
    assert find_run(None, str(tmp_path / "ws"), env) == run
    assert list_runs(str(tmp_path / "elsewhere"), env) == []
    remove_run(run)
    assert not os.path.exists(run.path)


def test_a_run_open_to_others_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    run, lock = create_run(str(tmp_path / "ws"), "{}", backend="namespace", environ=env)
    lock.release()
    os.chmod(run.path, 0o770)  # someone else could edit the change set before apply
    with pytest.raises(StagingError, match="not a staging directory of yours"):
        load_run(run.path)
    assert list_runs(None, env) == []
    os.chmod(run.path, 0o700)  # control
    assert load_run(run.path) == run


def test_a_staging_root_open_to_others_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    root = tmp_path / "state" / "capgate" / "staging"
    root.mkdir(parents=True, mode=0o777)
    os.chmod(root, 0o777)
    with pytest.raises(StagingError, match="mode 0700"):
        create_run(str(tmp_path / "ws"), "{}", backend="namespace", environ=env)
    os.chmod(root, 0o700)  # control
    create_run(str(tmp_path / "ws"), "{}", backend="namespace", environ=env)[1].release()


def test_a_running_run_cannot_be_removed(tmp_path: Path) -> None:
    run, lock = create_run(str(tmp_path / "ws"), "{}", backend="namespace", environ=_env(tmp_path))
    with pytest.raises(StagingError, match="still going"):
        remove_run(run)
    lock.release()
    remove_run(run)  # control


def test_run_ids_and_paths_are_told_apart() -> None:
    assert split_run_id(["20261206T050320Z-496c89", "src/"]) == ("20261206T050320Z-496c89", ["src/"])
    assert split_run_id(["src/", "README.md"]) == (None, ["src/", "README.md"])
    assert split_run_id([]) == (None, [])


def test_a_policy_that_does_not_read_the_whole_workspace_is_not_staged(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    policy = capgate.load_policy(None, workspace=str(ws))
    staged = launcher._staged_policy(policy)
    assert str(ws) in staged.filesystem.write and staged.filesystem.deny_write == policy.filesystem.deny_write
    (ws / "p.json").write_text('{"filesystem": {"read": ["src"]}}')
    narrow = capgate.load_policy(str(ws / "p.json"), workspace=str(ws))
    with pytest.raises(launcher.UsageError, match="not a read root"):
        launcher._staged_policy(narrow)
