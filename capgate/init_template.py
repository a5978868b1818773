"""The ``agent-permissions.json`` template written by ``capgate init``.

JSON has no comments, so the template documents by example: it spells out every key of the
policy file (tests/unit/test_init_template.py checks it against the schema) with the built-in
default value, so it loads as exactly the defaults (``restrict-only``, nothing widened).
docs/policy.md ("Keys") explains each one. Narrow any entry freely; adding a permission needs
``--allow-user-expansion``.
"""

from __future__ import annotations

import json

from capgate.policy import defaults as d

__all__ = ["TEMPLATE", "TRUSTED_ONLY_KEYS", "template_data"]


TRUSTED_ONLY_KEYS = frozenset({"network.credentials"})
"""Keys a workspace file may never carry (the user-level file and the command line only):
the template, written into the workspace, leaves them out."""


def template_data() -> dict[str, object]:
    """The template as data: every key a workspace file may hold, with the built-in default."""
    return {
        "version": 1,
        "filesystem": {
            "read": list(d.DEFAULT_READ),
            "write": list(d.DEFAULT_WRITE),
            "denyRead": list(d.DEFAULT_DENY_READ),
            "denyWrite": list(d.DEFAULT_DENY_WRITE),
            "recursiveDelete": [],
        },
        "network": {
            "enabled": False,
            "allowedDomains": [],
            "deniedDomains": [],
            "allowedAddresses": [],
            "allowedPorts": list(d.DEFAULT_PORTS),
            "allowedUnixSockets": [],
            "requestRules": [],
            "endRunOnCredentialMisuse": False,
        },
        "process": {
            "allowedCommands": [],
            "allowShell": False,
            "envPassthrough": list(d.DEFAULT_ENV_PASSTHROUGH),
            "deniedArguments": {},
        },
        "limits": dict(d.DEFAULT_LIMITS),
    }


TEMPLATE = json.dumps(template_data(), indent=2) + "\n"
