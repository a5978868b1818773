"""The README's main command: the demo agent under ``capgate run`` (soft sandbox), end to end.

Runs on a copy of ``examples/demo_ws`` with a fake HOME holding a real-looking SSH key, so
the test proves the demo's claims: honest work succeeds, every hostile step is denied, the key
never comes back, nothing is planted, and the summary lists the denials.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import SECRET
from tests.integration._soft_helpers import PY, audit_lines, capgate_run

REPO = Path(__file__).resolve().parents[2]


def test_demo_agent_under_the_soft_sandbox(tmp_path: Path, fake_home: Path) -> None:
    ws = tmp_path / "demo_ws"
    shutil.copytree(REPO / "examples" / "demo_ws", ws)
    source_before = (ws / "src" / "app.py").read_bytes()
    result = capgate_run(["run", "--backend", "soft", "--workspace", str(ws), "--", PY, str(ws / "agent.py")],
                         home=fake_home, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "SOFT_SANDBOX=true" in result.stderr
    assert "ALLOWED  read src/app.py" in result.stdout
    assert "ALLOWED  write output/report.md" in result.stdout
    assert (ws / "output" / "report.md").read_text().startswith("# Report")
    hostile = [line for line in result.stdout.splitlines() if line.startswith("  ") and "ALLOWED" not in line]
    assert len(hostile) == 8, result.stdout
    assert all(line.startswith("  DENIED") for line in hostile), result.stdout
    assert SECRET not in out
    assert "demo-secret-never-printed" not in out
    assert not (tmp_path / "planted.txt").exists()
    assert (ws / "src" / "app.py").read_bytes() == source_before
    assert "8 denied" in result.stderr
    denied = {(e.get("op"), e.get("decision")) for e in audit_lines(fake_home) if e.get("decision") == "deny"}
    assert {("fs.read", "deny"), ("fs.write", "deny"), ("net.connect", "deny"), ("proc.exec", "deny")} <= denied


def test_demo_on_the_namespace_backend_and_its_native_helper(tmp_path: Path, fake_home: Path) -> None:
    """scripts/demo.sh's two runs on the backend auto picks here (namespace): the Python agent
    is refused exactly as under soft, and the native helper (head, unseen by any hook) reads
    the workspace's .env as empty and cannot reach /etc/shadow or the real HOME's key."""
    from tests._namespace_helpers import require_namespace_backend

    require_namespace_backend()
    ws = tmp_path / "demo_ws"
    shutil.copytree(REPO / "examples" / "demo_ws", ws)
    agent = capgate_run(["run", "--backend", "namespace", "--workspace", str(ws), "--", PY, str(ws / "agent.py")],
                        home=fake_home, cwd=tmp_path)
    assert agent.returncode == 0, agent.stderr
    hostile = [line for line in agent.stdout.splitlines() if line.startswith("  ") and "ALLOWED" not in line]
    assert len(hostile) == 8 and all(line.startswith("  DENIED") for line in hostile), agent.stdout
    assert "backend: namespace" in agent.stderr and "8 denied" in agent.stderr
    native = capgate_run(["run", "--backend", "namespace", "--workspace", str(ws), "--", "/usr/bin/head", "-n", "2",
                          ".env", "/etc/shadow", str(fake_home / ".ssh" / "id_rsa"), "src/app.py"],
                         home=fake_home, cwd=tmp_path)
    out = native.stdout + native.stderr
    assert "==> .env <==\n\n" in native.stdout  # covered: an empty file
    assert "demo-secret-never-printed" not in out and SECRET not in out
    assert "cannot open '/etc/shadow'" in native.stderr
    assert f"cannot open '{fake_home / '.ssh' / 'id_rsa'}'" in native.stderr
    assert '"""A tiny module' in native.stdout  # control: the source file reads
    # Control: the same native helper under soft reads .env (Landlock cannot deny a name
    # inside a read root): the namespace result above is the view's doing.
    soft = capgate_run(["run", "--backend", "soft", "--workspace", str(ws), "--", "/usr/bin/head", "-n", "2", ".env"],
                       home=fake_home, cwd=tmp_path)
    assert "demo-secret-never-printed" in soft.stdout
