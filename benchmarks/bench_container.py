"""The container backend's start-up against the runtime's own, in one run:

``capgate run --backend container --runtime R -- true`` against a plain ``R run --rm`` of the
same image (``/usr/bin/true``; podman also gets ``--runtime runc`` and the explicit ulimits it
needs here) and against the same plus the isolation flags every capgate run asks for
(``--network=none --read-only --cap-drop=ALL --security-opt=no-new-privileges``: the
runtime's own cost of them), interleaved so machine noise hits all alike, for each runtime
that answers (target: at most +150 ms), and ``-- python3 -c pass`` (the gate booting again inside).
For the README's table of all backends side by side, the soft and namespace backends' ``-- true``
are timed in the same rounds.

    .venv/bin/python benchmarks/bench_container.py [rounds]

Builds the default image (``capgate image build``) for a runtime that lacks it. Prints one
JSON line.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import report


def _time(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def _runtimes() -> dict[str, tuple[str, str]]:
    from capgate.container_shim.build import build_image, built_image, find_runtime

    found = {}
    for runtime in ("podman", "docker"):
        exe = find_runtime(runtime)
        if exe is None:
            continue
        if subprocess.run([exe, "version"], capture_output=True, timeout=60).returncode != 0:
            continue
        image = built_image(runtime) or build_image(runtime)
        found[runtime] = (exe, image)
    return found


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    import compileall

    import capgate

    compileall.compile_dir(os.path.dirname(capgate.__file__), quiet=1)
    compileall.compile_dir(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                        "container_shim"), quiet=1)
    runtimes = _runtimes()
    with tempfile.TemporaryDirectory() as tmp:
        ws = os.path.join(tmp, "ws")
        os.makedirs(os.path.join(ws, "output"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "AGENT_IN"))}
        capgate = [sys.executable, "-m", "capgate", "run", "-q", "--workspace", ws]
        cases: dict[str, list[str]] = {
            "soft": [*capgate, "--backend", "soft", "--", "true"],
            "namespace": [*capgate, "--backend", "namespace", "--", "true"],
        }
        for runtime, (exe, image) in runtimes.items():
            plain = [exe, "run", "--rm"]
            if runtime == "podman":
                plain += ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
            cases[f"{runtime}_plain"] = [*plain, image, "/usr/bin/true"]
            # --network=none alone: on a daemon without a default bridge (CI's), a plain run sets up no network
            cases[f"{runtime}_no_network"] = [*plain, "--network=none", image, "/usr/bin/true"]
            # the runtime's own cost of the isolation every capgate run asks for
            cases[f"{runtime}_isolated"] = [*plain, "--network=none", "--read-only", "--cap-drop=ALL",
                                            "--security-opt=no-new-privileges", image, "/usr/bin/true"]
            cases[f"{runtime}_capgate"] = [*capgate, "--backend", "container", "--runtime", runtime, "--", "true"]
            # a Python child: the gate boots again inside (the image's bytecode must be valid there)
            cases[f"{runtime}_capgate_python"] = [*capgate, "--backend", "container", "--runtime", runtime, "--",
                                                  "python3", "-c", "pass"]
        for argv in cases.values():  # warm: page cache, image layers, the namespace probe
            _time(argv, env, ws)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, argv in cases.items():
                samples[name].append(_time(argv, env, ws))
    median = {name: round(statistics.median(v) * 1e3, 1) for name, v in samples.items()}
    fields: dict[str, object] = {"rounds": rounds, "median_ms": median}
    for runtime in runtimes:
        fields[f"{runtime}_over_plain_ms"] = round(median[f"{runtime}_capgate"] - median[f"{runtime}_plain"], 1)
        fields[f"{runtime}_over_isolated_ms"] = round(median[f"{runtime}_capgate"] - median[f"{runtime}_isolated"], 1)
    report("container_startup", **fields)


if __name__ == "__main__":
    main()
