"""A run's credentials: the real values, read by the launcher, held by it alone.

The policy only says *where* a secret lives (``env:NAME``, ``file:PATH``; see
``policy.model.Credential``). ``resolve_credentials`` reads the values once, in the launcher,
and pairs each with a random per-run placeholder — the only thing the child ever gets (in the
credential's ``childEnv``). The egress proxy swaps the placeholder for the value on requests to
the credential's host (``capgate.inspection``) and the value back for the placeholder in what
that host answers.

Refused (``PolicyError`` naming the entry): a variable that is not set, a file that is a
symlink, not a regular file, another user's, group/world-readable or -writable, or readable by
the child (beneath one of the policy's read or write roots); an empty value, one shorter than
8 characters (the proxy replaces it wherever it appears in a response: a short one would
mangle ordinary text) or one with bytes a header value cannot hold.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from capgate.errors import PolicyError
from capgate.policy.model import Credential, Policy

__all__ = ["PLACEHOLDER_PREFIX", "CredentialSet", "LiveCredential", "make_placeholder", "resolve_credentials"]

PLACEHOLDER_PREFIX = "capgate-placeholder-"
MIN_SECRET_LENGTH = 8
MAX_SECRET_BYTES = 16 * 1024


@dataclass(frozen=True)
class LiveCredential:
    """One credential with its value and placeholder. Its ``repr`` never shows the value."""

    credential: Credential
    value: bytes = field(repr=False)
    placeholder: bytes

    @property
    def host(self) -> str:
        return self.credential.host

    @property
    def port(self) -> int:
        return self.credential.port


class CredentialSet:
    """The run's live credentials, looked up by ``(host, port)``."""

    def __init__(self, items: Sequence[LiveCredential] = ()) -> None:
        self.items = tuple(items)
        self._by_host: dict[tuple[str, int], list[LiveCredential]] = {}
        for item in self.items:
            self._by_host.setdefault((item.host, item.port), []).append(item)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __repr__(self) -> str:
        return f"CredentialSet({[f'{i.host}:{i.port}/{i.credential.header}' for i in self.items]})"

    def for_host(self, host: str, port: int) -> tuple[LiveCredential, ...]:
        return tuple(self._by_host.get((host.lower(), port), ()))

    def child_env(self) -> dict[str, str]:
        """The placeholders, under each credential's ``childEnv``."""
        return {i.credential.child_env: i.placeholder.decode("ascii") for i in self.items}

    def source_env_names(self) -> tuple[str, ...]:
        """The launcher's variables that hold real values (``env:NAME``): never passed on."""
        return tuple(i.credential.secret[4:] for i in self.items if i.credential.secret.startswith("env:"))


def resolve_credentials(policy: Policy, environ: Mapping[str, str]) -> CredentialSet:
    """Read every credential's value (see the module docstring for what is refused)."""
    items: list[LiveCredential] = []
    for cred in policy.network.credentials:
        value = _read_value(cred, policy, environ)
        _check_value(cred, value)
        placeholder = make_placeholder(len(value))
        items.append(LiveCredential(cred, value, placeholder))
    return CredentialSet(items)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MIN_RANDOM = 16  # base-36 characters after the prefix: 82 random bits at least


def make_placeholder(length: int) -> bytes:
    """A fresh placeholder: ``PLACEHOLDER_PREFIX`` and random characters, as long as the
    secret when that leaves at least ``MIN_RANDOM`` of them (the proxy then swaps one for the
    other in a response without changing its length, so ``Content-Length`` stays and nothing
    is re-framed), else 32 random characters. (Its length tells the child the secret's, which
    an API's key format tells anyway.)"""
    random_part = length - len(PLACEHOLDER_PREFIX)
    if random_part < MIN_RANDOM:
        random_part = 32
    return (PLACEHOLDER_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(random_part))).encode("ascii")


def _read_value(cred: Credential, policy: Policy, environ: Mapping[str, str]) -> bytes:
    key = f"{cred.key}.secret"
    kind, _, where = cred.secret.partition(":")
    if kind == "env":
        text = environ.get(where)
        if not text:
            raise PolicyError(f"{key}: ${where} is not set (or empty) in the launcher's environment", key)
        try:
            return text.encode("ascii")
        except UnicodeEncodeError:
            raise PolicyError(f"{key}: ${where} holds non-ASCII characters; not a header value", key) from None
    return _read_file(where, key, policy)


def _read_file(path: str, key: str, policy: Policy) -> bytes:
    from capgate.paths import is_within

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise PolicyError(f"{key}: cannot open {path}: {exc.strerror or exc} (a symlink is refused)", key) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError(f"{key}: {path} is not a regular file", key)
        if st.st_uid not in (os.getuid(), 0):
            raise PolicyError(f"{key}: {path} belongs to another user (uid {st.st_uid})", key)
        if st.st_mode & 0o066:
            raise PolicyError(f"{key}: {path} is readable or writable by group or others; refused "
                              f"(chmod go-rw {path})", key)
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    real = os.path.realpath(path)
    fs = policy.filesystem
    from capgate.launcher import system_read_roots  # (what the kernel layer lets every child read)

    for root in (*fs.read, *fs.write, *fs.runtime_read, policy.workspace, *system_read_roots()):
        if is_within(real, root):
            raise PolicyError(f"{key}: {path} lies beneath {root}, which the child can read; keep the secret "
                              "outside every read and write root", key)
    if len(data) > MAX_SECRET_BYTES:
        raise PolicyError(f"{key}: {path} is larger than {MAX_SECRET_BYTES} bytes", key)
    return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data


def _check_value(cred: Credential, value: bytes) -> None:
    key = f"{cred.key}.secret"
    if any(b < 0x20 or b > 0x7E for b in value):
        raise PolicyError(f"{key}: the value holds control or non-ASCII bytes; not a header value", key)
    if len(value) < MIN_SECRET_LENGTH:
        raise PolicyError(f"{key}: the value is shorter than {MIN_SECRET_LENGTH} characters (the proxy replaces it "
                          "in responses wherever it appears)", key)
