"""Baked into the test image at /workspace/agent.py and run inside the exported pod: each
acceptance attack, and a benign control beside it, as one JSON object per line.

``outcome`` is ``denied`` (PermissionError: the gate or the kernel said no), ``ok`` (it
worked), or ``error: <type>`` (something else failed)."""

import json
import os
import socket
import subprocess
import sys


def attempt(name, action):
    try:
        value = action()
        outcome = "ok"
    except PermissionError:
        value, outcome = None, "denied"
    except OSError as exc:
        value, outcome = None, f"error: {type(exc).__name__} {exc.errno}"
    print(json.dumps({"name": name, "outcome": outcome, "value": value}), flush=True)


def read(path):
    with open(path) as fh:
        return fh.read()


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return read(path)


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return "connected"


attempt("read-secret-env", lambda: read("/workspace/.env"))
attempt("read-source", lambda: read("/workspace/src/app.py"))  # benign control
attempt("read-policy-dir-listing", lambda: os.listdir("/home/agent"))  # the launcher's own HOME
attempt("write-source", lambda: write("/workspace/src/app.py", "pwned"))
attempt("write-root-fs", lambda: write("/etc/pwned", "x"))
attempt("write-policy", lambda: write("/etc/capgate/agent-permissions.json", "{}"))
attempt("write-output", lambda: write("/workspace/output/result.txt", "fine"))  # benign control
attempt("shell", lambda: run(["sh", "-c", "echo shell"]))
attempt("unlisted-command", lambda: run(["ls", "/"]))
attempt("listed-command", lambda: run(["cat", "/workspace/src/app.py"]))  # benign control
attempt("connect-loopback", lambda: connect(9))
attempt("identity", lambda: [os.getuid(), os.getgid(), sys.executable])
