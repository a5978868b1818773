"""net.check of an allowed name (stub resolver) against the raw work it wraps.

The raw operation is what any careful client does anyway: call the resolver and parse its
answer with ``ipaddress``. ``net.check`` adds URL parsing, host normalization, the deny/allow
tables, address classification and the audit counter. Prints one JSON line.

    .venv/bin/python benchmarks/bench_net_check.py
"""

from __future__ import annotations

import io
import ipaddress
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import interleaved, report

import capgate
from capgate import net
from capgate.audit import AuditLog
from capgate.resolver import StaticResolver

N = 2000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        policy_file = Path(tmp) / "p.json"
        domains = ["api.example.com", "*.example.org", "files.example.net:8443"]
        domains += [f"host{i}.example.net" for i in range(50)]
        policy_file.write_text(json.dumps({"version": 1, "network": {
            "enabled": True, "allowedDomains": domains, "deniedDomains": ["blocked.example.org"],
            "allowedPorts": [443]}}))
        policy = capgate.load_policy(policy_file, workspace=ws, allow_user_expansion=True)
        resolver = StaticResolver({"api.example.com": ["93.184.216.34"], "deep.a.example.org": ["93.184.216.35"]})
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO(), level="warning"), resolver=resolver)

        def raw() -> object:
            return [ipaddress.ip_address(a) for a in resolver("api.example.com", 443)]

        def check_url() -> object:
            return net.check("https://api.example.com/v1/items?q=1")

        def check_wild() -> object:
            return net.check("deep.a.example.org:443")

        with gate:
            results = interleaved({"raw": raw, "check_url": check_url, "check_wildcard": check_wild}, n=N)
        resolver.calls.clear()
    report(
        "net_check",
        n=N,
        median_us=results["check_url"]["median_us"],
        p95_us=results["check_url"]["p95_us"],
        wildcard_median_us=results["check_wildcard"]["median_us"],
        raw_median_us=results["raw"]["median_us"],
        ratio=round(results["check_url"]["median_us"] / results["raw"]["median_us"], 1),
        allowed_domains=len(domains),
    )


if __name__ == "__main__":
    main()
