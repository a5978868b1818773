"""Staged writes (``capgate run --staged``), its three targets in one run:

* the file-heavy workload of ``bench_soft_files.py`` (open and read 2,000 small files), and
  its write twin (write 2,000 small files into ``output/``), under the namespace backend with
  ``--staged`` against without: per-file medians, and the whole ``capgate run`` wall time
  (start-up, the overlay mount, the end-of-run change list). Target: at most 1.2x;
* ``capgate changes`` of a run with 10,000 changed files: the change list in-process and the
  whole command. Target: under 1 s;
* ``apply`` of 1,000 small files (decided by the gate, temp + one syncfs + rename each, through
  the no-follow opening) against ``cp -r`` of the same files. Target: within 2x.

    .venv/bin/python benchmarks/bench_staged.py [rounds]

Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_soft_files import WORKLOAD  # the same read workload

WRITE_WORKLOAD = r'''
import json, os, statistics, time
def once(tag):
    out = []
    for i in range(2000):
        t = time.perf_counter()
        with open(os.path.join("output", f"{tag}-{i:05d}.txt"), "w") as fh:
            fh.write("small output line\n" * 8)
        out.append(time.perf_counter() - t)
    return out
once("warm")
samples = []
for r in range(3):
    samples.extend(once(f"r{r}"))
samples.sort()
print(json.dumps({"median": statistics.median(samples), "n": len(samples)}))
'''

MAKE_FILES = r'''
import os, sys
n = int(sys.argv[1])
os.makedirs("gen", exist_ok=True)
for i in range(n):
    d = os.path.join("gen", f"d{i // 100:03d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "w") as fh:
        fh.write(f"generated {i}\n" * 4)
'''


def _env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "AGENT_IN", "XDG_"))}
    env["HOME"] = home
    return env


def _capgate(ws: str, home: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capgate", *args], cwd=ws, env=_env(home), capture_output=True,
                          text=True, check=True)


def _run(ws: str, home: str, staged: bool, command: list[str]) -> tuple[float, str]:
    extra = ["--staged", "--on-exit", "discard"] if staged else []
    start = time.perf_counter()
    out = _capgate(ws, home, "run", "-q", "--backend", "namespace", *extra, "--workspace", ws, "--", *command)
    return time.perf_counter() - start, out.stdout


def _workloads(tmp: str, rounds: int) -> dict[str, float]:
    ws = os.path.join(tmp, "ws")
    home = os.path.join(tmp, "home")
    os.makedirs(os.path.join(ws, "data"))
    os.makedirs(os.path.join(ws, "output"))
    os.makedirs(home)
    for i in range(2000):
        with open(os.path.join(ws, "data", f"f{i:05d}.txt"), "w") as fh:
            fh.write(f"small file {i}\n" * 8)
    for name, text in (("read.py", WORKLOAD), ("write.py", WRITE_WORKLOAD)):
        with open(os.path.join(ws, name), "w") as fh:
            fh.write(text)
    per: dict[str, list[float]] = {}
    for r in range(rounds + 1):  # (the first round is a warm-up)
        for staged in (False, True):
            for kind in ("read", "write"):
                wall, out = _run(ws, home, staged, [sys.executable, os.path.join(ws, f"{kind}.py")])
                if not staged:
                    shutil.rmtree(os.path.join(ws, "output"))
                    os.makedirs(os.path.join(ws, "output"))
                if r == 0:
                    continue
                key = f"{kind}_{'staged' if staged else 'plain'}"
                per.setdefault(key + "_us", []).append(json.loads(out)["median"] * 1e6)
                per.setdefault(key + "_run_ms", []).append(wall * 1e3)
    med = {k: statistics.median(v) for k, v in per.items()}
    for kind in ("read", "write"):
        med[f"{kind}_file_ratio"] = med[f"{kind}_staged_us"] / med[f"{kind}_plain_us"]
        med[f"{kind}_run_ratio"] = med[f"{kind}_staged_run_ms"] / med[f"{kind}_plain_run_ms"]
    return med


def _staged_run_of(ws: str, home: str, n: int) -> str:
    with open(os.path.join(ws, "make.py"), "w") as fh:
        fh.write(MAKE_FILES)
    _capgate(ws, home, "run", "-q", "--backend", "namespace", "--staged", "--workspace", ws, "--", sys.executable,
             os.path.join(ws, "make.py"), str(n))
    data = json.loads(_capgate(ws, home, "changes", "--workspace", ws, "--json").stdout)
    assert len(data["changes"]) == n + (n + 99) // 100 + 1, len(data["changes"])
    return str(data["run"])


def _changes(tmp: str, rounds: int) -> dict[str, float]:
    from capgate.staging.changes import compute_changes
    from capgate.staging.store import find_run

    ws, home = os.path.join(tmp, "ws10k"), os.path.join(tmp, "home10k")
    os.makedirs(ws)
    os.makedirs(home)
    run_id = _staged_run_of(ws, home, 10_000)
    run = find_run(run_id, ws, _env(home))
    inproc, cli = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        found = compute_changes(run.upper, ws)
        inproc.append(time.perf_counter() - start)
        start = time.perf_counter()
        _capgate(ws, home, "changes", run_id, "--workspace", ws, "--json")
        cli.append(time.perf_counter() - start)
    return {"changes_entries": len(found), "changes_10k_ms": statistics.median(inproc) * 1e3,
            "changes_10k_cli_ms": statistics.median(cli) * 1e3}


def _apply(tmp: str, rounds: int) -> dict[str, float]:
    from capgate.audit import AuditLog
    from capgate.gate import Gate
    from capgate.policy import load_effective_policy
    from capgate.staging.apply import apply_changes
    from capgate.staging.store import find_run

    ws, home = os.path.join(tmp, "ws1k"), os.path.join(tmp, "home1k")
    os.makedirs(ws)
    os.makedirs(home)
    run = find_run(_staged_run_of(ws, home, 1000), ws, _env(home))
    target = os.path.join(tmp, "cp-target")
    applies, cps = [], []
    for r in range(rounds + 1):  # (the first round is a warm-up)
        shutil.rmtree(os.path.join(ws, "gen"), ignore_errors=True)
        gate = Gate(load_effective_policy(run.policy_file), audit=AuditLog(os.devnull))
        start = time.perf_counter()
        result = apply_changes(run, gate)
        applies.append(time.perf_counter() - start)
        assert result.ok and len(result.applied) == 1000 + 10 + 1, (result.refused, result.failed)
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(["cp", "-r", os.path.join(run.upper, "gen"), target], check=True)
        cps.append(time.perf_counter() - start)
        if r == 0:
            applies.clear()
            cps.clear()
    a, c = statistics.median(applies) * 1e3, statistics.median(cps) * 1e3
    return {"apply_1k_ms": a, "cp_1k_ms": c, "apply_over_cp": a / c}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as tmp:
        out = {**_workloads(tmp, rounds), **_changes(tmp, rounds), **_apply(tmp, rounds)}
    print(json.dumps({"bench": "staged", "python": platform.python_version(), "kernel": platform.release(),
                      "cpu": platform.machine(), "rounds": rounds,
                      **{k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}}))


if __name__ == "__main__":
    main()
