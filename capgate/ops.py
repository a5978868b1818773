"""Operation names: defined once, used by the gate, the audit log, the CLI and the hooks."""

from __future__ import annotations

__all__ = ["ALL_OPS", "FS_DELETE", "FS_OPS", "FS_READ", "FS_WRITE", "NET_CONNECT", "NET_CREDENTIAL", "NET_REQUEST",
           "PROC_EXEC"]

FS_READ = "fs.read"
FS_WRITE = "fs.write"
FS_DELETE = "fs.delete"
NET_CONNECT = "net.connect"
PROC_EXEC = "proc.exec"
# Egress-proxy records, not gate checks (``capgate check`` does not take them): one inspected
# request (method, host, path), and a credential placeholder seen on its way to another host.
NET_REQUEST = "net.request"
NET_CREDENTIAL = "net.credential"

FS_OPS = frozenset({FS_READ, FS_WRITE, FS_DELETE})
ALL_OPS = frozenset({FS_READ, FS_WRITE, FS_DELETE, NET_CONNECT, PROC_EXEC})
