"""TLS inspection at the egress proxy, for the hosts that need it and only those.

A CONNECT to a host with a credential (``network.credentials``) or request rules
(``network.requestRules``) is not a byte tunnel: the proxy answers the child's TLS with a
certificate for exactly that name from a per-run CA (``ca``: key in memory only), speaks
HTTP/1.1 with h11 (``relay``), checks SNI and every request's ``Host`` against the CONNECT
host, applies the request rules (``rules``), swaps the placeholder for the real value in the
credential's header and back in what the host answers (``scrub``), and forwards each request
over its own TLS connection, verified against the system store (plus ``--upstream-ca``), to
the address the gate checked.

Needs the ``capgate[proxy-tls]`` extra (``cryptography`` for the certificates: the
maintained standard for X.509 in Python; ``h11`` for HTTP/1.1: a small, sans-I/O parser with
strict framing, the one httpx's stack uses, so no hand-written parser decides where a request
ends). Without it, a policy that needs inspection is a ``PolicyError`` naming the extra.
"""

from __future__ import annotations

from capgate.errors import PolicyError

__all__ = ["EXTRA", "require_extra"]

EXTRA = "capgate[proxy-tls]"


def require_extra(key: str) -> None:
    """Raise ``PolicyError`` naming ``key`` and the extra when cryptography or h11 is missing."""
    try:
        import cryptography  # noqa: F401
        import h11  # noqa: F401
    except ImportError as exc:
        raise PolicyError(f"{key}: credentials and request rules need TLS inspection at the egress proxy, which "
                          f"needs the {EXTRA} extra (pip install '{EXTRA}'; missing: {exc.name})", key) from None
