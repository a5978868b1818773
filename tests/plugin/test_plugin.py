"""The tool-author plugin, driven through pytester like a user's own test run."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


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
