"""The hash-locked requirement files (requirements/*.txt, made by scripts/lock.sh) agree with
pyproject.toml and requirements/build.in: every declared dependency is pinned to a version its
range admits, nothing is pinned for capgate that it no longer declares, every pin carries
hashes, and the three files agree on each version. A dependency changed in pyproject.toml
without running scripts/lock.sh fails here, before an install with --require-hashes does."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
VIA_PYPROJECT = "capgate (pyproject.toml)"
VIA_BUILD_IN = "-r requirements/build.in"


@dataclass
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def parse_lock(text: str) -> list[Pin]:
    """uv's ``pip compile --generate-hashes`` output: ``name==version [; marker] \\``, then
    ``--hash=sha256:...`` lines, then ``# via X`` or ``# via`` + ``#   X`` lines."""
    pins: list[Pin] = []
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith((" ", "\t")) and not line.startswith("#"):
            req = Requirement(line.rstrip("\\").strip())
            (spec,) = req.specifier
            assert spec.operator == "==", f"not pinned: {line}"
            pins.append(Pin(canonicalize_name(req.name), Version(spec.version), req.marker))
            in_via = False
        elif line.startswith("--hash="):
            pins[-1].hashes.append(line.removeprefix("--hash=").rstrip("\\").strip())
        elif line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                pins[-1].via.append(rest)
        elif in_via and line.startswith("#   "):
            pins[-1].via.append(line.removeprefix("#").strip())
    return pins


def lock(name: str) -> list[Pin]:
    return parse_lock((REQ / name).read_text(encoding="utf-8"))


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]  # type: ignore[no-any-return]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["dependencies"]]  # type: ignore[attr-defined]


def extra_requirements(extra: str) -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["optional-dependencies"][extra]]  # type: ignore[index]


def build_in_requirements() -> list[Requirement]:
    lines = (REQ / "build.in").read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in (x.split("#")[0].strip() for x in lines) if line]


def assert_satisfied(pins: list[Pin], wanted: list[Requirement], lock_name: str) -> None:
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
    for req in wanted:
        found = by_name.get(canonicalize_name(req.name))
        assert found, f"{req} is declared but not in requirements/{lock_name}: run scripts/lock.sh"
        for pin in found:
            assert pin.version in SpecifierSet(str(req.specifier)), (
                f"requirements/{lock_name} pins {pin.name}=={pin.version}, outside {req}: run scripts/lock.sh")


def direct_names(pins: list[Pin], via: str) -> set[str]:
    return {pin.name for pin in pins if via in pin.via}


@pytest.mark.parametrize("name", ["runtime.txt", "test.txt", "pyz.txt", "build.txt", "lock-tools.txt",
                                  "test-workloads.txt"])
def test_every_pin_is_exact_and_hashed(name: str) -> None:
    pins = lock(name)
    assert pins
    for pin in pins:
        assert pin.hashes, f"{pin.name} has no --hash in requirements/{name}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin


def test_runtime_lock_is_exactly_the_declared_dependencies() -> None:
    pins = lock("runtime.txt")
    declared = runtime_requirements()
    assert_satisfied(pins, declared, "runtime.txt")
    # Both ways: a dependency dropped from pyproject.toml must leave the lock too.
    assert direct_names(pins, VIA_PYPROJECT) == {canonicalize_name(r.name) for r in declared}


def test_test_lock_holds_the_runtime_the_test_extra_and_the_build_tools() -> None:
    pins = lock("test.txt")
    wanted = runtime_requirements() + extra_requirements("test")
    assert_satisfied(pins, wanted, "test.txt")
    assert_satisfied(pins, build_in_requirements(), "test.txt")
    assert direct_names(pins, VIA_PYPROJECT) == {canonicalize_name(r.name) for r in wanted}
    assert direct_names(pins, VIA_BUILD_IN) == {canonicalize_name(r.name) for r in build_in_requirements()}


def test_pyz_lock_holds_the_runtime_and_the_mcp_extra() -> None:
    pins = lock("pyz.txt")
    wanted = runtime_requirements() + extra_requirements("mcp")
    assert_satisfied(pins, wanted, "pyz.txt")
    assert direct_names(pins, VIA_PYPROJECT) == {canonicalize_name(r.name) for r in wanted}


def test_build_lock_holds_the_build_tools() -> None:
    pins = lock("build.txt")
    assert_satisfied(pins, build_in_requirements(), "build.txt")
    assert direct_names(pins, VIA_BUILD_IN) == {canonicalize_name(r.name) for r in build_in_requirements()}
    # The backend pyproject.toml builds with is one of them (installs use --no-build-isolation).
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]
    assert_satisfied(pins, [Requirement(r) for r in build_system["requires"]], "build.txt")


def test_the_locks_agree_on_every_version() -> None:
    everything = lock("test.txt")
    versions: dict[str, set[Version]] = {}
    for pin in everything:
        versions.setdefault(pin.name, set()).add(pin.version)
    for name in ("runtime.txt", "pyz.txt", "build.txt"):
        for pin in lock(name):
            assert pin.version in versions.get(pin.name, set()), (
                f"requirements/{name} pins {pin.name}=={pin.version}; test.txt has {versions.get(pin.name)}")


def test_a_dependency_changed_in_pyproject_is_caught() -> None:
    # The check above, fed a pyproject that asks for more than the lock holds.
    pins = lock("runtime.txt")
    with pytest.raises(AssertionError, match=r"run scripts/lock\.sh"):
        assert_satisfied(pins, [Requirement("pydantic>=99")], "runtime.txt")
    with pytest.raises(AssertionError, match="not in requirements"):
        assert_satisfied(pins, [Requirement("a-new-dependency>=1")], "runtime.txt")
    assert_satisfied(pins, [Requirement("pydantic>=2")], "runtime.txt")  # the benign control


def test_the_scripts_install_with_require_hashes() -> None:
    pip_fetch = re.compile(r"""(\bpip|\$\{pip\[@\]\}")\s+(install|download)\b""")
    for script, lock_file in (("scripts/test.sh", "requirements/test.txt"),
                              ("scripts/demo.sh", "requirements/runtime.txt"),
                              ("scripts/build.sh", "requirements/build.txt")):
        text = (ROOT / script).read_text(encoding="utf-8").replace("\\\n", " ")
        commands = [" ".join(line.split()) for line in text.splitlines() if not line.lstrip().startswith("#")]
        fetches = [c for c in commands if pip_fetch.search(c)]
        assert fetches, script
        for command in fetches:
            # Either hash-checked from a lock, or capgate itself, built from the checkout with nothing fetched.
            assert ("--require-hashes" in command) or ("--no-deps" in command and "--no-build-isolation" in command), (
                script, command)
        assert any(f"--require-hashes -r {lock_file}" in c for c in fetches), script
