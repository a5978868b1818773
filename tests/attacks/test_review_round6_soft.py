"""Review round 6 (adversarial, soft sandbox): holes found in today's soft-sandbox code, each a
real ``capgate run`` child. All five are fixed; the tests stay as regression tests, each with
a benign control beside it (and a few added for the rest of each hole's class).

1. An ``os.PathLike`` whose ``__fspath__`` answers differently the second time: the C code
   converts the path once and raises the audit event with the *original object*; the hooks
   call ``os.fspath`` again (``_text_path``) and judge the second answer. ``os.open`` is wrapped
   against exactly this (its docstring says so), but ``io.FileIO`` is not: read ``.env``,
   write ``output/.bashrc`` and ``output/.git/config``; the audit log says "allow" for a path
   never touched. (``os.mkdir``/``os.rename`` hold: their events carry the converted path.)
2. The bind probe's deaf socket: the hook deafens the descriptor *number* it is given, then
   returns; another thread ``dup2``s a fresh socket onto that number before the real
   ``bind``, which binds the undeafened socket: a server that accepts TCP connections.
3. A Python child installed with ``--prefix=$HOME`` (``~/bin/python3.N`` +
   ``~/lib/python3.N/os.py``): ``_interpreter_roots`` adds the whole prefix, i.e. HOME, to the
   Landlock read roots; a native program the policy allows (``cat``) reads ``~/.ssh/id_rsa``.
4. A launched ``git status`` (and a child's git) in a hostile repository runs the
   repository's own ``.git/hooks/post-index-change``: the git-config check lists only
   configuration, and neither a launched nor a child's git gets ``GIT_ENV``'s
   ``core.hooksPath=/dev/null`` (``proc.run``'s git does).
5. ``os.open(name, dir_fd=N)``: the wrapper's hint is the number N; another thread ``dup2``s a
   different directory onto N between the hook's lookup and the real ``openat`` (the check/use
   race the soft docstring admits, made cheap: it wins within a few dozen tries).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY, audit_lines, capgate_run, empty_home, write_policy

SECRET = "DOTENV-SECRET-round6-91f3"
KEY = "SSH-KEY-round6-4b7e"

# -- 1. a path-like object that answers twice -----------------------------------------------
TWO_FACED = """
import io, os, pathlib, shutil, sqlite3
class TwoFaced:
    \"\"\"The first __fspath__ (the C conversion that really opens) names the target; every
    later one (the hook's) names a harmless file.\"\"\"
    def __init__(self, real, shown):
        self.calls, self.real, self.shown = 0, real, shown
    def __fspath__(self):
        self.calls += 1
        return self.real if self.calls == 1 else self.shown

def attempt(label, action):
    try:
        result = action()
    except PermissionError as exc:
        print(label, "blocked", getattr(exc, "rule", type(exc).__name__), flush=True)
    except Exception as exc:
        print(label, "error", type(exc).__name__, exc, flush=True)
    else:
        print(label, "DONE", repr(result)[:60], flush=True)

# controls: the same targets by plain name are refused by the hooks
attempt("control-read", lambda: open(".env").read())
attempt("control-write", lambda: open("output/.bashrc", "w").write("x"))
attempt("control-mkdir", lambda: os.mkdir("output/.git/hooks"))
attempt("control-plain", lambda: io.FileIO("plain.txt").read())
attempt("control-pathlib", lambda: io.FileIO(pathlib.Path("plain.txt")).read())
attempt("control-pathlib-write", lambda: io.FileIO(pathlib.Path("output/fine"), "w").write(b"ok"))
attempt("control-sqlite-pathlib", lambda: sqlite3.connect(pathlib.Path("output/db.sqlite")).close())
attempt("control-rmtree-pathlib", lambda: (os.makedirs("output/tree/sub"), shutil.rmtree(pathlib.Path("output/tree"))))
# the attacks
attempt("fileio-read", lambda: io.FileIO(TwoFaced(".env", "plain.txt")).read())
attempt("fileio-write", lambda: io.FileIO(TwoFaced("output/.bashrc", "output/ok1"), "w").write(b"evil"))
attempt("fileio-gitconfig", lambda: io.FileIO(TwoFaced("output/.git/config", "output/ok3"), "w").write(b"[core]\\n"))
# the same class: a str subclass whose __str__/__fspath__ name a decoy (C uses the content),
# and a two-faced word in a command line (judged once, converted again to run)
class Decoy(str):
    def __str__(self):
        return "output/ok5"
    __fspath__ = __str__
    def encode(self, *args, **kwargs):
        return b"output/ok5"
attempt("strsub-write", lambda: open(Decoy("output/.bashrc"), "w").write("evil"))
attempt("strsub-mkdir", lambda: os.mkdir(Decoy("output/.git/hooks")))
attempt("argv", lambda: __import__("subprocess").run(["/bin/echo", TwoFaced("a", "b")]))
# (held: the os.* path events get the converted path, not the object)
attempt("mkdir", lambda: os.mkdir(TwoFaced("output/.git/hooks", "output/ok2")))
open("output/staged", "w").write("#!/bin/sh\\n")
attempt("rename", lambda: os.rename("output/staged", TwoFaced("output/.git/hooks", "output/ok4")))
"""


def _two_faced_world(tmp_path: Path) -> tuple[Path, Path]:
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output" / ".git").mkdir(parents=True)
    (ws / ".env").write_text(SECRET + "\n")
    (ws / "plain.txt").write_text("plain\n")
    return home, ws


def _results(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        label, _, rest = line.partition(" ")
        out[label] = rest
    return out


def test_two_faced_pathlike_controls_are_refused(tmp_path: Path) -> None:
    """The control: by plain name, every target of the attack below is refused."""
    home, ws = _two_faced_world(tmp_path)
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(TWO_FACED))
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)
    got = _results(proc.stdout)
    assert got["control-read"].startswith("blocked"), proc.stdout + proc.stderr
    assert got["control-write"].startswith("blocked"), proc.stdout + proc.stderr
    assert got["control-mkdir"].startswith("blocked"), proc.stdout + proc.stderr
    # the honest spellings work: a str, and the standard library's own pathlib objects
    for label in ("control-plain", "control-pathlib", "control-pathlib-write", "control-sqlite-pathlib",
                  "control-rmtree-pathlib"):
        assert got[label].startswith("DONE"), proc.stdout + proc.stderr
    # os.mkdir / os.rename with the same two-faced object hold (judged on the converted path)
    assert got["mkdir"].startswith("blocked"), proc.stdout + proc.stderr
    assert got["rename"].startswith("blocked"), proc.stdout + proc.stderr


def test_two_faced_pathlike_cannot_read_dotenv_or_write_hooks(tmp_path: Path) -> None:
    home, ws = _two_faced_world(tmp_path)
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(TWO_FACED))
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)
    got = _results(proc.stdout)
    assert "fileio-read" in got, proc.stdout + proc.stderr
    leaks = {label: got[label] for label in ("fileio-read", "fileio-write", "fileio-gitconfig")
             if got.get(label, "").startswith("DONE")}
    assert SECRET not in proc.stdout, proc.stdout
    assert not (ws / "output" / ".bashrc").exists()
    assert not (ws / "output" / ".git" / "config").exists()
    assert not leaks, leaks
    for label in ("fileio-read", "fileio-write", "fileio-gitconfig", "argv"):
        assert got[label] == "blocked soft.path", proc.stdout + proc.stderr
    for label in ("strsub-write", "strsub-mkdir"):  # judged on the content, which is denied
        assert got[label].startswith("blocked mandatory.denyWrite"), proc.stdout + proc.stderr
    assert not (ws / "output" / ".git" / "hooks").exists()
    # and the audit log never says "allow" for a decoy the process did not touch
    decoys = [e for e in audit_lines(home) if str(e.get("target", "")).endswith(("/ok1", "/ok3", "/ok5"))]
    assert not decoys, decoys


# -- 2. the deaf bind probe, raced with dup2 -------------------------------------------------
BIND_RACE = """
import os, socket, sys, threading
SO_LOCK_FILTER = 44
sys.setswitchinterval(1e-6)

def one_try():
    s = socket.socket()
    fd = s.fileno()
    stop = threading.Event()
    swapped = []
    def swapper():
        # Wait until the hook has locked its filter on descriptor fd, then put a fresh
        # (hearing) socket on that number before the real bind() runs.
        while not stop.is_set():
            probe = socket.socket(fileno=os.dup(fd))
            try:
                locked = probe.getsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER)
            except OSError:
                locked = 0
            probe.close()
            if locked:
                fresh = socket.socket()
                os.dup2(fresh.fileno(), fd)
                fresh.close()
                swapped.append(True)
                return
    t = threading.Thread(target=swapper)
    t.start()
    try:
        s.bind(("127.0.0.1", 0))
    except OSError:
        stop.set(); t.join(); s.close()
        return None
    stop.set(); t.join()
    if swapped and not s.getsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER):
        return s
    s.close()
    return None

