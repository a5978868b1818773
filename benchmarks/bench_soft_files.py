"""A file-heavy honest workload inside and outside the soft sandbox: open and read 2,000
small files. The same script runs under ``capgate run --backend soft`` and bare; it times its
own loop (after a warm-up pass), so interpreter start-up is not counted. Target: at most 1.5x,
also with 1,000 extra deny patterns (issue 15) — half ``**/nameN/**``, half ``*.extN``, as in
``bench_fs.py``, in a user policy file passed with ``--policy``.

    .venv/bin/python benchmarks/bench_soft_files.py [files] [extra deny patterns]

Prints one JSON line: median/p95 per file read in microseconds, both ways, and the ratio.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

WORKLOAD = r'''
import json, os, statistics, sys, time
names = sorted(os.listdir("data"))
def once():
    out = []
    for name in names:
        t = time.perf_counter()
        with open(os.path.join("data", name), "rb") as fh:
            fh.read()
        out.append(time.perf_counter() - t)
    return out
once()  # warm-up
samples = []
for _ in range(5):
    samples.extend(once())
samples.sort()
print(json.dumps({"median": statistics.median(samples), "p95": samples[int(0.95 * len(samples)) - 1],
                  "n": len(names)}))
'''


ROUNDS = 5


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    patterns = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    with tempfile.TemporaryDirectory() as tmp:
        ws = os.path.join(tmp, "ws")
        home = os.path.join(tmp, "home")
        os.makedirs(os.path.join(ws, "data"))
        os.makedirs(os.path.join(ws, "output"))
        os.makedirs(home)
        for i in range(files):
            with open(os.path.join(ws, "data", f"f{i:05d}.txt"), "w") as fh:
                fh.write(f"small file {i}\n" * 8)
        script = os.path.join(ws, "workload.py")
        with open(script, "w") as fh:
            fh.write(WORKLOAD)
        policy: list[str] = []
        if patterns:
            policy_file = os.path.join(tmp, "policy.json")  # (outside the workspace)
            with open(policy_file, "w") as fh:
                json.dump({"version": 1, "filesystem": {"denyRead": [
                    f"**/name{i}/**" if i % 2 else f"*.ext{i}" for i in range(patterns)]}}, fh)
            policy = ["--policy", policy_file]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "AGENT_IN"))}
        env["HOME"] = home
        raws, gateds = [], []
        for _ in range(ROUNDS):  # interleaved: this machine's speed drifts between runs
            raw = subprocess.run([sys.executable, script], cwd=ws, env=env, capture_output=True, text=True,
                                 check=True)
            gated = subprocess.run([sys.executable, "-m", "capgate", "run", "--backend", "soft", "--workspace", ws,
                                    *policy, "--audit-log", os.path.join(tmp, "audit.jsonl"), "--", sys.executable,
                                    script],
                                   cwd=ws, env=env, capture_output=True, text=True, check=True)
            raws.append(json.loads(raw.stdout))
            gateds.append(json.loads(gated.stdout))
    r = {k: statistics.median(x[k] for x in raws) for k in ("median", "p95")}
    g = {k: statistics.median(x[k] for x in gateds) for k in ("median", "p95")}
    g["n"] = gateds[0]["n"]
    print(json.dumps({
        "bench": "soft_files", "python": platform.python_version(), "kernel": platform.release(),
        "cpu": platform.machine(), "n": g["n"], "extra_patterns": patterns,
        "raw_median_us": round(r["median"] * 1e6, 2), "raw_p95_us": round(r["p95"] * 1e6, 2),
        "median_us": round(g["median"] * 1e6, 2), "p95_us": round(g["p95"] * 1e6, 2),
        "ratio": round(g["median"] / r["median"], 2), "target_ratio": 1.5,
    }))


if __name__ == "__main__":
    main()
