"""Start-up cost of the soft sandbox: ``capgate run --backend soft -- python -c pass`` against
``python -c pass``, same interpreter, same run. Target: at most +150 ms.

    .venv/bin/python benchmarks/bench_soft_startup.py [n]

Prints one JSON line: median/p95 of both, in microseconds, the difference and the ratio.

capgate is byte-compiled first, as a regular ``pip install`` leaves it: with
``PYTHONDONTWRITEBYTECODE=1`` (set on some machines, CI among them) an editable install is
otherwise recompiled from source on every start, which measures the compiler, not capgate.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def _time(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    import capgate

    compileall.compile_dir(os.path.dirname(capgate.__file__), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = os.path.join(tmp, "ws")
        home = os.path.join(tmp, "home")
        os.makedirs(os.path.join(ws, "output"))
        os.makedirs(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "AGENT_IN"))}
        env["HOME"] = home
        raw = [sys.executable, "-c", "pass"]
        gated = [sys.executable, "-m", "capgate", "run", "--backend", "soft", "--workspace", ws,
                 "--audit-log", os.path.join(tmp, "audit.jsonl"), "--", sys.executable, "-c", "pass"]
        for _ in range(3):  # warm-up: page cache, pyc files
            _time(raw, env, ws)
            _time(gated, env, ws)
        raw_t, gated_t = [], []
        for _ in range(n):
            raw_t.append(_time(raw, env, ws))
            gated_t.append(_time(gated, env, ws))

    def p95(xs: list[float]) -> float:
        return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]

    raw_med, gated_med = statistics.median(raw_t), statistics.median(gated_t)
    print(json.dumps({
        "bench": "soft_startup", "python": platform.python_version(), "kernel": platform.release(),
        "cpu": platform.machine(), "n": n,
        "raw_median_us": round(raw_med * 1e6), "raw_p95_us": round(p95(raw_t) * 1e6),
        "median_us": round(gated_med * 1e6), "p95_us": round(p95(gated_t) * 1e6),
        "added_ms": round((gated_med - raw_med) * 1e3, 1), "ratio": round(gated_med / raw_med, 2),
        "target_added_ms": 150,
    }))


if __name__ == "__main__":
    main()
