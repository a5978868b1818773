"""Run inside ``capgate run`` by tests/integration/test_credentials.py: one action per
argv[1], printing JSON lines the test reads. The upstream is an HTTPS server on 127.0.0.1 whose
names the launcher resolves (``--resolve``); the child knows only the proxy and the placeholder."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

HOST = "api.capgate.test"
OTHER = "other.capgate.test"


def out(**data: object) -> None:
    print(json.dumps(data), flush=True)


def get(url: str, headers: dict[str, str], method: str = "GET", data: bytes | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=20, context=context) as resp:
            return resp.status, resp.read().decode("latin-1")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("latin-1")
    except (urllib.error.URLError, OSError) as exc:
        return -1, str(exc)


def main() -> None:
    action, port = sys.argv[1], int(sys.argv[2])
    token = os.environ.get("TESTTOKEN", "")
    auth = {"Authorization": f"Bearer {token}"}
    base = f"https://{HOST}:{port}"
    if action == "urllib":
        for path in ("/echo", "/stream", "/gzip-echo"):
            status, body = get(base + path, auth)
            out(path=path, status=status, body=body)
        status, body = get(base + "/upload", {**auth, "Expect": "100-continue"}, "POST", b"x" * 5000)
        out(path="/upload", status=status, body=body[:200])
    elif action in ("requests", "httpx"):
        if action == "requests":
            import requests

            with requests.Session() as s:
                for path in ("/echo", "/stream"):
                    r = s.get(base + path, headers=auth, timeout=20)
                    out(path=path, status=r.status_code, body=r.text)
        else:
            import httpx

            with httpx.Client(timeout=20) as c:
                for path in ("/echo", "/stream"):
                    r = c.get(base + path, headers=auth)
                    out(path=path, status=r.status_code, body=r.text)
    elif action in ("curl", "node"):
        hfile = os.path.join(os.environ["TMPDIR"], "h.txt")
        with open(hfile, "w") as fh:
            fh.write(f"Authorization: Bearer {token}\n")
        if action == "curl":
            cmd = ["curl", "-sS", "--max-time", "20", "-H", f"@{hfile}", base + "/stream"]
        else:
            cmd = ["node", sys.argv[3], base + "/stream", hfile]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        out(path="/stream", status=done.returncode, body=done.stdout, err=done.stderr[-500:])
    elif action == "elsewhere":
        # The placeholder to the other name (an inspected host without this credential: request
        # rules make it inspected), and over plain HTTP to an allowed loopback server.
        status, body = get(f"https://{OTHER}:{port}/echo", auth)
        out(path="other", status=status, body=body)
        status, body = get(f"https://{OTHER}:{port}/echo?key={token}", {})
        out(path="other-url", status=status, body=body)
        status, body = get(f"http://127.0.0.1:{sys.argv[3]}/plain", {"X-Token": token})
        out(path="plain", status=status, body=body)
        status, body = get(f"http://127.0.0.1:{sys.argv[3]}/plain", {}, "POST", b"data=" + token.encode())
        out(path="plain-body", status=status, body=body)
    elif action == "tunnel":
        # No rules, no credential for OTHER: a plain tunnel, so only the test CA verifies it.
        ctx = ssl.create_default_context(cafile=sys.argv[3])
        status, body = get(f"https://{OTHER}:{port}/echo", auth, context=ctx)
        out(path="tunnel", status=status, body=body)
    elif action == "rules":
        for method, path in (("GET", "/repos/acme/tool"), ("POST", "/repos/acme/tool"), ("GET", "/repos/other/x"),
                             ("GET", "/repos/acme/%2e%2e/other/x")):
            status, body = get(base + path, {}, method, b"" if method == "POST" else None)
            out(path=f"{method} {path}", status=status, body=body)
    elif action == "fronting":
        proxy = os.environ["HTTPS_PROXY"].removeprefix("http://")
        phost, pport = proxy.rsplit(":", 1)
        for sni, host_header in ((OTHER, HOST), (HOST, OTHER)):
            s = socket.create_connection((phost, int(pport)), timeout=10)
            s.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            s.recv(4096)
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                t = ctx.wrap_socket(s, server_hostname=sni)
                t.sendall(f"GET /echo HTTP/1.1\r\nHost: {host_header}:{port}\r\n\r\n".encode())
                answer = t.recv(65536).decode("latin-1")
            except (ssl.SSLError, OSError) as exc:
                answer = f"refused: {exc}"
            out(path=f"sni={sni} host={host_header}", status=0, body=answer[:300])
    elif action == "hunt":
        secret = sys.argv[3][::-1]  # (given reversed: the argv of no process holds the value)
        found, readable = [], 0
        try:
            pids = list(filter(str.isdigit, os.listdir("/proc")))
        except OSError:  # (the soft backend's hooks refuse /proc: try the processes it knows)
            pids = [str(os.getpid()), str(os.getppid())]
        for pid in pids:
            for name in ("environ", "cmdline"):
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as fh:
                        data = fh.read()
                    readable += 1
                    if secret.encode() in data:
                        found.append(f"/proc/{pid}/{name}")
                except OSError:
                    pass
            if int(pid) == os.getpid():
                continue  # (this process holds the value it looks for)
            try:
                with open(f"/proc/{pid}/maps") as fh:
                    maps = fh.read().splitlines()
                with open(f"/proc/{pid}/mem", "rb") as mem:
                    for line in maps:
                        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                        if "r" not in line.split()[1] or hi - lo > 1 << 28:
                            continue
                        try:
                            mem.seek(lo)
                            if secret.encode() in mem.read(hi - lo):
                                found.append(f"/proc/{pid}/mem")
                                break
                        except OSError:
                            continue
            except OSError:
                pass
        roots = [os.path.dirname(os.environ["TMPDIR"]), os.environ["HOME"], os.getcwd(), *sys.argv[4:]]
        for root in roots:
            for top, _dirs, files in os.walk(root):
                for f in files:
                    try:
                        with open(os.path.join(top, f), "rb") as fh:
                            if secret.encode() in fh.read():
                                found.append(os.path.join(top, f))
                    except OSError:
                        pass
        out(path="hunt", status=0, found=found, readable=readable, own=token.startswith("capgate-placeholder-"),
            env_has=[k for k, v in os.environ.items() if secret in v])


if __name__ == "__main__":
    main()
