"""Per-request rules on inspected hosts (``network.requestRules``) and the request path.

Every rule naming the host must pass (rules only narrow: a workspace file may add them): the
method among its ``methods`` (none listed: any) and the path matching one of its ``paths``
(``*`` matches any run of characters, ``/`` included; none listed: any). The path is the
request target without its query; a path whose meaning a server could read differently from
its spelling (dot segments — also with a path parameter, ``..;``, which Tomcat, Jetty and
Spring read as ``..`` —, encoded ``.``, ``/`` or ``\\``, a backslash, ``//``, a ``#``) is
refused outright on a host with rules, so ``/repos/acme/../other`` cannot pass for
``/repos/acme/*``. The path judged is the very text sent on (up to the query): a fragment is
not cut off first (a client never sends one; ``/repos/acme/x#/../../other`` must not be judged
as ``/repos/acme/x`` and sent whole).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from capgate.decision import Decision
from capgate.policy.model import RequestRule

__all__ = ["check_request", "request_path"]

_AMBIGUOUS = re.compile(r"%2e|%2f|%5c|\\|//|#", re.IGNORECASE)


def request_path(target: str) -> str:
    """The path of an origin-form request target: everything before the query, exactly as it
    is sent (a ``#`` stays, for ``check_request`` to refuse)."""
    return target.split("?", 1)[0]


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z", re.DOTALL)


# Headers with which many frameworks (Rails, Laravel, Express's method-override, Google APIs)
# let a request stand for another method: a rule on methods would judge the wrong one.
METHOD_OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})


def check_request(rules: Sequence[RequestRule], host: str, port: int, method: str, path: str,
                  header_names: Sequence[str] = ()) -> Decision:
    """Allow or deny ``method path`` on ``host:port`` under every rule for it. A method
    override header (``header_names``: the request's, any case) is refused where a rule
    limits methods: the server might act on the method it names instead."""
    shown = f"{method} {host}{path}"
    mine = [r for r in rules if r.host == host and r.port == port]
    if not mine:
        return Decision.allow("no request rules for this host", "network.requestRules", shown)
    dots = {segment.split(";", 1)[0] for segment in path.split("/")} & {".", ".."}
    if _AMBIGUOUS.search(path) or dots:
        return Decision.deny(f"ambiguous request path {path!r} (dot segments, encoded separators or a fragment) "
                             "on a host with request rules", mine[0].key, shown)
    overrides = sorted({n.lower() for n in header_names} & METHOD_OVERRIDE_HEADERS)
    for rule in mine:
        if rule.methods and overrides:
            return Decision.deny(f"a method override header ({overrides[0]}) on a host whose rule limits methods",
                                 rule.key, shown)
        if rule.methods and method not in rule.methods:
            return Decision.deny(f"method {method} is not among {list(rule.methods)}", rule.key, shown)
        if rule.paths and not any(_glob(p).match(path) for p in rule.paths):
            return Decision.deny(f"path {path} matches none of {list(rule.paths)}", rule.key, shown)
    return Decision.allow("request rules", ", ".join(r.key for r in mine), shown)
