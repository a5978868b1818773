"""Review round 3: the soft sandbox's kernel layer (Landlock) and the launcher, attacked from a
child started by the real ``capgate run --backend soft``.

Each test asserts the secure behaviour, so it fails while the hole exists. A non-Python launched
command stands for native agent code (the hooks do not see it; the kernel layer is what is
claimed to hold for it), exactly as in ``test_soft_kernel_layer.py``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from capgate._sys import landlock
from tests.integration._soft_helpers import capgate_run, write_policy

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock"),
]
PY = sys.executable
CANARY = "CANARY-id_rsa-5f0c1e7a"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    os.chmod(ws / "src" / "app.py", 0o644)
    return ws


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(CANARY + "\n")
    return home


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed")
    return found


# -- 1. metadata changes outside the write roots: Landlock has no right for them ----------------
@pytest.mark.xfail(strict=True, reason=(
    "known limit: Landlock has no right for chmod/chown/utime/xattr/chattr, and a seccomp filter cannot "
    "tell paths inside the write roots from others; the hooks check these for Python, a non-Python child "
    "can change metadata of files its user owns (README, threat model)"))
@pytest.mark.parametrize("case", ["chmod", "chown", "utime", "chattr-append-only"])
def test_native_child_cannot_change_metadata_outside_the_write_roots(ws: Path, home: Path, case: str) -> None:
    target = ws / "src" / "app.py"
    before = target.stat()
    argv = {
        "chmod": [_tool("chmod"), "4777", "src/app.py"],
        "chown": [_tool("chown"), "4321:4321", "src/app.py"],
        "utime": [_tool("touch"), "-d", "2001-01-01", "src/app.py"],
        "chattr-append-only": [_tool("chattr"), "+a", "src/app.py"],
    }[case]
    try:
        capgate_run(["run", "--backend", "soft", "--", *argv], home=home, cwd=ws)
        after = target.stat()
        flags = subprocess.run([_tool("lsattr"), "-d", str(target)], capture_output=True, text=True).stdout
        assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode), "mode changed outside the write roots"
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid), "owner changed outside the write roots"
        assert int(after.st_mtime) == int(before.st_mtime), "mtime changed outside the write roots"
        assert "a" not in flags.split()[0], f"append-only flag set outside the write roots: {flags}"
    finally:
        subprocess.run(["chattr", "-a", str(target)], capture_output=True)


# -- 2. a block device node made inside a write root writes anywhere ----------------------------
def test_native_child_cannot_write_outside_through_a_device_node_in_output(ws: Path, home: Path,
                                                                            tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the child can only mknod a device as root")
    losetup = _tool("losetup")
    backing = tmp_path / "outside-disk.img"  # stands for /dev/vda: a file outside every write root
    backing.write_bytes(b"\0" * 65536)
    made = subprocess.run([losetup, "-f", "--show", str(backing)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device: {made.stderr.strip()}")
    loop = made.stdout.strip()
    try:
        rdev = os.stat(loop).st_rdev
        mk = capgate_run(["run", "--backend", "soft", "--", _tool("mknod"), "output/disk", "b",
                          str(os.major(rdev)), str(os.minor(rdev))], home=home, cwd=ws)
        node = ws / "output" / "disk"
        if node.exists() or node.is_symlink():
            capgate_run(["run", "--backend", "soft", "--", _tool("dd"), "of=output/disk", "conv=notrunc,fsync"],
                        home=home, cwd=ws, stdin=b"PWNED-THROUGH-BLOCK-DEVICE\n")
    finally:
        subprocess.run([losetup, "-d", loop], capture_output=True)
    assert not backing.read_bytes().startswith(b"PWNED"), "a file outside the write roots was written"
    assert not (node.exists() and stat.S_ISBLK(node.stat().st_mode)), (
        "a block device node was created in output/: " + mk.stderr[-300:])


# -- 3/4. an allowed command (git, the design's own example) is outside the gate's net and fs ----
class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_allowed_git_cannot_reach_a_loopback_server_with_the_network_off(ws: Path, home: Path) -> None:
    _tool("git")
    _Recorder.hits = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        agent = ws / "agent.py"
        agent.write_text(textwrap.dedent(f"""
            import subprocess
            r = subprocess.run(["git", "ls-remote", "http://127.0.0.1:{port}/leak.git"], capture_output=True,
                               text=True, timeout=30)
            print("git exit", r.returncode)
        """))
        policy = write_policy(ws, {"process": {"allowedCommands": ["git"]}})  # network: defaults (off)
        proc = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--",
                            PY, str(agent)], home=home, cwd=ws)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert _Recorder.hits == [], f"loopback server reached with network off: {_Recorder.hits} {proc.stdout}"


def test_allowed_git_cannot_print_the_home_secret(ws: Path, home: Path) -> None:
    _tool("git")
    agent = ws / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import subprocess
        r = subprocess.run(["git", "diff", "--no-index", "/dev/null", {str(home / ".ssh" / "id_rsa")!r}],
                           capture_output=True, text=True, timeout=30)
        print(r.stdout)
    """))
    policy = write_policy(ws, {"process": {"allowedCommands": ["git"]}})
    proc = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--",
                        PY, str(agent)], home=home, cwd=ws)
    assert CANARY not in proc.stdout, "the denyRead ~/.ssh secret was printed through an allowed command"


# -- 5. signals leave the sandbox: the child kills the launcher, erasing its audit --------------
KILLER = r"""
my $p = getppid();
for (1..8) {
  open(my $f, "<", "/proc/$p/cmdline") or last; local $/; my $c = <$f>; close $f;
  if ($c =~ /capgate\0run/) { print "launcher $p\n"; kill 'KILL', $p; sleep 3; exit 0 }
  open(my $s, "<", "/proc/$p/stat") or last; my $st = <$s>; close $s;
  $st =~ /\) \S+ (\d+)/ or last; $p = $1;
}
print "launcher not found\n";
"""


def test_native_child_cannot_kill_the_launcher_and_erase_its_audit(ws: Path, home: Path, tmp_path: Path) -> None:
    perl = _tool("perl")
    launcher_tmp = tmp_path / "launcher-tmp"
    launcher_tmp.mkdir()
    script = tmp_path / "killer.pl"
    script.write_text(KILLER)
    proc = capgate_run(["run", "--backend", "soft", "--", perl, str(script)], home=home, cwd=ws,
                       env_extra={"TMPDIR": str(launcher_tmp)})
    leftovers = sorted(p.name for p in launcher_tmp.iterdir())
    shutil.rmtree(launcher_tmp, ignore_errors=True)
    assert proc.returncode != -9, "the child SIGKILLed the launcher: " + proc.stdout
    logs = sorted((home / ".local" / "state" / "capgate" / "audit").glob("*.jsonl"))
    events = [json.loads(line).get("event") for log in logs for line in log.read_text().splitlines() if line.strip()]
    assert "run.start" in events and "run.end" in events, f"audit records lost: {events}"
    assert leftovers == [], f"the run directory was left behind in the launcher's TMPDIR: {leftovers}"
