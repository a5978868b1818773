"""A ``str`` subclass is decided by its characters, never by its own methods.

The kernel (``open``, ``connect`` on a Unix socket) is given a ``str`` subclass's characters,
but a check written with ``in``, ``startswith`` or ``str()`` runs the subclass's overrides: a
hostile ``__contains__`` or ``__str__`` made the checker look at one path while the kernel
opened another. ``capgate.paths.coerce_path`` (the embedded API) and the soft sandbox's hooks
copy the characters into an exact ``str`` before any check (``fs._lexical``'s fast path is
covered in ``test_review_round6_api.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capgate._sys import landlock
from capgate.paths import coerce_path
from tests.integration._soft_helpers import PY, audit_lines, capgate_run, empty_home, source_workspace


class _Liar(str):
    """Says it is another path (``__str__``), contains nothing, starts with nothing."""

    def __str__(self) -> str:
        return "/tmp/innocent.txt"

    def __contains__(self, item: object) -> bool:
        return False

    def startswith(self, *args: object) -> bool:  # type: ignore[override]
        return False


class _Path:
    def __init__(self, text: str) -> None:
        self.text = text

    def __fspath__(self) -> str:
        return _Liar(self.text)


@pytest.mark.parametrize("target", [_Liar("/ws/../home/a\x00b"), _Path("/ws/../home/a\x00b")], ids=["str", "fspath"])
def test_coerce_path_returns_the_exact_characters(target: object) -> None:
    with pytest.raises(ValueError, match="NUL"):  # the subclass's "in" would have said no
        coerce_path(target)


@pytest.mark.parametrize("target", [_Liar("/ws/src/app.py"), _Path("/ws/src/app.py")], ids=["str", "fspath"])
def test_coerce_path_of_a_subclass_is_a_plain_str_with_its_characters(target: object) -> None:
    out = coerce_path(target)
    assert type(out) is str and out == "/ws/src/app.py"
    assert type(coerce_path("/ws/src/app.py")) is str  # control: the common case


@pytest.mark.timeout(120)
@pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock")
def test_soft_hooks_decide_a_str_subclass_by_its_characters(tmp_path: Path) -> None:
    ws = source_workspace(tmp_path)
    home = empty_home(tmp_path)
    (ws / ".env").write_text("SECRET=1\n")
    (ws / "src" / "probe.py").write_text(
        "import os\n"
        "class Liar(str):\n"
        "    def __str__(self): return os.path.abspath('src/app.py')\n"
        "    def __contains__(self, item): return False\n"
        "for p in ['src/app.py', Liar('src/app.py'), Liar('.env'), Liar(os.path.abspath('.env'))]:\n"
        "    try:\n"
        "        print(repr(str.__str__(p)), 'READ', repr(open(p).read()))\n"
        "    except PermissionError as e:\n"
        "        print(repr(str.__str__(p)), 'REFUSED', getattr(e, 'rule', '').split('[')[0])\n"
    )
    done = capgate_run(["run", "--backend", "soft", "--", PY, "src/probe.py"], home=home, cwd=ws)
    lines = [line for line in done.stdout.splitlines() if "READ" in line or "REFUSED" in line]
    env = os.path.realpath(ws / ".env")
    assert lines == [
        "'src/app.py' READ \"print('hi')\\n\"",  # control
        "'src/app.py' READ \"print('hi')\\n\"",  # control: a subclass works
        "'.env' REFUSED filesystem.denyRead",
        f"{env!r} REFUSED filesystem.denyRead",
    ], done.stdout + done.stderr
    denied = [e for e in audit_lines(home) if e.get("decision") == "deny" and e.get("op") == "fs.read"]
    assert [e["target"] for e in denied] == [env, env]
