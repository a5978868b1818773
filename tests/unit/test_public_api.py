"""The public names design.md promises exist, with the documented shapes."""

from __future__ import annotations

import inspect

import capgate
from capgate import fs, net, proc


def test_top_level_names() -> None:
    for name in ("load_policy", "Policy", "Gate", "PermissionDenied", "PolicyError", "Decision", "fs", "net", "proc"):
        assert hasattr(capgate, name), name
    assert sorted(capgate.__all__) == capgate.__all__
    for name in capgate.__all__:
        assert hasattr(capgate, name), name


def test_exception_hierarchy() -> None:
    assert issubclass(capgate.PermissionDenied, PermissionError)
    assert issubclass(capgate.PolicyError, ValueError)
    err = capgate.PermissionDenied("fs.read", "~/.ssh/id_rsa", "denyRead '~/.ssh'", "filesystem.denyRead[0]")
    assert (err.op, err.target, err.reason, err.rule) == ("fs.read", "~/.ssh/id_rsa", "denyRead '~/.ssh'",
                                                         "filesystem.denyRead[0]")
    assert str(err) == "fs.read denied: ~/.ssh/id_rsa (denyRead '~/.ssh')"
    assert err.errno == 13 and err.filename == "~/.ssh/id_rsa"


def test_load_policy_signature() -> None:
    params = inspect.signature(capgate.load_policy).parameters
    assert list(params)[:1] == ["path"]
    assert {"workspace", "allow_user_expansion"} <= set(params)


def test_fs_functions() -> None:
    for name in ("read_text", "read_bytes", "write_text", "write_bytes", "open", "listdir", "exists", "stat",
                 "mkdir", "remove", "rename", "rmtree"):
        assert callable(getattr(fs, name)), name


def test_net_and_proc_functions() -> None:
    for name in ("check", "connect", "fetch"):
        assert callable(getattr(net, name)), name
    assert callable(proc.run)
    params = inspect.signature(proc.run).parameters
    assert {"cwd", "env", "input", "timeout"} <= set(params)
    fetch = inspect.signature(net.fetch).parameters
    assert {"method", "headers", "data", "timeout", "max_bytes"} <= set(fetch)
    endpoint = net.Endpoint("example.org", 443, ("93.184.215.14",))
    assert (endpoint.host, endpoint.port, endpoint.addresses) == ("example.org", 443, ("93.184.215.14",))
    response = net.Response(200, "OK", net.Headers([("Content-Type", "text/plain; charset=latin-1")]), b"caf\xe9",
                            "http://127.0.0.1/")
    assert (response.status, response.headers["content-type"], response.body) == (200, "text/plain; charset=latin-1",
                                                                                  b"caf\xe9")
    assert response.text() == "café"


def test_decision_is_frozen(workspace: object) -> None:
    d = capgate.Decision(False, "r", "x")
    try:
        d.allowed = True  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("Decision must be frozen")
    assert d.allowed is False
