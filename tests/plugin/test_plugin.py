"""The tool-author plugin, driven through pytester like a user's own test run."""

from __future__ import annotations

import subprocess
import sys
from types import FunctionType, ModuleType

import pytest

pytest_plugins = ["pytester"]


def _capgate_modules_at_startup() -> frozenset[str]:
    """The capgate modules a fresh pytest process holds before its first test (the plugin's)."""
    code = "import sys, capgate.testing.plugin; print(*(m for m in sys.modules if m.startswith('capgate')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return frozenset(out.stdout.split())


@pytest.fixture
def lazy_capgate_unloaded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unload what capgate loads lazily (``capgate.fs``, the policy loader), as in a fresh pytest
    process, whatever this one ran before: the in-process runs of the test then import it
    themselves. Put back afterwards (after pytester's own restore of ``sys.modules``)."""
    startup = _capgate_modules_at_startup()

    def lazy(name: object) -> bool:
        return isinstance(name, str) and name.startswith("capgate.") and name not in startup

    for name in [n for n in sys.modules if lazy(n)]:
        monkeypatch.delitem(sys.modules, name)
    for name in startup:
        module = sys.modules[name]
        for attr, value in list(vars(module).items()):
            if (isinstance(value, ModuleType) and lazy(value.__name__)) or (
                isinstance(value, FunctionType) and lazy(value.__module__)
            ):
                monkeypatch.delattr(module, attr)


def test_corpus_runner_flags_a_leaky_tool_and_passes_a_gated_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        from capgate import fs
        from capgate.testing import CANARY, run_attack_corpus

        def leaky_tool(path):
            # a tool that ignores the gate: reads with plain open()
            p = os.path.expanduser(path) if path.startswith("~") else path
            if not os.path.isabs(p):
                p = os.path.join(os.environ["WS"], p)
            with open(p) as fh:
                return fh.read()

        def gated_tool(path):
            return fs.read_text(path)

        def test_gated(capgate_gate, capgate_workspace, monkeypatch):
            assert run_attack_corpus(gated_tool, kinds=["paths"]) == []

        def test_leaky(capgate_gate, capgate_workspace, monkeypatch):
            monkeypatch.setenv("WS", str(capgate_workspace))
            findings = run_attack_corpus(leaky_tool, kinds=["paths"])
            leaked = [f for f in findings if f.outcome == "leaked"]
            assert len(leaked) >= 5, findings
            assert all(CANARY in f.detail for f in leaked)
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_policy_marker_and_assert_denied(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from capgate import fs
        from capgate.testing import assert_denied

        @pytest.mark.capgate_policy({"filesystem": {"write": ["src"]}})
        def test_marker_grants_write(capgate_gate, capgate_workspace):
            fs.write_text("src/new.py", "x = 1\\n")
            assert (capgate_workspace / "src" / "new.py").read_text() == "x = 1\\n"

        def test_default_denies(capgate_gate):
            err = assert_denied(fs.write_text, "src/new.py", "x", op="fs.write")
            assert err.rule == "filesystem.write"

        def test_assert_denied_fails_when_allowed(capgate_gate):
            with pytest.raises(AssertionError, match="not denied"):
                assert_denied(fs.read_text, "src/app.py")
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fast_fs_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        from capgate import fs
        from capgate.testing import assert_denied

        def test_fast(capgate_fast_fs):
            assert fs.read_text("src/app.py") == "print('hello')\\n"
            assert_denied(fs.read_text, "~/.ssh/id_rsa")
            fs.write_text("output/x.txt", "hi")
            assert os.path.exists("/work/ws/output/x.txt")  # on the fake filesystem
            assert_denied(fs.write_text, "src/app.py", "x")
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


_REAL_FS_TESTS = """
from capgate import fs

def test_real(capgate_gate, capgate_workspace):
    assert fs.read_text("src/app.py") == "print('hello')\\n"
"""

_FAST_FS_TESTS = """
import os
from capgate import fs

def test_fast(capgate_fast_fs):
    assert fs.read_text("src/app.py") == "print('hello')\\n"
    fs.write_text("output/x.txt", "hi")
    assert os.path.exists("/work/ws/output/x.txt")  # on the fake filesystem
"""


def test_fast_fs_after_a_real_fs_run_in_the_same_process(
    pytester: pytest.Pytester, lazy_capgate_unloaded: None
) -> None:
    # The first run imports capgate.fs and the policy loader and drops them from sys.modules
    # when it ends, while capgate.fs / capgate.load_policy still lead to them.
    pytester.makepyfile(test_real_first=_REAL_FS_TESTS)
    pytester.runpytest("-q", "-p", "no:cacheprovider", "test_real_first.py").assert_outcomes(passed=1)
    pytester.makepyfile(test_fast_then=_FAST_FS_TESTS)
    pytester.runpytest("-q", "-p", "no:cacheprovider", "test_fast_then.py").assert_outcomes(passed=1)


def test_fast_fs_and_real_fs_tests_mix_in_one_session(pytester: pytest.Pytester, lazy_capgate_unloaded: None) -> None:
    # A tool author's suite: capgate modules first imported under pyfakefs (the policy loader
    # in the fixture, capgate.fs in the test) must not leak its fake os into the real-fs test.
    pytester.makepyfile(
        """
        import os

        def test_1_fast(capgate_fast_fs):
            from capgate import fs
            fs.write_text("output/x.txt", "hi")
            assert os.path.exists("/work/ws/output/x.txt")

        def test_2_real(capgate_gate, capgate_workspace):
            from capgate import fs
            assert fs.read_text("src/app.py") == "print('hello')\\n"
            assert not os.path.exists("/work/ws/output/x.txt")

        def test_3_fast(capgate_fast_fs):
            from capgate import fs
            assert fs.read_text("src/app.py") == "print('hello')\\n"
        """
    )
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_findings_read_as_a_table_in_the_assertion_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pathlib import Path

        from capgate.testing import run_attack_corpus

        def test_leaky(capgate_gate, capgate_workspace):
            def leaky(path):
                return Path(path).read_text() if Path(path).is_file() else ""
            assert run_attack_corpus(leaky, kinds=["paths"]) == []
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the tool let hostile inputs through:*", "*kind*input*outcome*what came back*",
                                 "*paths*leaked*capgate-canary*"])