for _ in range(300):
    server = one_try()
    if server is not None:
        break
if server is None:
    print("race-lost", flush=True)
    sys.exit(0)
server.listen(1)
server.settimeout(8)
print("port", server.getsockname()[1], flush=True)
try:
    conn, _peer = server.accept()
    print("ACCEPTED", conn.recv(64), flush=True)
except OSError as exc:
    print("no-connection", type(exc).__name__, flush=True)
"""


def test_bind_probe_cannot_be_raced_into_a_server(tmp_path: Path) -> None:
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(BIND_RACE))
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    child = subprocess.Popen([PY, "-m", "capgate", "run", "--workspace", str(ws), "--", PY, str(script)],
                             cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    connected = False
    try:
        assert child.stdout is not None
        first = child.stdout.readline().split()
        if first and first[0] == "port":
            client = socket.socket()
            client.settimeout(2)
            try:
                client.connect(("127.0.0.1", int(first[1])))
                client.sendall(b"from-outside")
                connected = True
                time.sleep(0.5)
            except OSError:
                pass
            finally:
                client.close()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not connected, "a client in another process connected to the sandboxed child"
    assert "ACCEPTED" not in out, out + err


def test_bind_probe_control_plain_server_cannot_bind(tmp_path: Path) -> None:
    """The control: without the race, the same server (bind port 0, listen, accept) never gets
    an address — the probe is answered EADDRNOTAVAIL and nothing is bound — and that is not a
    denial in the audit log."""
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent("""
        import errno, socket
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0)); s.listen(1)
            print("SERVING", s.getsockname()[1], flush=True)
        except OSError as exc:
            print("no-server", errno.errorcode.get(exc.errno), s.getsockname()[1], flush=True)
    """))
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)
    assert "no-server EADDRNOTAVAIL 0" in proc.stdout, proc.stdout + proc.stderr
    assert not [e for e in audit_lines(home) if e.get("decision") == "deny" and e.get("op") == "net.connect"]
    assert [e["decision"] for e in audit_lines(home) if e.get("rule") == "soft.bindProbe"] == ["allow"]


# -- 3. an interpreter installed with --prefix=$HOME ------------------------------------------
SYSTEM_PY = "/usr/bin/python3.11"
CAT = shutil.which("cat") or "/bin/cat"
READ_KEY = """
import subprocess, sys
key = sys.argv[1]
done = subprocess.run([{cat!r}, key], capture_output=True, text=True)
print("cat", done.returncode, done.stdout.strip() or "-", done.stderr.strip()[-60:] or "-", flush=True)
"""


def _home_with_key(tmp_path: Path) -> Path:
    home = empty_home(tmp_path)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(KEY + "\n")
    return home


def _run_key_reader(tmp_path: Path, home: Path, python: str) -> subprocess.CompletedProcess[str]:
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True, exist_ok=True)
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent(READ_KEY.format(cat=os.path.realpath(CAT))))
    # (/usr/lib/python3.11 readable: the --prefix=$HOME install below links its stdlib there)
    policy = write_policy(ws, {"filesystem": {"read": [".", "/usr/lib/python3.11"]},
                               "process": {"allowedCommands": [os.path.realpath(CAT)]}})
    return capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--allow-user-expansion", "--",
                        python, str(script), str(home / ".ssh" / "id_rsa")], home=home, cwd=ws)


needs_system_python = pytest.mark.skipif(not (os.path.exists(SYSTEM_PY) and os.path.isdir("/usr/lib/python3.11")),
                                         reason="needs the system's /usr/bin/python3.11")


@needs_system_python
def test_home_stays_unreadable_to_a_native_child_control(tmp_path: Path) -> None:
    """The control: with an interpreter outside HOME, the kernel layer stops ``cat ~/.ssh/id_rsa``."""
    home = _home_with_key(tmp_path)
    proc = _run_key_reader(tmp_path, home, SYSTEM_PY)
    assert "cat 1" in proc.stdout, proc.stdout + proc.stderr
    assert KEY not in proc.stdout


@needs_system_python
def test_interpreter_prefix_in_home_does_not_open_home(tmp_path: Path) -> None:
    home = _home_with_key(tmp_path)
    # A Python installed with ./configure --prefix=$HOME: ~/bin/python3.11 and ~/lib/python3.11
    (home / "bin").mkdir()
    (home / "lib").mkdir()
    shutil.copy2(SYSTEM_PY, home / "bin" / "python3.11")
    (home / "lib" / "python3.11").symlink_to("/usr/lib/python3.11")
    proc = _run_key_reader(tmp_path, home, str(home / "bin" / "python3.11"))
    assert "cat " in proc.stdout, proc.stdout + proc.stderr
    assert KEY not in proc.stdout, proc.stdout


# -- 4. a hostile repository's own hook, run by git status -------------------------------------
def _hostile_repo(tmp_path: Path, *, hook: bool) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    git = ["git", "-C", str(ws), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    # post-index-change gets "0 0" (or "1 0"): Python runs the file named by its first argument
    # in the repository's top level. The hook is a symlink to an allowed program (the kernel
    # layer lets only allowed programs run).
    payload = "open('output/hook-ran', 'w').write('the repository hook ran')\n"
    for name in ("0", "1"):
        (ws / name).write_text(payload)
    (ws / "f").write_text("a\n")
    subprocess.run([*git, "add", "0", "1", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    if hook:
        (ws / ".git" / "hooks" / "post-index-change").symlink_to(os.path.realpath(PY))
    time.sleep(1.1)
    os.utime(ws / "f")  # a stale index entry: status refreshes and writes the index
    return ws, ws / "output" / "hook-ran"


def _git_status(tmp_path: Path, ws: Path, via_child: bool) -> subprocess.CompletedProcess[str]:
    home = empty_home(tmp_path)
    # A plausible coding-agent policy: the workspace is writable, git and Python may run.
    policy = write_policy(ws, {"filesystem": {"write": ["."]},
                               "process": {"allowedCommands": ["git", os.path.realpath(PY)]}})
    if via_child:
        script = tmp_path / "agent.py"
        script.write_text("import subprocess\nsubprocess.run(['git', 'status', '--short'])\n")
        cmd = [PY, str(script)]
    else:
        cmd = ["git", "status", "--short"]
    return capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--allow-user-expansion", "--",
                        *cmd], home=home, cwd=ws)


@pytest.mark.parametrize("via_child", [False, True], ids=["launched-git", "child-git"])
def test_git_status_in_a_repository_without_hooks_runs_control(tmp_path: Path, via_child: bool) -> None:
    ws, marker = _hostile_repo(tmp_path, hook=False)
    proc = _git_status(tmp_path, ws, via_child)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("via_child", [False, True], ids=["launched-git", "child-git"])
def test_git_status_does_not_run_the_repositorys_hook(tmp_path: Path, via_child: bool) -> None:
    ws, marker = _hostile_repo(tmp_path, hook=True)
    proc = _git_status(tmp_path, ws, via_child)
    assert not marker.exists(), proc.stderr


# -- 5. os.open's dir_fd hint, raced with dup2 (the documented check/use race, now cheap) -------
DIR_FD_RACE = """
import os, sys, threading
sys.setswitchinterval(1e-6)
good = os.open("output", os.O_RDONLY)
bad = os.open("output/.git", os.O_RDONLY)
try:
    os.close(os.open("config", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=bad))
    print("control CREATED", flush=True)
