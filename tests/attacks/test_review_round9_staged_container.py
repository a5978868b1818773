"""Review round 9 against staged container runs (``container_argv.Overlay``): the overlay's
paths go to the kernel inside a mount option string, where overlayfs takes a backslash as an
escape (``lowerdir=/p/ws\\1`` mounts ``/p/ws1``). Real podman and Docker, a real overlay."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._container_helpers import RUNTIMES, build_test_image
from tests._staging_helpers import build_staged_probe, staged
from tests.attacks.test_container_backend import clean  # noqa: F401  (a fixture)
from tests.conftest import SECRET

pytestmark = pytest.mark.container


@pytest.fixture(scope="session", params=RUNTIMES)
def image(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    runtime = str(request.param)
    for name in build_test_image(runtime):
        yield runtime, name


@pytest.fixture
def backend(image: tuple[str, str], clean: None) -> tuple[str, ...]:  # noqa: F811
    return ("--backend", "container", "--runtime", image[0], "--image", image[1])


def _world(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """The workspace ``p/<name>`` (its own file, the probe) beside ``p/ws1``, a directory no
    policy root holds, with a secret in a file of the same name."""
    ws = tmp_path / "p" / name
    ws.mkdir(parents=True)
    (ws / "f.txt").write_text("mine\n")
    other = tmp_path / "p" / "ws1"
    other.mkdir(exist_ok=True)
    (other / "f.txt").write_text(SECRET)
    probe = build_staged_probe(tmp_path)
    shutil.copy(probe, ws / "staged_probe")
    shutil.copy(probe, other / "staged_probe")  # (so that the command runs in either)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return ws, home, other


def test_a_backslash_in_the_workspace_path_does_not_mount_another_directory(tmp_path: Path,
                                                                             backend: tuple[str, ...]) -> None:
    """Finding 2: the workspace ``p/ws\\1`` became ``lowerdir=p/ws\\1``, which overlayfs reads
    as ``p/ws1``: the child saw (and, applied, would change against) another directory, one
    outside every read root. Such a path is refused before the run, as ``,`` and ``:`` are."""
    ws, home, other = _world(tmp_path, "ws\\1")
    done = staged(ws, home, [str(ws / "staged_probe"), "read", f"{ws}/f.txt"], backend=backend)
    assert SECRET not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.returncode != 0 and "\\\\" in done.stderr and "rename it" in done.stderr, done.stdout + done.stderr
    assert (other / "f.txt").read_text() == SECRET


@pytest.mark.parametrize("name", ["ws-1", "my ws", "a=b", "it's", "ws;1"])
def test_control_a_workspace_path_the_syntax_can_carry_is_staged(tmp_path: Path, backend: tuple[str, ...],
                                                                 name: str) -> None:
    """Control: spaces, ``=``, quotes and ``;`` pass podman's ``-v`` and Docker's CSV as they are."""
    ws, home, _other = _world(tmp_path, name)
    done = staged(ws, home, [str(ws / "staged_probe"), "read", f"{ws}/f.txt"], backend=backend)
    assert done.returncode == 0 and "read OK [mine ]" in done.stdout, done.stdout + done.stderr
