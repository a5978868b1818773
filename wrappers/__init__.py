"""Third-party code through the gate: HTTP clients, ready-made agent tools, an MCP server.

Installed only as ``capgate.wrappers`` (the repository's ``wrappers/`` folder, mapped in
pyproject.toml); each submodule needs its client, installed with the matching extra:

- ``capgate.wrappers.httpx`` (``capgate[httpx]``): ``GateTransport``, ``AsyncGateTransport``
- ``capgate.wrappers.requests`` (``capgate[requests]``): ``GateAdapter``, ``session()``
- ``capgate.wrappers.urllib`` (standard library): ``opener()``
- ``capgate.wrappers.tools``: ``read_file``, ``write_file``, ``list_dir``, ``fetch``,
  ``run_command``, ``specs(format=...)``, ``call(name, arguments)``
- ``capgate.wrappers.mcp`` (``capgate[mcp]``): the ``capgate mcp`` stdio server

Every HTTP wrapper decides each request and each redirect hop with ``capgate.net`` (one parsed
URL, one decision, one audit line) and dials the checked, pinned addresses; see ``_http``.
"""
