"""Start-up of capgate's backends next to a peer's sandbox, interleaved in one run:
``capgate run --backend namespace|soft -- true`` (and ``-- python -c pass``) against the
Codex CLI's ``codex sandbox -- true`` (Landlock + seccomp, no namespaces, no hooks).

The peer is installed outside the repository (never committed), e.g.
``cd /tmp/peers && npm install @openai/codex``; pass its path:

    .venv/bin/python benchmarks/bench_peers.py /tmp/peers/node_modules/.bin/codex [n]

Prints one JSON line (medians in ms); without the peer it says so and exits 0.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _time(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    codex = sys.argv[1] if len(sys.argv) > 1 else ""
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if not codex or not os.access(codex, os.X_OK):
        print(json.dumps({"bench": "peers", "skipped": "no codex CLI given (see the docstring)"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ws = os.path.join(tmp, "ws")
        os.makedirs(os.path.join(ws, "output"))
        py = sys.executable

        def capgate(backend: str, *cmd: str) -> list[str]:
            return [py, "-m", "capgate", "run", "--backend", backend, "--workspace", ws, "--", *cmd]

        runs = {
            "codex_true": [codex, "sandbox", "--", "/bin/true"],
            "namespace_true": capgate("namespace", "/bin/true"),
            "soft_true": capgate("soft", "/bin/true"),
            "codex_python": [codex, "sandbox", "--", py, "-c", "pass"],
            "namespace_python": capgate("namespace", py, "-c", "pass"),
            "soft_python": capgate("soft", py, "-c", "pass"),
        }
        for argv in runs.values():  # warm-up
            _time(argv, ws)
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(n):
            for name, argv in runs.items():
                samples[name].append(_time(argv, ws))
    print(json.dumps({"bench": "peers", "n": n,
                      **{f"{k}_ms": round(statistics.median(v), 1) for k, v in samples.items()}}))


if __name__ == "__main__":
    main()
