"""The namespace backend's costs, against the soft backend and bare, in one run:

* start-up: ``capgate run --backend namespace -- true`` and ``-- python -c pass`` against
  ``--backend soft`` and bare, interleaved (target: at most +20 ms over soft);
* the view's scan of a 50,000-file workspace (the walk that finds what to cover: deny-listed
  names, hard links, sockets), alone;
* the file-heavy workload of ``bench_soft_files.py`` under both backends (open and read 2,000
  small files; the namespace ratio must not be worse than soft's).

    .venv/bin/python benchmarks/bench_namespace.py [n]

Prints one JSON line.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_soft_files import WORKLOAD  # the same workload script


def _time(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _scan_ms(tmp: str) -> tuple[int, float]:
    import capgate
    from capgate.audit import AuditLog
    from capgate.backends.namespace_view import scan
    from capgate.gate import Gate

    ws = os.path.join(tmp, "big")
    for d in range(500):
        directory = os.path.join(ws, f"pkg{d // 50:03d}", f"mod{d:03d}")
        os.makedirs(directory)
        for f in range(100):
            open(os.path.join(directory, f"f{f:03d}.py"), "w").close()
    os.makedirs(os.path.join(ws, "output"))
    policy = capgate.load_policy(None, workspace=ws)
    times = []
    entries = 0
    for _ in range(5):
        rules = Gate(policy, audit=AuditLog(None, level="error")).path_rules
        start = time.perf_counter()
        entries = scan(rules, policy.filesystem.read, policy.filesystem.write).entries
        times.append(time.perf_counter() - start)
    return entries, statistics.median(times) * 1e3


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    import capgate

    compileall.compile_dir(os.path.dirname(capgate.__file__), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = os.path.join(tmp, "ws")
        home = os.path.join(tmp, "home")
        os.makedirs(os.path.join(ws, "output"))
        os.makedirs(os.path.join(ws, "data"))
        os.makedirs(home)
        for i in range(2000):
            with open(os.path.join(ws, "data", f"f{i:05d}.txt"), "w") as fh:
                fh.write(f"small file {i}\n" * 8)
        script = os.path.join(ws, "workload.py")
        with open(script, "w") as fh:
            fh.write(WORKLOAD)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "AGENT_IN"))}
        env["HOME"] = home

        def under(backend: str, command: list[str]) -> list[str]:
            return [sys.executable, "-m", "capgate", "run", "--backend", backend, "--workspace", ws,
                    "--audit-log", os.path.join(tmp, "audit.jsonl"), "--", *command]

        commands = {"true": ["/bin/true"], "python": [sys.executable, "-c", "pass"]}
        samples: dict[str, list[float]] = {}
        for _ in range(2):  # warm-up
            for cmd in commands.values():
                for backend in ("soft", "namespace"):
                    _time(under(backend, cmd), env, ws)
        for _ in range(n):  # interleaved: this machine's speed drifts
            for name, cmd in commands.items():
                samples.setdefault(f"bare_{name}", []).append(_time(cmd, env, ws))
                for backend in ("soft", "namespace"):
                    samples.setdefault(f"{backend}_{name}", []).append(_time(under(backend, cmd), env, ws))
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        files: dict[str, list[float]] = {"raw": [], "soft": [], "namespace": []}
        for _ in range(3):
            out = subprocess.run([sys.executable, script], cwd=ws, env=env, capture_output=True, text=True, check=True)
            files["raw"].append(json.loads(out.stdout)["median"])
            for backend in ("soft", "namespace"):
                out = subprocess.run(under(backend, [sys.executable, script]), cwd=ws, env=env, capture_output=True,
                                     text=True, check=True)
                files[backend].append(json.loads(out.stdout)["median"])
        per_file = {k: statistics.median(v) * 1e6 for k, v in files.items()}
        entries, scan_ms = _scan_ms(tmp)
    print(json.dumps({
        "bench": "namespace", "python": platform.python_version(), "kernel": platform.release(),
        "cpu": platform.machine(), "n": n,
        **{f"{k}_ms": round(v, 1) for k, v in sorted(med.items())},
        "namespace_over_soft_true_ms": round(med["namespace_true"] - med["soft_true"], 1),
        "namespace_over_soft_python_ms": round(med["namespace_python"] - med["soft_python"], 1),
        "files_raw_us": round(per_file["raw"], 2), "files_soft_us": round(per_file["soft"], 2),
        "files_namespace_us": round(per_file["namespace"], 2),
        "files_soft_ratio": round(per_file["soft"] / per_file["raw"], 2),
        "files_namespace_ratio": round(per_file["namespace"] / per_file["raw"], 2),
        "scan_entries": entries, "scan_ms": round(scan_ms, 1),
    }))


if __name__ == "__main__":
    main()
