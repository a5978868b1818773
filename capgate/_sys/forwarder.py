"""The loopback end of the egress proxy inside the namespace view.

The view's network namespace holds only loopback: the one way out is the launcher's egress
proxy, whose Unix socket is bound into the view. Programs expect an ``http://host:port`` proxy,
so a forked process listens on ``127.0.0.1:PORT`` inside and relays each connection, byte for
byte, to that socket; the proxy outside decides every destination with the gate. It holds no
policy and makes no decision: a connection it relays gets exactly what a direct connection
to the proxy would.

Forked by ``ns_exec`` before the agent's Landlock domain exists, so the agent (scoped:
no signals out of its domain) cannot stop it; it dies with the view's pid namespace.
Standard library only.
"""

from __future__ import annotations

import os
import socket
import threading

__all__ = ["start_forwarder"]

_CHUNK = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except InterruptedError:
            continue
        except OSError:
            return
        threading.Thread(target=_relay, args=(client, path), daemon=True).start()


def start_forwarder(port: int, path: str) -> int:
    """Listen on ``127.0.0.1:port`` (bound before returning, so the agent never races it),
    fork, and relay to the Unix socket ``path`` in the child. Returns the child's pid."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
        except OSError:
            pass
        try:
            _serve(listener, path)
        finally:
            os._exit(0)
    listener.close()
    return pid