except PermissionError as exc:
    print("control blocked", exc.rule, flush=True)
slot = os.dup(good)
stop = []
def flip():
    while not stop:
        os.dup2(bad, slot)
        os.dup2(good, slot)
t = threading.Thread(target=flip)
t.start()
for _ in range(3000):
    try:
        os.close(os.open("config", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=slot))
    except PermissionError:
        pass
    if os.path.exists("output/.git/config"):
        break
stop.append(1)
t.join()
print("race", "WON" if os.path.exists("output/.git/config") else "lost", flush=True)
"""


def _dir_fd_race(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output" / ".git").mkdir(parents=True)
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(DIR_FD_RACE))
    return ws, capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)


def test_dir_fd_open_of_a_denied_name_is_refused_control(tmp_path: Path) -> None:
    _ws, proc = _dir_fd_race(tmp_path)
    assert "control blocked mandatory.denyWrite" in proc.stdout, proc.stdout + proc.stderr


def test_dir_fd_cannot_be_swapped_under_the_check(tmp_path: Path) -> None:
    ws, proc = _dir_fd_race(tmp_path)
    assert "race " in proc.stdout, proc.stdout + proc.stderr
    assert not (ws / "output" / ".git" / "config").exists(), proc.stdout


TRUNC_RACE = """
import os, sys, tempfile, threading
sys.setswitchinterval(1e-6)
# controls: the honest uses of os.open that the recheck must leave alone
fd = os.open("output/new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.write(fd, b"new"); os.close(fd)
open("output/old", "w").write("old content")
fd = os.open("output/old", os.O_WRONLY | os.O_TRUNC); os.close(fd)
with tempfile.TemporaryFile(dir="output") as fh:  # O_TMPFILE where the kernel has it
    fh.write(b"x"); fh.seek(0); tmp_ok = fh.read() == b"x"
print("controls", open("output/new").read(), os.path.getsize("output/old"), tmp_ok, flush=True)
good = os.open("output", os.O_RDONLY)
bad = os.open("output/.git", os.O_RDONLY)
slot = os.dup(good)
stop = []
def flip():
    while not stop:
        os.dup2(bad, slot)
        os.dup2(good, slot)
t = threading.Thread(target=flip)
t.start()
refused = 0
for _ in range(3000):
    try:
        os.close(os.open("config", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=slot))
    except PermissionError:
        refused += 1
stop.append(1)
t.join()
print("refused", refused, flush=True)
"""


def test_dir_fd_race_never_truncates_or_removes_an_existing_file(tmp_path: Path) -> None:
    """The recheck after the open acts before anything irreversible: a refused O_TRUNC open of
    an existing protected file leaves its bytes, and the refused open (which did not create
    the file) does not remove it. The controls: creating, truncating and O_TMPFILE opens in an
    allowed place work."""
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output" / ".git").mkdir(parents=True)
    config = ws / "output" / ".git" / "config"
    config.write_text("[core]\n\tbare = false\n")
    (ws / "output" / "config").write_text("allowed\n")
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(TRUNC_RACE))
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)
    assert "controls new 0 True" in proc.stdout, proc.stdout + proc.stderr
    assert "refused " in proc.stdout, proc.stdout + proc.stderr
    assert config.read_text() == "[core]\n\tbare = false\n"
    refused = int(proc.stdout.split("refused ", 1)[1].split()[0])
    assert refused > 0, proc.stdout  # the race was run: some opens landed in .git and were refused


GIT_CHILD_ENVS = """
import os, subprocess, sys
path = os.environ["PATH"]
# a Popen with an environment of its own: the hooks put capgate's git overrides back
subprocess.run(["git", "status", "--short"], env={"PATH": path, "HOME": os.environ["HOME"]})
# ... also over values the program set itself
subprocess.run(["git", "status", "--short"], env={**os.environ, "GIT_CONFIG_COUNT": "0"})
git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True).stdout.strip() or "/usr/bin/git"
# posix_spawn/exec cannot be given them: an environment without them is refused
try:
    pid = os.posix_spawn(git, ["git", "status", "--short"], {"PATH": path})
    os.waitpid(pid, 0)
    print("spawn-stripped RAN", flush=True)
