"""The trusted places that may widen the defaults (design.md, "Policy sources").

The workspace's policy file comes with the repository and may only narrow. The person running
capgate widens in two places the workspace cannot change:

1. the user-level file, ``$XDG_CONFIG_HOME/capgate/permissions.json`` (default
   ``~/.config/capgate/permissions.json``), same schema — refused when it lies inside the
   workspace or a write root, is a symlink, or is writable by group or others (then whoever can
   write it could widen every run);
2. command-line grants, Deno-style: ``--allow-read PATH``, ``--allow-write PATH``,
   ``--allow-net HOST[:PORT]`` (also turns the network on), ``--allow-run CMD``,
   ``--allow-env NAME``, ``--credential NAME@HOST[:PORT]/HEADER`` (a secret the egress proxy
   puts into HOST's requests; the child's ``$NAME`` holds a placeholder), ``--resolve
   HOST:PORT:ADDR``; ``--offline`` forces the network off whatever a file says.

Order: defaults, user-level file, grants, workspace file. ``load_policy`` applies them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capgate.errors import PolicyError
from capgate.paths import is_within

__all__ = ["Grants", "check_user_config", "grant_body", "grant_items", "user_config_display", "user_config_path"]

USER_CONFIG_NAME = os.path.join("capgate", "permissions.json")


def user_config_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the user-level policy file lives (it need not exist)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    if not os.path.isabs(base):  # (the XDG spec: a relative value is ignored)
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return os.path.join(base, USER_CONFIG_NAME)


def user_config_display(environ: Mapping[str, str] | None = None) -> str:
    """``user_config_path`` with the home shown as ``~`` (for messages)."""
    path = user_config_path(environ)
    env = os.environ if environ is None else environ
    home = env.get("HOME") or ""
    if home and home != "/" and path.startswith(home.rstrip("/") + "/"):
        return "~" + path[len(home.rstrip("/")):]
    return path


def check_user_config(path: str, workspace: str) -> str:
    """Refuse a user-level file that someone other than the user could have written; return
    its canonical path. Checked before it is read: a symlink (it could point anywhere the
    agent writes), a file or directory writable by group or others, a file in the workspace."""
    try:
        st = os.lstat(path)
        parent = os.stat(os.path.dirname(path))
    except OSError as exc:
        raise PolicyError(f"user-level policy file {path}: cannot check it: {exc.strerror or exc}",
                          "user-level file") from None
    if stat.S_ISLNK(st.st_mode):
        raise PolicyError(f"user-level policy file {path} is a symlink; refused (make it a regular file)",
                          "user-level file")
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(f"user-level policy file {path} is not a regular file", "user-level file")
    if st.st_uid not in (os.getuid(), 0):
        raise PolicyError(f"user-level policy file {path} belongs to another user (uid {st.st_uid}); refused",
                          "user-level file")
    if st.st_mode & 0o022:
        raise PolicyError(f"user-level policy file {path} is writable by group or others; refused "
                          f"(chmod go-w {path})", "user-level file")
    if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        raise PolicyError(f"user-level policy file {path} lies in a directory group or others can write; "
                          "refused", "user-level file")
    real = os.path.realpath(path)
    if is_within(real, workspace):
        raise PolicyError(f"user-level policy file {path} lies inside the workspace {workspace}; refused "
                          "(the workspace is not trusted to widen its own permissions)", "user-level file")
    return real


def check_user_config_outside_writes(path: str, write_roots: Sequence[str]) -> None:
    """The user-level file must not lie beneath a write root of the policy it helped build:
    the agent could then rewrite what the next run trusts."""
    for root in write_roots:
        if is_within(path, root):
            raise PolicyError(f"user-level policy file {path} lies inside the write root {root}; refused "
                              "(the agent could rewrite it)", "user-level file")


@dataclass(frozen=True)
class Grants:
    """Command-line grants. Paths are taken as given (the command line makes them absolute,
    relative to the directory it was run in)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    net: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    offline: bool = False
    credential: tuple[str, ...] = ()
    resolve: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.read or self.write or self.net or self.run or self.env or self.offline or self.credential
                    or self.resolve)


def _is_address(entry: str) -> bool:
    from capgate import addresses

    try:
        addresses.parse_address_entry(entry)
    except ValueError:
        return False
    return True


def grant_items(grants: Grants) -> list[tuple[str, str, str]]:
    """``(flag, value, label)`` for every grant, in a fixed order."""
    items: list[tuple[str, str, str]] = []
    for flag, values in (("--allow-read", grants.read), ("--allow-write", grants.write), ("--allow-net", grants.net),
                         ("--allow-run", grants.run), ("--allow-env", grants.env),
                         ("--credential", grants.credential)):
        items.extend((flag, value, f"{flag} {value}") for value in values)
    return items


def grant_body(flag: str, value: str, current: Any) -> dict[str, Any]:
    """A policy-file body that widens ``current`` (the effective ``Policy`` so far) by exactly
    one grant: the list it names, with the granted entry added."""
    fs, net, proc = current.filesystem, current.network, current.process
    if flag == "--allow-read":
        return {"filesystem": {"read": [*fs.read, value]}}
    if flag == "--allow-write":
        return {"filesystem": {"write": [*fs.write, value]}}
    if flag == "--allow-net":
        if _is_address(value):
            return {"network": {"enabled": True, "allowedAddresses": [*net.allowed_addresses, value]}}
        return {"network": {"enabled": True, "allowedDomains": [*net.allowed_domains, value]}}
    if flag == "--allow-run":
        return {"process": {"allowedCommands": [*proc.allowed_commands, value]}}
    if flag == "--allow-env":
        return {"process": {"envPassthrough": [*proc.env_passthrough, value]}}
    if flag == "--credential":
        return {"network": {"credentials": [parse_credential_grant(value)]}}
    raise ValueError(f"unknown grant {flag}")  # pragma: no cover - grant_items names them all


def parse_credential_grant(value: str) -> dict[str, str]:
    """``NAME@HOST[:PORT]/HEADER`` as a ``network.credentials`` entry: the secret from the
    launcher's ``$NAME``, the placeholder in the child's ``$NAME``."""
    name, at, rest = value.partition("@")
    host, slash, header = rest.partition("/")
    if not (at and slash and name and host and header):
        raise PolicyError(f"--credential {value}: expected NAME@HOST[:PORT]/HEADER "
                          "(e.g. EXAMPLE_TOKEN@api.example.com/Authorization)", "--credential")
    return {"host": host, "header": header, "secret": f"env:{name}", "childEnv": name}


def parse_resolve(value: str) -> tuple[str, int, str]:
    """``HOST:PORT:ADDR`` (curl's ``--resolve``; ADDR may be ``[v6]``) as ``(host, port, addr)``."""
    import ipaddress

    host, sep1, rest = value.partition(":")
    port, sep2, addr = rest.partition(":")
    addr = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
    try:
        ip = ipaddress.ip_address(addr)
        number = int(port) if port.isdigit() else -1
    except ValueError:
        ip, number = None, -1
    if not (sep1 and sep2 and host) or ip is None or not 0 < number < 65536:
        raise PolicyError(f"--resolve {value}: expected HOST:PORT:ADDR (an IP address), e.g. "
                          "api.example.com:443:127.0.0.1", "--resolve")
    return host.lower().rstrip("."), number, str(ip)
