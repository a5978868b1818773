"""Limits bind on real children: CPU, memory, file size, output flood, fork bomb, setsid escape.

All bounded: small caps, short timeouts; every test asserts nothing of the run is left alive.
"""

from __future__ import annotations

import resource
import signal
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from capgate import proc
from tests.attacks._proc_helpers import PY, alive, no_process_with

pytestmark = pytest.mark.timeout(60)

LIMITS = {"cpuSeconds": 1, "memoryMb": 256, "maxFileSizeMb": 5, "maxProcesses": 16,
          "wallTimeSeconds": 20, "maxCapturedOutputMb": 1}


@pytest.fixture
def limited(make_gate):  # type: ignore[no-untyped-def]
    gate = make_gate({"process": {"allowedCommands": [PY]}, "limits": LIMITS})
    with gate:
        yield gate


def py(code: str, *args: str, **kw: object):  # type: ignore[no-untyped-def]
    return proc.run([PY, "-c", textwrap.dedent(code), *args], **kw)  # type: ignore[arg-type]


def test_cpu_spin_is_stopped_by_cpu_seconds(limited) -> None:  # type: ignore[no-untyped-def]
    token = uuid.uuid4().hex
    result = py("while True: pass", token, timeout=15)
    assert result.returncode in (-signal.SIGXCPU, -signal.SIGKILL)
    assert "cpuSeconds" in result.limits_fired and not result.timed_out
    assert no_process_with(token)


def test_two_gigabytes_under_256_mb_fails(limited) -> None:  # type: ignore[no-untyped-def]
    result = py("b = bytearray(2 * 1024**3); print('allocated')")
    assert result.returncode != 0 and b"allocated" not in result.stdout
    assert b"MemoryError" in result.stderr
    control = py("b = bytearray(50 * 1024**2); print('allocated')")
    assert control.returncode == 0 and control.stdout == b"allocated\n"


def test_fifty_megabyte_write_under_five_mb_cap(limited, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    code = """
        import os, sys
        path = os.path.join(os.environ['TMPDIR'], 'big')
        try:
            with open(path, 'wb') as fh:
                for _ in range(50):
                    fh.write(b'x' * 1024 * 1024)
                    fh.flush()
            print('wrote all')
        except OSError as exc:
            print('refused', exc.errno, os.path.getsize(path))
    """
    result = py(code)
    out = result.stdout.decode()
    assert "wrote all" not in out and out.startswith("refused 27"), out  # EFBIG
    assert int(out.split()[2]) <= 5 * 1024 * 1024
    control = py("import os; open(os.path.join(os.environ['TMPDIR'], 'f'), 'wb').write(b'x' * 1024 * 1024)")
    assert control.returncode == 0, control.stderr


def test_output_flood_is_capped_and_parent_memory_bounded(limited) -> None:  # type: ignore[no-untyped-def]
    code = """
        import sys
        chunk = b'A' * (1024 * 1024)
        for _ in range(100):
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = py(code, timeout=15)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.returncode == 0
    assert len(result.stdout) == 1024 * 1024 and result.stdout_truncated and result.truncated
    assert (after - before) < 32 * 1024, f"parent grew by {after - before} KiB"  # ru_maxrss is KiB
    small = py("print('x' * 10)")
    assert small.stdout == b"x" * 10 + b"\n" and not small.truncated


def test_fork_bomb_is_bounded_and_cleaned_up(limited) -> None:  # type: ignore[no-untyped-def]
    token = uuid.uuid4().hex
    code = """
        import os, time
        refused = 0
        for _ in range(400):
            try:
                os.fork()
            except OSError:
                refused += 1
            time.sleep(0.005)
        time.sleep(60)
    """
    result = py(code, token, timeout=3)
    assert result.timed_out and "maxProcesses" in result.limits_fired
    assert no_process_with(token)


def test_setsid_double_fork_is_dead_right_after_timeout(limited, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    token = uuid.uuid4().hex
    pidfile = workspace / "output" / f"{token}.pid"
    code = """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open(sys.argv[2], 'w').write(str(os.getpid()))
                time.sleep(120)
            os._exit(0)
        time.sleep(120)
    """
    start = time.monotonic()
    result = py(code, token, str(pidfile), timeout=1.5)
    assert result.timed_out and result.limits_fired == ("wallTimeSeconds",)
    assert time.monotonic() - start < 10
    grandchild = int(pidfile.read_text())
    assert not alive(grandchild)
    assert no_process_with(token)


def test_daemon_left_by_a_finished_child_is_killed(limited, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    token = uuid.uuid4().hex
    pidfile = workspace / "output" / f"{token}.pid"
    code = """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.close(1); os.close(2)
                open(sys.argv[2], 'w').write(str(os.getpid()))
                time.sleep(120)
            os._exit(0)
        os.wait()
        while not os.path.exists(sys.argv[2]) or not open(sys.argv[2]).read():
            time.sleep(0.01)
        print('parent done')
    """
    result = py(code, token, str(pidfile), timeout=10)
    assert result.returncode == 0 and result.stdout == b"parent done\n" and not result.timed_out
    assert not alive(int(pidfile.read_text()))
    assert no_process_with(token)


def test_wall_time_from_policy_bounds_a_run_without_timeout(make_gate) -> None:  # type: ignore[no-untyped-def]
    gate = make_gate({"process": {"allowedCommands": [PY]}, "limits": {**LIMITS, "wallTimeSeconds": 1}})
    token = uuid.uuid4().hex
    with gate:
        result = py("import time; time.sleep(30)", token)
        assert result.timed_out and result.returncode == -signal.SIGKILL
        assert py("print(1)", timeout=100).stdout == b"1\n"  # a larger timeout never beats the policy
    assert no_process_with(token)
