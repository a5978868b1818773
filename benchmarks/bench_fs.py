"""Gated filesystem cost, as ratios against the raw operation in the same run, by the number
of extra deny patterns (half ``**/nameN/**``, half ``*.extN``, on top of the defaults):

* ``fs.read_bytes`` of a 4 KiB file four directories deep vs ``open().read()`` (targets: at
  most 1.5x with 100 extra patterns, 2.0x with 1,000);
* warm ``gate.check("fs.read", …)`` vs ``os.path.realpath`` of the same path (target: 1.5x at
  1,000 patterns);
* cold ``gate.check`` of 2,000 paths in 2,000 new directories (nothing cached) vs their
  ``realpath`` — what a first visit costs;
* policy load time with that many patterns (target: 20 ms at 1,000). A policy file holds at
  most 64 KiB, so 10,000 patterns are built through ``merge`` directly, not read from a file.

Run: ``.venv/bin/python benchmarks/bench_fs.py [COUNT ...]`` (default: 0 10 100 1000 10000);
prints one JSON line per count.
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
from capgate.policy.load import default_policy
from capgate.policy.merge import merge
from capgate.policy.schema import PolicyFile


def extra_patterns(count: int) -> list[str]:
    return [f"**/name{i}/**" if i % 2 else f"*.ext{i}" for i in range(count)]


def build_policy(ws: Path, policy_file: Path, patterns: list[str]) -> capgate.Policy:
    if len(json.dumps(patterns)) < 60_000:
        policy_file.write_text(json.dumps({"filesystem": {"denyRead": patterns}}))
        return capgate.load_policy(policy_file, workspace=ws)
    user = PolicyFile.model_validate({"filesystem": {"denyRead": patterns}})
    return merge(default_policy(ws), user, allow_user_expansion=False, source=str(policy_file))


def run(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        (ws / "src" / "pkg" / "sub").mkdir(parents=True)
        target = ws / "src" / "pkg" / "sub" / "module.py"
        target.write_bytes(os.urandom(4096))
        patterns = extra_patterns(count)
        policy_file = Path(tmp) / "agent-permissions.json"
        build_policy(ws, policy_file, patterns)  # warm imports
        loads = []
        for _ in range(5):
            start = time.perf_counter()
            policy = build_policy(ws, policy_file, patterns)
            loads.append(time.perf_counter() - start)
        load_ms = sorted(loads)[2] * 1e3

        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO(), level="warning"))
        path = str(target)
        rel = "src/pkg/sub/module.py"

        def raw_read() -> bytes:
            with open(path, "rb") as fh:
                return fh.read()

        cold_paths = [f"{ws}/cold{i}/a/b/file{i}.py" for i in range(2000)]

        def cold(fn: object) -> float:
            start = time.perf_counter()
            for p in cold_paths:
                fn(p)  # type: ignore[operator]
            return (time.perf_counter() - start) / len(cold_paths) * 1e6

        with gate:
            assert fs.read_bytes(rel) == raw_read()
            reads = interleaved({"raw": raw_read, "gated": lambda: fs.read_bytes(rel)}, n=2000)
            checks = interleaved({"realpath": lambda: os.path.realpath(path),
                                  "check": lambda: gate.check("fs.read", path)}, n=2000)
            cold_realpath = cold(os.path.realpath)
            cold_check = cold(lambda p: gate.check("fs.read", p))
    report(
        "fs",
        extra_patterns=count,
        deny_patterns=len(policy.filesystem.deny_read),
        raw_read_us=reads["raw"]["median_us"],
        gated_read_us=reads["gated"]["median_us"],
        gated_read_p95_us=reads["gated"]["p95_us"],
        read_ratio=round(reads["gated"]["median_us"] / reads["raw"]["median_us"], 2),
        realpath_us=checks["realpath"]["median_us"],
        check_us=checks["check"]["median_us"],
        check_ratio=round(checks["check"]["median_us"] / checks["realpath"]["median_us"], 2),
        cold_check_us=round(cold_check, 2),
        cold_check_ratio=round(cold_check / cold_realpath, 2),
        policy_load_ms=round(load_ms, 2),
        mechanism=fs.MECHANISM,
    )


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [0, 10, 100, 1000, 10000]
    for count in counts:
        run(count)


if __name__ == "__main__":
    main()
