"""Credentials and request rules in the policy (trusted sources only), the secrets' checks, the
stream scrubber and the request rules (issue 19)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import capgate
from capgate.credentials import PLACEHOLDER_PREFIX, resolve_credentials
from capgate.errors import PolicyError
from capgate.inspection.rules import check_request
from capgate.inspection.scrub import StreamReplacer, StreamScanner
from capgate.policy.sources import Grants

SECRET = "sk-unit-secret-0123456789"
ENTRY = {"host": "api.example.com", "header": "Authorization", "secret": "env:TOKEN", "childEnv": "TOKEN"}


def _user_file(home: Path, body: dict[str, object]) -> Path:
    path = home / ".config" / "capgate" / "permissions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def _load(workspace: Path, home: Path, ws_body: dict[str, object] | None = None, **kw: object) -> capgate.Policy:
    ws_file = None
    if ws_body is not None:
        ws_file = workspace / "agent-permissions.json"
        ws_file.write_text(json.dumps(ws_body))
    user = home / ".config" / "capgate" / "permissions.json"
    return capgate.load_policy(ws_file, workspace=workspace, home=str(home),
                               user_file=user if user.exists() else None, **kw)  # type: ignore[arg-type]


def test_user_level_credential_allows_its_host_and_turns_the_network_on(workspace: Path, fake_home: Path) -> None:
    _user_file(fake_home, {"network": {"credentials": [ENTRY]}})
    policy = _load(workspace, fake_home)
    cred = policy.network.credentials[0]
    assert (cred.host, cred.port, cred.header, cred.child_env) == ("api.example.com", 443, "Authorization", "TOKEN")
    assert policy.network.enabled and "api.example.com:443" in policy.network.allowed_domains
    assert any("network.credentials[0]" in entry for entry, _ in policy.widened)


@pytest.mark.parametrize("expand", [False, True])
def test_workspace_file_credential_is_refused_naming_the_entry(workspace: Path, fake_home: Path, expand: bool) -> None:
    with pytest.raises(PolicyError) as info:
        _load(workspace, fake_home, {"network": {"credentials": [ENTRY]}}, allow_user_expansion=expand)
    assert info.value.key == "network.credentials[0]"
    assert "never add, change or redirect" in str(info.value)


def test_workspace_file_may_add_request_rules_but_not_lift_end_run(workspace: Path, fake_home: Path) -> None:
    _user_file(fake_home, {"network": {"credentials": [ENTRY], "endRunOnCredentialMisuse": True}})
    rule = {"host": "api.example.com", "methods": ["GET"], "paths": ["/repos/acme/*"]}
    policy = _load(workspace, fake_home, {"network": {"requestRules": [rule]}})
    assert policy.network.request_rules[0].paths == ("/repos/acme/*",)
    assert policy.network.end_run_on_credential_misuse
    with pytest.raises(PolicyError) as info:
        _load(workspace, fake_home, {"network": {"endRunOnCredentialMisuse": False}})
    assert "network.endRunOnCredentialMisuse" in str(info.value)


@pytest.mark.parametrize("bad", ["TOKEN@api.example.com", "@api.example.com/Authorization", "TOKEN@*.example.com/A",
                                 "TOKEN@api.example.com/Bad Header"])
def test_bad_credential_grants_are_refused(workspace: Path, fake_home: Path, bad: str) -> None:
    with pytest.raises(PolicyError) as info:
        _load(workspace, fake_home, grants=Grants(credential=(bad,)))
    assert info.value.key == "--credential"


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PYTHONPATH", "HTTPS_PROXY", "SSL_CERT_FILE", "NODE_OPTIONS",
                                  "CAPGATE_POLICY", "PATH"])
def test_placeholder_may_not_take_a_reserved_variable(workspace: Path, fake_home: Path, name: str) -> None:
    _user_file(fake_home, {"network": {"credentials": [{**ENTRY, "childEnv": name}]}})
    with pytest.raises(PolicyError) as info:
        _load(workspace, fake_home)
    assert info.value.key == "network.credentials[0].childEnv"


def test_credential_grant_and_resolve(workspace: Path, fake_home: Path) -> None:
    policy = _load(workspace, fake_home, grants=Grants(credential=("TOKEN@api.example.com:8443/X-Key",),
                                                       resolve=("api.example.com:8443:127.0.0.1",)))
    assert policy.network.credentials[0].port == 8443 and policy.network.credentials[0].header == "X-Key"
    assert policy.network.resolve[0].address == "127.0.0.1"
    with pytest.raises(PolicyError):
        _load(workspace, fake_home, grants=Grants(resolve=("api.example.com:443:not-an-ip",)))


def test_policy_round_trips_through_the_effective_file(workspace: Path, fake_home: Path) -> None:
    from capgate.policy.dump import policy_from_dict

    _user_file(fake_home, {"network": {"credentials": [ENTRY], "requestRules": [{"host": "api.example.com"}]}})
    policy = _load(workspace, fake_home)
    assert policy_from_dict(json.loads(policy.to_json())) == policy


# -- secrets -------------------------------------------------------------------------------
def _with_secret(workspace: Path, fake_home: Path, secret: str) -> capgate.Policy:
    _user_file(fake_home, {"network": {"credentials": [{**ENTRY, "secret": secret}]}})
    return _load(workspace, fake_home)


def test_env_secret_gets_a_random_placeholder(workspace: Path, fake_home: Path) -> None:
    policy = _with_secret(workspace, fake_home, "env:TOKEN")
    live = resolve_credentials(policy, {"TOKEN": SECRET})
    again = resolve_credentials(policy, {"TOKEN": SECRET})
    item = live.items[0]
    assert item.value == SECRET.encode() and item.placeholder.startswith(PLACEHOLDER_PREFIX.encode())
    assert item.placeholder != again.items[0].placeholder
    assert SECRET not in repr(live) and SECRET not in repr(item)
    assert live.child_env() == {"TOKEN": item.placeholder.decode()}
    with pytest.raises(PolicyError, match=r"\$TOKEN is not set"):
        resolve_credentials(policy, {})
    for bad in ("short", "with\nnewline-0123456"):
        with pytest.raises(PolicyError):
            resolve_credentials(policy, {"TOKEN": bad})


def test_file_secret_checks(workspace: Path, fake_home: Path, tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    good = secrets_dir / "token"
    good.write_text(SECRET + "\n")
    good.chmod(0o600)
    policy = _with_secret(workspace, fake_home, f"file:{good}")
    assert resolve_credentials(policy, {}).items[0].value == SECRET.encode()  # control
    good.chmod(0o644)
    with pytest.raises(PolicyError, match="group or others"):
        resolve_credentials(policy, {})
    link = secrets_dir / "link"
    good.chmod(0o600)
    os.symlink(good, link)
    with pytest.raises(PolicyError, match="symlink"):
        resolve_credentials(_with_secret(workspace, fake_home, f"file:{link}"), {})
    inside = workspace / "token"
    inside.write_text(SECRET)
    inside.chmod(0o600)
    with pytest.raises(PolicyError, match="the child can read"):
        resolve_credentials(_with_secret(workspace, fake_home, f"file:{inside}"), {})


# -- scrubbing -----------------------------------------------------------------------------
def test_replacer_catches_the_value_split_at_every_point() -> None:
    body = b'{"echo": "Bearer ' + SECRET.encode() + b'", "again": "' + SECRET.encode() + b'"}'
    expected = body.replace(SECRET.encode(), b"PH")
    for cut in range(len(body) + 1):
        r = StreamReplacer([(SECRET.encode(), b"PH")])
        assert r.feed(body[:cut]) + r.feed(body[cut:]) + r.flush() == expected
    r = StreamReplacer([(SECRET.encode(), b"PH")])
    out = b"".join(r.feed(body[i:i + 1]) for i in range(len(body))) + r.flush()
    assert out == expected


def test_replacer_in_a_buffer_matches_the_copying_replacer_at_every_cut() -> None:
    """feed_buffer (in place, same-length placeholder) gives what feed gives, for the value
    split at every point, held tails carried across, and leaves nothing of it behind."""
    value, placeholder = SECRET.encode(), b"P" * len(SECRET)
    body = b"sk-" + value + b"..." + value + value[:5] + b"sk" + value
    expected = body.replace(value, placeholder)
    for cut in range(len(body) + 1):
        r = StreamReplacer([(value, placeholder)])
        out = b""
        for part in (body[:cut], body[cut:]):
            buf = bytearray(part) + bytearray(8)  # (a scratch buffer larger than what was read)
            out += bytes(r.feed_buffer(buf, len(part)))
        assert out + r.flush() == expected
    r = StreamReplacer([(value, b"PH")])  # (control: a shorter placeholder takes the copying path)
    buf = bytearray(body)
    assert bytes(r.feed_buffer(buf, len(body))) + r.flush() == body.replace(value, b"PH")


def test_replacer_holds_back_nothing_that_cannot_start_the_value() -> None:
    r = StreamReplacer([(SECRET.encode(), b"PH")])
    assert r.feed(b"data: token\n\n") == b"data: token\n\n"  # (an SSE event passes at once)
    assert r.feed(b"x sk-un") == b"x "  # (a possible start is held)
    assert r.feed(b"known") + r.flush() == b"sk-unknown"


def test_scanner_finds_a_split_placeholder() -> None:
    needle = b"capgate-placeholder-abc"
    for cut in range(1, len(needle)):
        s = StreamScanner([needle])
        assert s.feed(b"xx" + needle[:cut]) == [] and s.feed(needle[cut:] + b"yy") == [needle]


# -- request rules -------------------------------------------------------------------------
def test_request_rules_decide_and_name_the_rule(workspace: Path, fake_home: Path) -> None:
    policy = _load(workspace, fake_home, {"network": {"requestRules": [
        {"host": "api.github.com", "methods": ["GET"], "paths": ["/repos/acme/*"]}]}})
    rules = policy.network.request_rules
    assert check_request(rules, "api.github.com", 443, "GET", "/repos/acme/tool/issues").allowed
    for method, path in (("POST", "/repos/acme/x"), ("GET", "/repos/other/x"), ("GET", "/repos/acme/../other"),
                         ("GET", "/repos/acme/%2E%2E/other"), ("GET", "/repos/acme//x")):
        decision = check_request(rules, "api.github.com", 443, method, path)
        assert not decision.allowed and decision.rule == "network.requestRules[0]", (method, path)
    assert check_request(rules, "other.example.com", 443, "DELETE", "/x").allowed  # (no rules there)


def test_file_secret_in_a_system_read_root_is_refused(workspace: Path, fake_home: Path, tmp_path: Path) -> None:
    """/opt is readable by every child (the kernel layer's system roots): a secret kept there,
    even mode 0600 and the user's own, is readable by a child running as the same user."""
    from capgate.launcher import system_read_roots

    root = next(r for r in system_read_roots() if r in ("/opt", "/usr"))
    policy = _with_secret(workspace, fake_home, f"file:{root}/capgate-test-token-{os.getpid()}")
    secret_file = Path(policy.network.credentials[0].secret[5:])
    try:
        secret_file.write_text(SECRET)
    except OSError:
        pytest.skip(f"cannot write to {root} here")
    try:
        secret_file.chmod(0o600)
        with pytest.raises(PolicyError, match="the child can read"):
            resolve_credentials(policy, {})
    finally:
        secret_file.unlink()


def test_offline_run_still_drops_the_variable(workspace: Path) -> None:
    """--allow-env of the credential's own variable with the network off: the launcher still
    removes it from what the child's environment is built from. (In a subprocess: the launcher
    step makes its process non-dumpable, which the test runner must not become.)"""
    import subprocess
    import sys

    code = (
        "import os, sys, json, capgate\n"
        "from capgate.launcher import _take_credentials\n"
        "from capgate.policy.sources import Grants\n"
        "p = capgate.load_policy(None, workspace=sys.argv[1], grants=Grants(credential=("
        "'TOKEN@api.example.com/Authorization',), env=('TOKEN',), offline=True))\n"
        "env = {'TOKEN': os.environ['TOKEN'], 'OTHER': 'x'}\n"
        "live = _take_credentials(p, env, resolve=True)\n"
        "print(json.dumps([live is None, env, 'TOKEN' in os.environ]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(workspace)], capture_output=True, text=True,
                          env={**os.environ, "TOKEN": SECRET}, timeout=60)
    assert json.loads(done.stdout) == [True, {"OTHER": "x"}, False], done.stderr
