"""Shared helpers for the benchmark scripts: timing loops and the one-line JSON report."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable


def measure(fn: Callable[[], object], *, n: int, warmup: int = 200, rounds: int = 7) -> dict[str, float]:
    """Per-call times in microseconds: median and p95 over ``rounds`` batches of ``n`` calls."""
    for _ in range(warmup):
        fn()
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        per_call.append((time.perf_counter() - start) / n * 1e6)
    per_call.sort()
    return {"median_us": round(statistics.median(per_call), 2),
            "p95_us": round(per_call[min(len(per_call) - 1, int(len(per_call) * 0.95))], 2)}


def interleaved(fns: dict[str, Callable[[], object]], *, n: int, rounds: int = 9) -> dict[str, dict[str, float]]:
    """Measure several functions in alternating batches, so machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(200):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {"median_us": round(statistics.median(values), 2),
                     "p95_us": round(values[min(len(values) - 1, int(len(values) * 0.95))], 2)}
    return out


def report(name: str, **fields: object) -> None:
    line = {
        "benchmark": name,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        **fields,
    }
    print(json.dumps(line))
    sys.stdout.flush()
