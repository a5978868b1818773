"""Hostile and benign tool calls shared by the ``tools.call`` tests and the MCP server tests.

Each case builds what it needs on the real filesystem (symlinks, hard links, a sibling
``ws_evil`` directory whose name shares the workspace's prefix) and returns the arguments a
model would send. The reference filesystem MCP server has had path-escape CVEs of exactly
these shapes (prefix-matched allowed roots, symlinks followed out of them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import SECRET

WS_FILE = "print('hello')\n"


@dataclass(frozen=True)
class Env:
    ws: Path
    home: Path
    tmp: Path
    port: int  # a loopback HTTP server the policy allows


@dataclass(frozen=True)
class Case:
    id: str
    tool: str
    build: Callable[[Env], dict[str, Any]]
    # what must not happen, checked after the call (None: nothing beyond the refusal)
    after: Callable[[Env], None] | None = None


def layout(tmp: Path) -> Env:
    """ws/ (with src/app.py, output/, .env, .git/hooks/), ws_evil/ beside it, home/ with keys."""
    ws, home = tmp / "ws", tmp / "home"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text(WS_FILE)
    (ws / "output").mkdir()
    (ws / ".env").write_text(SECRET)
    (ws / ".git" / "hooks").mkdir(parents=True)
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / "notes.txt").write_text(SECRET)  # outside, and no secret by name: containment alone keeps it
    (tmp / "ws_evil").mkdir()
    (tmp / "ws_evil" / "loot.txt").write_text(SECRET)
    return Env(ws, home, tmp, 0)


def policy(env: Env) -> dict[str, Any]:
    return {
        "version": 1,
        "filesystem": {"read": ["."], "write": ["."]},
        "process": {"allowedCommands": ["echo"]},
        "network": {"enabled": True, "allowedAddresses": [f"127.0.0.1:{env.port}"]},
    }


def write_policy(env: Env) -> Path:
    path = env.tmp / "policy.json"
    path.write_text(json.dumps(policy(env)))
    return path


def _symlink(name: str, target: Callable[[Env], Path]) -> Callable[[Env], str]:
    def make(env: Env) -> str:
        link = env.ws / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target(env), link)
        return name

    return make


def _hard_link(env: Env) -> str:
    os.link(env.home / ".ssh" / "id_rsa", env.ws / "src" / "notes.txt")
    return "src/notes.txt"


def _hook_not_written(env: Env) -> None:
    assert not (env.ws / ".git" / "hooks" / "pre-commit").exists()


def _evil_untouched(env: Env) -> None:
    assert (env.tmp / "ws_evil" / "loot.txt").read_text() == SECRET
    assert not (env.tmp / "ws_evil" / "planted").exists()


def _home_untouched(env: Env) -> None:
    assert (env.home / ".bashrc").exists() is False
    assert (env.home / "notes.txt").read_text() == SECRET


def _hard_link_out(env: Env) -> str:
    os.link(env.home / "notes.txt", env.ws / "output" / "linked.txt")
    return "output/linked.txt"


def _symlink_chain(env: Env) -> str:
    os.symlink(env.tmp / "ws_evil" / "loot.txt", env.ws / "src" / "chain2")
    os.symlink("chain2", env.ws / "src" / "chain1")
    return "src/chain1"


HOSTILE: list[Case] = [
    Case("dotdot", "read_file", lambda e: {"path": "../home/.ssh/id_rsa"}),
    Case("absolute-secret", "read_file", lambda e: {"path": str(e.home / ".ssh" / "id_rsa")}),
    Case("sibling-prefix-read", "read_file", lambda e: {"path": str(e.tmp / "ws_evil" / "loot.txt")}),
    Case("sibling-prefix-dotdot", "read_file", lambda e: {"path": "../ws_evil/loot.txt"}),
    Case("sibling-prefix-list", "list_dir", lambda e: {"path": str(e.tmp / "ws_evil")}),
    Case("sibling-prefix-write", "write_file",
         lambda e: {"path": str(e.tmp / "ws_evil" / "planted"), "content": "x"}, _evil_untouched),
    Case("symlink-to-secret", "read_file",
         lambda e: {"path": _symlink("src/link", lambda e: e.home / ".ssh" / "id_rsa")(e)}),
    Case("symlink-dir-to-sibling", "read_file",
         lambda e: {"path": _symlink("evil", lambda e: e.tmp / "ws_evil")(e) + "/loot.txt"}),
    Case("symlink-write-out", "write_file",
         lambda e: {"path": _symlink("output/out", lambda e: e.home / ".bashrc")(e), "content": "pwned"},
         _home_untouched),
    Case("hard-link-to-secret", "read_file", lambda e: {"path": _hard_link(e)}),
    # The reference filesystem server's path-escape CVE classes (CVE-2025-53110: an allowed
    # directory's name as a mere prefix; CVE-2025-53109: symlinks out of the allowed directory),
    # each spelling against files that are outside but carry no secret's name, so containment
    # alone must refuse them (the deny list is not what saves these).
    Case("home-tilde", "read_file", lambda e: {"path": "~/notes.txt"}),
    Case("proc-self-cwd", "read_file", lambda e: {"path": "/proc/self/cwd/../ws_evil/loot.txt"}),
    Case("sibling-prefix-spelled", "read_file", lambda e: {"path": str(e.ws) + "_evil/loot.txt"}),
    Case("sibling-prefix-trailing-dot", "read_file", lambda e: {"path": str(e.ws) + "/./../ws_evil/loot.txt"}),
    Case("symlink-relative-target", "read_file",
         lambda e: {"path": _symlink("src/rel", lambda e: Path("../../ws_evil/loot.txt"))(e)}),
    Case("symlink-chain", "read_file", lambda e: {"path": _symlink_chain(e)}),
    Case("symlink-then-dotdot", "read_file",  # physically ws/output/.. is ws, lexically src: either way, out
         lambda e: {"path": _symlink("src/up", lambda e: e.ws / "output")(e) + "/../../ws_evil/loot.txt"}),
    Case("symlink-dir-list", "list_dir", lambda e: {"path": _symlink("src/evil-dir", lambda e: e.tmp / "ws_evil")(e)}),
    Case("symlink-dir-write-out", "write_file",
         lambda e: {"path": _symlink("output/evil-dir", lambda e: e.tmp / "ws_evil")(e) + "/planted", "content": "x"},
         _evil_untouched),
    Case("symlink-overwrite-outside", "write_file",
         lambda e: {"path": _symlink("output/notes", lambda e: e.home / "notes.txt")(e), "content": "pwned"},
         _home_untouched),
    Case("hard-link-read-out", "read_file", lambda e: {"path": _hard_link_out(e)}),
    Case("dotenv-secret", "read_file", lambda e: {"path": ".env"}),
    Case("git-hooks-write", "write_file",
         lambda e: {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\ncurl evil\n"}, _hook_not_written),
    Case("proc-self-root", "read_file", lambda e: {"path": "/proc/self/root" + str(e.home / ".ssh" / "id_rsa")}),
    Case("nul-byte", "read_file", lambda e: {"path": "src/app.py\x00/../../home/.ssh/id_rsa"}),
    Case("shell", "run_command", lambda e: {"argv": ["sh", "-c", "cat ~/.ssh/id_rsa"]}),
    Case("bash", "run_command", lambda e: {"argv": ["bash", "-c", "id"]}),
    Case("unlisted-command", "run_command", lambda e: {"argv": ["cat", str(e.home / ".ssh" / "id_rsa")]}),
    Case("metadata", "fetch", lambda e: {"url": "http://169.254.169.254/latest/meta-data/"}),
    Case("metadata-decimal", "fetch", lambda e: {"url": "http://2852039166/latest/meta-data/"}),
    Case("loopback-other-port", "fetch", lambda e: {"url": f"http://127.0.0.1:{e.port + 1 if e.port < 65535 else 1}/"}),
    Case("file-scheme", "fetch", lambda e: {"url": "file:///etc/passwd"}),
    Case("userinfo", "fetch", lambda e: {"url": f"http://127.0.0.1:{e.port}@169.254.169.254/"}),
]

BENIGN: list[Case] = [
    Case("read", "read_file", lambda e: {"path": "src/app.py"}),
    Case("read-absolute", "read_file", lambda e: {"path": str(e.ws / "src" / "app.py")}),
    Case("write", "write_file", lambda e: {"path": "output/report.txt", "content": "done\n"}),
    Case("list", "list_dir", lambda e: {"path": "src"}),
    Case("run", "run_command", lambda e: {"argv": ["echo", "hi"]}),
    Case("fetch", "fetch", lambda e: {"url": f"http://127.0.0.1:{e.port}/page"}),
]


def benign_expectation(case_id: str, result: dict[str, Any], env: Env) -> None:
    """What each benign call must have returned (the result dict of ``tools.call``)."""
    if case_id in ("read", "read-absolute"):
        assert result["content"] == WS_FILE
    elif case_id == "write":
        assert (env.ws / "output" / "report.txt").read_text() == "done\n"
    elif case_id == "list":
        assert "app.py" in result["entries"]  # (hostile cases before may have planted links beside it)
    elif case_id == "run":
        assert result["returncode"] == 0 and result["stdout"] == "hi\n"
    elif case_id == "fetch":
        assert result["status"] == 200 and result["body"] == "hello GET /page"
    else:  # pragma: no cover
        raise AssertionError(case_id)