def test_the_corpus_runner_refuses_unknown_kinds_and_no_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        from capgate.testing import Findings, run_attack_corpus

        def test_unknown_kind(capgate_gate):
            with pytest.raises(ValueError, match="the kinds are paths, net, shell"):
                run_attack_corpus(print, kinds=["pathz"])

        def test_no_gate():
            with pytest.raises(RuntimeError, match="needs an active gate"):
                run_attack_corpus(print, kinds=["paths"])

        def test_gated_control(capgate_gate):
            from capgate import fs
            found = run_attack_corpus(fs.read_text, kinds=["paths"])
            assert isinstance(found, Findings) and found.leaked == [] and found.allowed == []
        """
    )
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_a_marker_with_a_bad_policy_shows_the_policy_error_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.capgate_policy({"network": {"enabled": "yes"}})
        def test_bad(capgate_gate):
            pass

        @pytest.mark.capgate_policy({"network": {"enabled": True}})
        def test_good(capgate_gate):
            assert capgate_gate.policy.network.enabled
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*capgate_policy marker: invalid policy: network.enabled: must be true or false*"])
    assert "Traceback" not in result.stdout.str() and "site-packages" not in result.stdout.str()


def test_fixtures_have_docstrings() -> None:
    from capgate.testing import plugin

    for name in ("capgate_workspace", "capgate_gate", "capgate_fast_fs"):
        fixture = getattr(plugin, name)
        function = getattr(fixture, "__wrapped__", None) or getattr(fixture, "_fixture_function", None) or fixture
        assert (function.__doc__ or "").strip(), name


def test_kinds_that_make_no_sense_for_the_tools_argument_are_not_findings(pytester: pytest.Pytester) -> None:
    """Issue 14: URLs and command lines handed to a file reader are missing files, not attacks
    on it. The harness skips such kinds when it knows what the tool takes — ``argument=`` or a
    ``Path`` annotation — and says so; it never guesses from a ``str`` (a wrong guess would
    hide real findings), and a run where every kind would be skipped is refused."""
    pytester.makepyfile(
        """
        from pathlib import Path

        import pytest

        from capgate import fs
        from capgate.testing import run_attack_corpus

        def read_str(path):
            return fs.read_text(path)

        def read_path(path: Path) -> str:
            return fs.read_text(str(path))

        ALL = ["paths", "net", "shell"]

        def test_unknown_argument_runs_every_kind(capgate_gate):
            # the control: nothing says what read_str takes, so the URLs and command lines are
            # fed to it, and fail as files do (errors, never leaks)
            found = run_attack_corpus(read_str, kinds=ALL)
            assert found.errors and {f.kind for f in found} <= {"net", "shell"} and not found.leaked
            assert found.skipped == {}

        def test_explicit_argument_skips_the_other_kinds(capgate_gate):
            found = run_attack_corpus(read_str, kinds=ALL, argument="path")
            assert found == [] and set(found.skipped) == {"net", "shell"}
            assert "kind net skipped: the tool takes a path" in repr(found)

        def test_a_path_annotation_says_it(capgate_gate):
            found = run_attack_corpus(read_path, kinds=ALL)
            assert found == [] and set(found.skipped) == {"net", "shell"}

        def test_skipping_never_hides_the_kind_that_applies(capgate_gate, capgate_workspace):
            def leaky(path: Path) -> str:
                return Path(path).read_text() if Path(path).is_file() else ""
            found = run_attack_corpus(leaky, kinds=ALL)
            assert found.leaked and {f.kind for f in found} == {"paths"}

        def test_nothing_left_to_run_is_refused(capgate_gate):
            with pytest.raises(ValueError, match="none of the kinds"):
                run_attack_corpus(read_path, kinds=["net"])
            with pytest.raises(ValueError, match="unknown argument"):
                run_attack_corpus(read_str, argument="file")

        def test_the_default_kinds_follow_the_argument(capgate_gate):
            found = run_attack_corpus(read_str, argument="url")  # (the net corpus: URLs, as missing files)
            assert found.skipped == {} and found and {f.kind for f in found} == {"net"}
        """
    )
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=6)
