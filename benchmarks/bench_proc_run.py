"""proc.run(["true"]) against subprocess.run(["true"]) in the same run (target: ratio <= 1.5).

Plain script: python benchmarks/bench_proc_run.py [n]. Prints one JSON line.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleaved, report

import capgate
from capgate import proc
from capgate.audit import AuditLog


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        (ws / "output").mkdir(parents=True)
        policy_file = Path(tmp) / "policy.json"
        policy_file.write_text(json.dumps({"version": 1, "process": {"allowedCommands": ["true"]}}))
        policy = capgate.load_policy(policy_file, workspace=ws, allow_user_expansion=True)
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO(), level="warning"))
        with gate:
            results = interleaved(
                {
                    "subprocess": lambda: subprocess.run(["true"], capture_output=True),
                    "proc": lambda: proc.run(["true"]),
                },
                n=n,
                rounds=9,
            )
            containment = proc.run(["true"]).returncode == 0 and "cgroup"
    raw, gated = results["subprocess"], results["proc"]
    report(
        "proc_run_true",
        n=n,
        median_us=gated["median_us"],
        p95_us=gated["p95_us"],
        raw_median_us=raw["median_us"],
        raw_p95_us=raw["p95_us"],
        ratio=round(gated["median_us"] / raw["median_us"], 2),
        containment=containment,
    )


if __name__ == "__main__":
    main()
