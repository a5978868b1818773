"""What capgate ships, built the way scripts/build.sh builds it (offline, from the wheelhouse
scripts/test.sh fetched and hash-checked): the wheel and the sdist hold the package and
nothing else (no tests, no caches), capgate.pyz runs the demo with interpreters that have
nothing installed, and the development install prints no warning."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import SECRET

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not any(WHEELHOUSE.glob("pydantic_core-*")):
        message = ("no .cache/wheelhouse: scripts/test.sh fetches it "
                   "(BUILD_VENV=.venv bash scripts/build.sh --fetch-only)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "PEX_"))}
    env["BUILD_VENV"] = sys.prefix  # the test environment holds the locked build tools (test.txt)
    done = subprocess.run(["bash", "scripts/build.sh", "--offline", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # It prints the sha256 of what it made, to publish.
    for name in ("capgate.pyz", "capgate-0.1.0-py3-none-any.whl", "capgate-0.1.0.tar.gz"):
        digest = re.search(rf"^([0-9a-f]{{64}})  \S*{re.escape(name)}$", done.stdout, flags=re.M)
        assert digest, done.stdout
        assert digest.group(1) == _sha256(out / name)
    return out


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _junk(name: str) -> bool:
    parts = name.split("/")
    return any(p in ("__pycache__", "tests", ".cache", ".venv", ".git", "dist", "build") for p in parts) or (
        name.endswith((".pyc", ".pyo", ".pyz")))


def test_the_wheel_holds_the_package_and_nothing_else(built: Path) -> None:
    with zipfile.ZipFile(built / "capgate-0.1.0-py3-none-any.whl") as whl:
        names = whl.namelist()
        entry_points = whl.read("capgate-0.1.0.dist-info/entry_points.txt").decode()
    assert all(n.startswith(("capgate/", "capgate-0.1.0.dist-info/")) for n in names), names
    assert not [n for n in names if _junk(n)]
    # Everything on disk is in it: the package, the wrappers (as capgate.wrappers, never bare),
    # the typing marker and the attack corpus.
    on_disk = {f"capgate/{p.relative_to(ROOT / 'capgate')}" for p in (ROOT / "capgate").rglob("*.py")
               if "__pycache__" not in p.parts}
    on_disk |= {f"capgate/wrappers/{p.relative_to(ROOT / 'wrappers')}" for p in (ROOT / "wrappers").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert on_disk <= set(names), on_disk - set(names)
    assert {"capgate/py.typed", "capgate/wrappers/httpx.py"} <= set(names)
    corpus = {f"capgate/testing/corpus/{p.name}" for p in (ROOT / "capgate" / "testing" / "corpus").glob("*.json")}
    assert corpus and corpus <= set(names)
    assert "capgate = capgate.cli:console_main" in entry_points
    assert "capgate = capgate.testing.plugin" in entry_points


def test_the_sdist_holds_the_sources_and_no_caches(built: Path) -> None:
    with tarfile.open(built / "capgate-0.1.0.tar.gz") as sdist:
        names = [m.name.removeprefix("capgate-0.1.0/") for m in sdist.getmembers() if m.isfile()]
    assert not [n for n in names if _junk(n)], names
    assert {"pyproject.toml", "README.md", "src/capgate/__init__.py", "src/capgate/wrappers/mcp.py"} <= set(names)


def _pythons() -> list[str]:
    """The CPython 3.10+ interpreters on this machine, one per version (their real binaries)."""
    found: dict[str, str] = {}
    for name in ("python3.10", "python3.11", "python3.12", "python3.13", "python3.14", "/usr/bin/python3"):
        exe = shutil.which(name)
        if exe is None:
            continue
        probe = subprocess.run([exe, "-I", "-c", "import sys; print(sys.version.split()[0], sys.executable)"],
                               capture_output=True, text=True, timeout=60, check=False)
        if probe.returncode != 0:
            continue
        version, real = probe.stdout.split()
        if tuple(int(x) for x in version.split(".")[:2]) >= (3, 10):
            found.setdefault(version, real)
    return list(found.values())


def _bare(python: str, where: Path) -> str:
    """A virtual environment with nothing installed, not even pip."""
    subprocess.run([python, "-I", "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    return str(where / "bin" / "python")


def _agent_lines(stdout: str) -> list[str]:
    """The demo agent's verdict lines, the per-run directory's name made comparable."""
    lines = [line for line in stdout.splitlines() if line.startswith(("  ALLOWED", "  DENIED"))]
    return [re.sub(r"capgate-run-\d+-\w+", "capgate-run-N", line) for line in lines]


def test_the_pyz_runs_the_demo_with_pythons_that_have_nothing_installed(built: Path, tmp_path: Path,
                                                                         fake_home: Path) -> None:
    pythons = _pythons()
    assert pythons
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "PEX_", "PYTHON"))}
    env.pop("XDG_STATE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(fake_home)  # a first run, nothing cached: the file unpacks itself under ~/.cache/pex
    ws = tmp_path / "demo_ws"
    shutil.copytree(ROOT / "examples" / "demo_ws", ws)

    def demo(argv: list[str]) -> subprocess.CompletedProcess[str]:
        shutil.rmtree(ws / "output", ignore_errors=True)
        return subprocess.run([*argv, "run", "--workspace", str(ws), "--", "/usr/bin/python3", str(ws / "agent.py")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)

    # What the demo prints from the development install, to compare with.
    reference = demo([sys.executable, "-m", "capgate"])
    assert reference.returncode == 0, reference.stderr
    expected = _agent_lines(reference.stdout)
    assert len(expected) == 10 and sum(line.startswith("  DENIED") for line in expected) == 8, reference.stdout
    for i, python in enumerate(pythons):
        bare = _bare(python, tmp_path / f"bare{i}")
        nothing = subprocess.run([bare, "-I", "-c", "import pydantic"], capture_output=True, timeout=60, check=False)
        assert nothing.returncode != 0, f"{python}: pydantic is importable without the pyz"  # (the control)
        done = demo([bare, "-I", str(built / "capgate.pyz")])
        assert done.returncode == 0, (python, done.stderr)
        assert _agent_lines(done.stdout) == expected, (python, done.stdout)
        assert "capgate: 8 denied" in done.stderr, (python, done.stderr)
        assert SECRET not in done.stdout + done.stderr
        assert (ws / "output" / "report.md").exists()


def test_the_pyz_carries_every_command(built: Path, tmp_path: Path, fake_home: Path) -> None:
    python = _bare(_pythons()[0], tmp_path / "bare")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "PEX_"))}
    env.update(HOME=str(fake_home), PEX_ROOT=str(tmp_path / "pex-root"))
    pyz = [python, "-I", str(built / "capgate.pyz")]

    def capgate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*pyz, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                              input=stdin, check=False)

    assert capgate("--version").stdout.strip() == "capgate 0.1.0"
    denied = capgate("check", "fs.read", str(fake_home / ".ssh" / "id_rsa"))
    assert denied.returncode == 1 and denied.stdout.startswith("deny: fs.read")
    allowed = capgate("check", "--workspace", str(tmp_path), "fs.read", str(tmp_path / "notes.txt"))
    assert allowed.returncode == 0 and allowed.stdout.startswith("allow: fs.read")  # the control
    assert capgate("init", "-o", str(tmp_path / "agent-permissions.json")).returncode == 0
    valid = capgate("policy", "validate", "--workspace", str(tmp_path))
    assert valid.returncode == 0, valid.stderr
    assert '"backend"' in capgate("doctor", "--json").stdout
    # The MCP server (the mcp extra is inside): an initialize request gets its answer.
    hello = ('{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", '
             '"capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}\n')
    served = capgate("mcp", "--workspace", str(tmp_path), stdin=hello)
    assert '"id":1' in served.stdout.replace(" ", "") and "serverInfo" in served.stdout, served.stdout + served.stderr


def test_the_development_install_prints_no_warning(tmp_path: Path) -> None:
    """scripts/test.sh's ``pip install -e .``: pip prints each warning the build backend raises
    (BuildBackendWarning). Built here through the same hook (PEP 660, pyproject_hooks, no
    isolation), with the warnings recorded: a layout setuptools installs through its import
    finder raises its "Editable installation" notice."""
    code = (
        "import sys, warnings\n"
        "from build import ProjectBuilder\n"
        "from pyproject_hooks import quiet_subprocess_runner\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    path = ProjectBuilder(sys.argv[1], runner=quiet_subprocess_runner).build('editable', sys.argv[2])\n"
        "for w in caught:\n"
        "    print('WARNING:', w.category.__name__, str(w.message).strip().splitlines()[0])\n"
        "print(path)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stdout, done.stdout
    with zipfile.ZipFile(done.stdout.strip().splitlines()[-1]) as whl:
        pth = [n for n in whl.namelist() if n.endswith(".pth")]
        assert len(pth) == 1 and not [n for n in whl.namelist() if n.endswith("finder.py")]
        # One path on sys.path, holding capgate alone (not the repository's root).
        assert whl.read(pth[0]).decode().strip() == str(ROOT / "src")


def test_a_wheel_that_is_not_the_locked_one_stops_the_build(tmp_path: Path) -> None:
    """A tampered (or substituted) file in the wheelhouse fails pip's hash check before
    anything is built; the untouched wheelhouse (the ``built`` fixture) is the control."""
    if not any(WHEELHOUSE.glob("idna-*.whl")):
        pytest.skip("no .cache/wheelhouse (scripts/test.sh fetches it)")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for path in WHEELHOUSE.iterdir():
        if path.name.startswith("idna-"):
            (wheelhouse / path.name).write_bytes(path.read_bytes() + b"\0")  # one byte more, still a zip
        elif path.is_file():
            try:
                os.link(path, wheelhouse / path.name)
            except OSError:  # another file system
                shutil.copy2(path, wheelhouse / path.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX", "PEX_"))}
    env.update(BUILD_VENV=sys.prefix, WHEELHOUSE=str(wheelhouse))
    done = subprocess.run(["bash", "scripts/build.sh", "--offline", "--out", str(tmp_path / "out")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in done.stderr and "idna" in done.stderr, done.stderr
    assert not (tmp_path / "out" / "capgate.pyz").exists()
