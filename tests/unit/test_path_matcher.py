"""The fast deny matcher agrees with pathspec's gitignore semantics (its reference)."""

from __future__ import annotations

import random

import pathspec
import pytest

from capgate.paths import PathMatcher, anchor_pattern

PATTERNS = [
    ".env*", "*.pem", "id_rsa*", ".bashrc", "secrets/", "*.tar.gz", "a?c", "[ab]x", "**/.git/hooks/",
    "**/.git/modules/**/hooks/", "/home/u/.ssh", "/home/u/.docker/config.json", "/ws/gen/*/x.key",
    "/ws/deep/**/y", "/ws/lit/", "/ws/cache*/z", "node_*", "*~", "**/gen/a", "**/deep/**/z/",
]
NAMES = ["home", "u", ".ssh", "ws", "gen", "a", "x.key", "deep", "y", "lit", "cache1", "z", ".env", ".envrc",
         "k.pem", "id_rsa.pub", ".bashrc", "secrets", "f.tar.gz", "abc", "bx", ".git", "hooks", "modules", "m",
         "node_modules", "file~", "config.json", ".docker", "src", "app.py"]


def _reference(patterns: list[str], path: str) -> bool:
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    rel = path[1:]
    # A path is denied if it or any ancestor matches (as file or as directory).
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if spec.match_file(prefix) or spec.match_file(prefix + "/"):
            return True
    return False


def test_matcher_agrees_with_pathspec_reference() -> None:
    rng = random.Random(1234)
    matcher = PathMatcher([(p,) for p in PATTERNS])
    checked = denied = 0
    for _ in range(4000):
        depth = rng.randint(1, 6)
        path = "/" + "/".join(rng.choice(NAMES) for _ in range(depth))
        expected = _reference(PATTERNS, path)
        assert matcher.matches(path) == expected, path
        first = matcher.first_match(path)
        assert (first is not None) == expected, path
        if expected:  # the rule reported is the first pattern, in policy order, that matches
            assert first == min(i for i, p in enumerate(PATTERNS) if _reference([p], path)), path
        checked += 1
        denied += expected
    assert denied > 500 and checked - denied > 500  # both outcomes exercised


@pytest.mark.parametrize("path,expected", [
    ("/home/u/.ssh", True), ("/home/u/.ssh/id", True), ("/home/u/.sshx", False), ("/ws/src/.env.local", True),
    ("/ws/src/environment", False), ("/ws/.git/hooks/pre-commit", True), ("/ws/.git/hooksx", False),
    ("/ws/gen/any/x.key", True), ("/ws/gen/x.key", False), ("/ws/secrets", True), ("/ws/my-secrets/x", False),
])
def test_matcher_examples(path: str, expected: bool) -> None:
    matcher = PathMatcher([(p,) for p in PATTERNS])
    assert matcher.matches(path) is expected


def test_anchor_forms() -> None:
    ws, home = "/w s/[x]", "/home/u"
    assert anchor_pattern(".env*", ws, home, "k") == (".env*",)
    assert anchor_pattern("~/.ssh", ws, home, "k") == ("/home/u/.ssh",)
    assert anchor_pattern("src/secret/", ws, home, "k") == ("/w s/\\[x\\]/src/secret/",)
    assert anchor_pattern("/etc/*.conf", ws, home, "k") == ("/etc/*.conf",)
    assert anchor_pattern("**/.git/config", ws, home, "k") == ("**/.git/config",)
    for bad in ("!x", "/", "a/../b"):
        with pytest.raises(ValueError):
            anchor_pattern(bad, ws, home, "k")