except PermissionError as exc:
    print("spawn-stripped blocked", exc.rule, flush=True)
pid = os.posix_spawn(git, ["git", "status", "--short"], dict(os.environ))
print("spawn-inherited", os.waitpid(pid, 0)[1], flush=True)
"""


def test_git_a_child_starts_with_its_own_environment_gets_the_overrides(tmp_path: Path) -> None:
    """Popen with ``env=`` (no GIT_* at all, or GIT_CONFIG_COUNT=0) still runs git with capgate's
    overrides, so the repository's hook never runs; ``os.posix_spawn`` with an environment
    lacking them is refused (``soft.git``), and with the inherited one runs (the control)."""
    ws, marker = _hostile_repo(tmp_path, hook=True)
    home = empty_home(tmp_path)
    policy = write_policy(ws, {"filesystem": {"write": ["."]},
                               "process": {"allowShell": True,
                                           "allowedCommands": ["git", "sh", os.path.realpath(PY)]}})
    script = tmp_path / "agent.py"
    script.write_text(GIT_CHILD_ENVS)
    proc = capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--allow-user-expansion", "--",
                        PY, str(script)], home=home, cwd=ws)
    assert "spawn-stripped blocked soft.git" in proc.stdout, proc.stdout + proc.stderr
    assert "spawn-inherited 0" in proc.stdout, proc.stdout + proc.stderr
    assert not marker.exists(), proc.stdout + proc.stderr


@needs_system_python
def test_interpreter_root_holding_a_denied_path_is_refused(tmp_path: Path) -> None:
    """What the interpreter needs is narrow (its binary, its lib/python3.N, libpython), but
    when even that holds a path the policy denies reading, the run is refused with a clear
    message instead of opening it to every native program (Landlock has no deny patterns)."""
    home = empty_home(tmp_path)
    prefix = tmp_path / "py"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib" / "python3.11").mkdir(parents=True)
    shutil.copy2(SYSTEM_PY, prefix / "bin" / "python3.11")
    (prefix / "lib" / "python3.11" / "os.py").write_text("")
    (prefix / "lib" / "python3.11" / "secrets-dir").mkdir()
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    denied = write_policy(ws, {"filesystem": {"denyRead": [str(prefix / "lib" / "python3.11" / "secrets-dir")]}})
    proc = capgate_run(["run", "--workspace", str(ws), "--policy", str(denied), "--",
                        str(prefix / "bin" / "python3.11"), "-c", "print('ran')"], home=home, cwd=ws)
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert "would make" in proc.stderr and "secrets-dir" in proc.stderr, proc.stderr
    # the control: without that deny entry the same interpreter's roots are accepted
    control = capgate_run(["run", "--workspace", str(ws), "--dry-run-policy", "--",
                           str(prefix / "bin" / "python3.11"), "-c", "print('ran')"], home=home, cwd=ws)
    assert control.returncode == 0, control.stdout + control.stderr
