"""Start-up of capgate.pyz against the installed capgate: ``capgate check fs.read /etc/passwd``
(a whole command: parse, load the policy, decide, print), both on this interpreter, same run.
The pyz's first run (unpacking into a fresh PEX_ROOT) is timed once, then warm runs.

    bash scripts/build.sh && .venv/bin/python benchmarks/bench_pyz_startup.py [n] [PYZ]

Prints one JSON line: the first run, and median/p95 of warm runs of both, in milliseconds, and
the warm ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    pyz = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "capgate.pyz")
    if not os.path.exists(pyz):
        raise SystemExit(f"{pyz} not found: run bash scripts/build.sh first")
    command = ["check", "fs.read", "/etc/passwd"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "PEX_", "SOFT_SANDBOX"))}
        env.update(HOME=tmp, PEX_ROOT=os.path.join(tmp, "pex"))
        installed = [sys.executable, "-m", "capgate", *command]
        packed = [sys.executable, "-I", pyz, *command]
        first = _time(packed, env)
        warm_installed, warm_packed = [], []
        for _ in range(n):  # interleaved: the same load for both
            warm_installed.append(_time(installed, env))
            warm_packed.append(_time(packed, env))

    def stats(xs: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(xs), 1), "p95": round(sorted(xs)[int(0.95 * (len(xs) - 1))], 1)}

    print(json.dumps({"n": n, "python": sys.version.split()[0], "pyz_first_run_ms": round(first, 1),
                      "installed_ms": stats(warm_installed), "pyz_ms": stats(warm_packed),
                      "warm_ratio": round(statistics.median(warm_packed) / statistics.median(warm_installed), 2)}))


if __name__ == "__main__":
    main()
