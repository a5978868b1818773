"""Gated filesystem cost, as ratios against the raw operation in the same run.

* ``fs.read_bytes`` of a 4 KiB workspace file vs ``open().read()``, with the default deny
  list plus 100 extra patterns (target: at most 2x);
* warm ``gate.check("fs.read", …)`` vs ``os.path.realpath`` of the same path (target: 2x);
* policy load time (defaults + a user file with 100 deny patterns).

Run: ``.venv/bin/python benchmarks/bench_fs.py``; prints one JSON line.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleaved, report

import capgate
from capgate import fs
from capgate.audit import AuditLog


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        (ws / "src" / "pkg").mkdir(parents=True)
        target = ws / "src" / "pkg" / "module.py"
        target.write_bytes(os.urandom(4096))
        extra = [f"generated/secret-{i}/*.key" if i % 2 else f"*.secret{i}" for i in range(100)]
        policy_file = Path(tmp) / "agent-permissions.json"
        policy_file.write_text(json.dumps({"version": 1, "filesystem": {"denyRead": extra}}))

        start = time.perf_counter()
        for _ in range(50):
            policy = capgate.load_policy(policy_file, workspace=ws)
        load_ms = (time.perf_counter() - start) / 50 * 1e3

        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO(), level="warning"))
        path = str(target)
        rel = "src/pkg/module.py"

        def raw_read() -> bytes:
            with open(path, "rb") as fh:
                return fh.read()

        with gate:
            assert fs.read_bytes(rel) == raw_read()
            reads = interleaved({"raw": raw_read, "gated": lambda: fs.read_bytes(rel)}, n=2000)
            checks = interleaved({"realpath": lambda: os.path.realpath(path),
                                  "check": lambda: gate.check("fs.read", path)}, n=2000)
    report(
        "fs",
        n=2000,
        deny_patterns=len(policy.filesystem.deny_read),
        raw_read_us=reads["raw"]["median_us"],
        gated_read_us=reads["gated"]["median_us"],
        gated_read_p95_us=reads["gated"]["p95_us"],
        read_ratio=round(reads["gated"]["median_us"] / reads["raw"]["median_us"], 2),
        realpath_us=checks["realpath"]["median_us"],
        check_us=checks["check"]["median_us"],
        check_ratio=round(checks["check"]["median_us"] / checks["realpath"]["median_us"], 2),
        policy_load_ms=round(load_ms, 2),
        mechanism=fs.MECHANISM,
    )


if __name__ == "__main__":
    main()
