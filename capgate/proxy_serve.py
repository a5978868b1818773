"""``capgate proxy``: the egress proxy on its own, serving until stopped.

For a proxy in its own pod (``capgate export kubernetes --egress proxy``): the run's pods may
reach only this proxy, and it applies the same policy's network rules (``capgate.proxy``,
unchanged: the gate decides every destination, the proxy dials exactly the checked address).
It listens where ``--listen ADDR:PORT`` says; a non-loopback address is accepted only because
it was given explicitly — the proxy inside ``capgate run`` never listens beyond loopback.
Decisions go to the audit log (standard error by default: the pod's log).
"""

from __future__ import annotations

import ipaddress
import signal
import sys
import threading
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING

from capgate.errors import PolicyError

if TYPE_CHECKING:
    from capgate.policy.sources import Grants

__all__ = ["parse_listen", "proxy_command"]

EXIT_USAGE = 2


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6) with a numeric address; ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen must be ADDR:PORT, not {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--listen needs a numeric address (0.0.0.0, 127.0.0.1, [::]), not {host!r}") from None
    return host, int(port)


def proxy_command(listen: str, *, policy: str | None, workspace: str | None, allow_user_expansion: bool,
                  grants: Grants | None, audit_log: str | None = None, environ: Mapping[str, str] | None = None,
                  stderr: IO[str] | None = None, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set); 2 on a usage or policy error."""
    import os

    from capgate.audit import AuditLog
    from capgate.gate import Gate
    from capgate.launcher import _load, policy_error_text
    from capgate.proxy import EgressProxy

    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        err.write(f"capgate: {exc}\n")
        return EXIT_USAGE
    try:
        effective = _load(policy, workspace, allow_user_expansion, env, grants=grants)
    except PolicyError as exc:
        err.write(policy_error_text(exc))
        return EXIT_USAGE
    if not effective.network.enabled:
        err.write("capgate: warning: the policy has the network off: the proxy will deny every request\n")
    audit = AuditLog(audit_log) if audit_log else AuditLog(err)
    gate = Gate(effective, audit=audit)
    loopback = ipaddress.ip_address(host).is_loopback
    proxy = EgressProxy(gate, host, port, listen_any=not loopback)
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        proxy.start()
        err.write(f"capgate: egress proxy listening on {proxy.url}"
                  f"{'' if loopback else ' (beyond loopback: --listen said so)'}\n")
        err.flush()
        stop.wait()
    except OSError as exc:
        err.write(f"capgate: cannot listen on {listen}: {exc.strerror or exc}\n")
        return 125
    finally:
        proxy.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
