"""Review round 7 (adversarial, namespace backend): holes found in ``capgate run --backend
namespace`` (also what ``auto`` picks where user namespaces work). Each hole was a strict
xfail with a benign control beside it; all are fixed and kept as regression tests.

A compiled C probe (``tests/probes/review7_probe.c``: no audit hooks see it) plays the
prompt-injected agent's native helper; everything is judged from the host side (files,
the audit log, the backend the launcher picked).

1. The start-up scan does not look inside a path it bound read-only on itself: a write-denied
   directory in a write root (``.vscode/``, ``.devcontainer/``, ``.git/hooks/``, ``.claude/``)
   is never walked, so a ``.env``, a ``*.pem`` or a planted hard link inside it is neither
   covered nor hidden: a native child reads the secrets.
2. The exit report skips every path that was bound read-only at start *by name*: rename the
   parent of the read-only ``output/.git/hooks`` (or of an existing ``output/sub/.bashrc``),
   make the same path again and fill it: the new hook is on the host, no denial is logged.
3. The exit report and the mandatory list judge names, and git follows a ``.git`` that is a
   symlink or a ``gitdir:`` file: ``output/.git -> realgit`` with ``realgit/hooks/pre-commit``
   is a working hook no denial mentions. (Gate-wide: the soft hooks allow the same writes.)
4. The scan and the exit report skip, without a word, any directory they cannot list: a tree
   deeper than ``PATH_MAX`` (``os.scandir`` on its absolute path fails ``ENAMETOOLONG``, also
   as root; unprivileged, a directory of mode 0311 does the same): a ``.env`` there is read, a
   ``.bashrc`` made there is not reported. Fail-open on an error while deciding.
5. The probe cache trusts whatever is in ``~/.local/state/capgate/namespace-probe``: where the
   state directory is inside a write root (workspace = HOME, ``--audit-log`` elsewhere), the
   agent writes "refused" under the right key and every later ``auto`` run until reboot is the
   soft backend (native children then read ``.env``).
6. A stale or forged "ok" in that cache where user namespaces are refused: bubblewrap fails,
   the launcher reports its exit code 1 as the child's and "no denials seen" — not the
   documented refusal (125).
7. A deny-listed file that was already in a write root (``output/.env``, covered at start)
   is logged at exit as an ``fs.write`` denial "created during the run": a false record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._namespace_helpers import require_namespace_backend
from tests.conftest import SECRET
from tests.integration._soft_helpers import PY, audit_lines, capgate_run

PROBE_SOURCE = Path(__file__).resolve().parent.parent / "probes" / "review7_probe.c"
EVIL = "#!/bin/sh\necho planted-by-the-agent\n"


def _probe(directory: Path) -> Path:
    out = directory / "review7_probe"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(PROBE_SOURCE)], check=True, capture_output=True)
    return out


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    require_namespace_backend()
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    (ws / "output").mkdir()
    (ws / "tools").mkdir()
    (tmp_path / "home").mkdir()
    return ws


def _run(ws: Path, *actions: str, backend: str = "namespace") -> list[str]:
    probe = ws / "tools" / "review7_probe"
    if not probe.exists():
        _probe(ws / "tools")
    result = capgate_run(["run", "--backend", backend, "--workspace", str(ws), "--", str(probe), *actions],
                         home=ws.parent / "home", cwd=ws.parent, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _write_denials(ws: Path) -> list[str]:
    return [str(e["target"]) for e in audit_lines(ws.parent / "home")
            if e.get("decision") == "deny" and e.get("op") == "fs.write"]


def _reported(ws: Path, path: Path) -> bool:
    """Whether the exit report (or any fs.write denial) names ``path`` or a path beneath it."""
    text = str(path)
    return any(t == text or t.startswith(text + "/") for t in _write_denials(ws))


# -- 1. secrets inside a write-denied directory of a write root ------------------------------
def _secrets_in(ws: Path, where: str) -> list[str]:
    home = ws.parent / "home"
    (home / ".ssh").mkdir(exist_ok=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    base = ws / "output" / where
    base.mkdir(parents=True)
    (base / ".env").write_text(SECRET)
    (base / "server.pem").write_text(SECRET)
    os.link(home / ".ssh" / "id_rsa", base / "planted")  # a hard link to a secret outside
    return ["read", str(base / ".env"), "read", str(base / "server.pem"), "read", str(base / "planted")]


@pytest.mark.parametrize("where", [".devcontainer", ".vscode", ".git/hooks"])
def test_secrets_inside_a_write_denied_directory_are_covered(ws: Path, where: str) -> None:
    lines = _run(ws, *_secrets_in(ws, where))
    assert lines == ["read OK 0 []"] * 3, lines


def test_control_secrets_elsewhere_in_the_write_root_are_covered(ws: Path) -> None:
    lines = _run(ws, *_secrets_in(ws, "plain"), "read", str(ws / "src" / "app.py"))
    assert lines == ["read OK 0 []"] * 3 + ["read OK 12 [print('hi') ]"], lines


# -- 2. rename the parent of a read-only bind, make the same path again -----------------------
@pytest.mark.parametrize("case", ["hooks", "bashrc"])
def test_recreating_a_read_only_path_under_a_renamed_parent_is_reported(ws: Path, case: str) -> None:
    out = ws / "output"
    if case == "hooks":
        (out / ".git" / "hooks").mkdir(parents=True)
        parent, planted = out / ".git", out / ".git" / "hooks" / "pre-commit"
        actions = ["rename", str(parent), str(out / "old-git"), "mkdir", str(parent),
                   "mkdir", str(parent / "hooks"), "write", str(planted), EVIL]
    else:
        (out / "sub").mkdir()
        (out / "sub" / ".bashrc").write_text("# the user's own\n")
        parent, planted = out / "sub", out / "sub" / ".bashrc"
        actions = ["rename", str(parent), str(out / "old-sub"), "mkdir", str(parent), "write", str(planted), EVIL]
    lines = _run(ws, *actions)
    planted_now = planted.exists() and planted.read_text() == EVIL
    # Either the move is refused, or the planted file is in the audit log as a denial.
    assert not planted_now or _reported(ws, planted), (lines, _write_denials(ws))


def test_control_the_read_only_hooks_dir_itself_cannot_be_written_or_moved(ws: Path) -> None:
    hooks = ws / "output" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    lines = _run(ws, "write", str(hooks / "pre-commit"), EVIL, "rename", str(hooks), str(ws / "output" / "h2"))
    assert lines == ["write ERR EROFS", "rename ERR EBUSY"], lines
    assert not (hooks / "pre-commit").exists()


def test_control_a_new_hooks_dir_is_reported_at_exit(ws: Path) -> None:
    out = ws / "output"
    lines = _run(ws, "mkdir", str(out / ".git"), "mkdir", str(out / ".git" / "hooks"),
                 "write", str(out / ".git" / "hooks" / "pre-commit"), EVIL)
    assert lines == ["mkdir OK", "mkdir OK", f"write OK {len(EVIL)}"], lines
    assert _reported(ws, out / ".git" / "hooks")


# -- 3. a .git that is a symlink or a gitdir: file ------------------------------------------
@pytest.mark.parametrize("kind", ["symlink", "gitdir-file"])
def test_a_redirected_git_dir_with_a_hook_is_reported(ws: Path, kind: str) -> None:
    out = ws / "output"
    actions = ["mkdir", str(out / "realgit"), "mkdir", str(out / "realgit" / "hooks"),
               "write", str(out / "realgit" / "hooks" / "pre-commit"), EVIL]
    if kind == "symlink":
        actions += ["symlink", "realgit", str(out / ".git")]
    else:
        actions += ["write", str(out / ".git"), "gitdir: realgit\n"]
    lines = _run(ws, *actions)
    assert all(" OK" in line for line in lines), lines
    # git would run output/realgit/hooks/pre-commit on the next commit in output/
    assert _reported(ws, out / ".git") or _reported(ws, out / "realgit" / "hooks"), _write_denials(ws)


# -- 4. directories the walks cannot list -------------------------------------------------
_DEEP_NAME = "d" * 250
_DEEP = 18  # 18 * 251 bytes: past PATH_MAX (4096) below the workspace


def _deep_tree(base: Path, depth: int, secret: str) -> None:
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(_DEEP_NAME, dir_fd=fd)
            nxt = os.open(_DEEP_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        env = os.open(".env", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd)
        os.write(env, secret.encode())
        os.close(env)
    finally:
        os.close(fd)


def _deep_actions(ws: Path, depth: int) -> list[str]:
    out = str(ws / "output")
    return ["deepread", out, _DEEP_NAME, str(depth), ".env",
            "deepwrite", out, _DEEP_NAME, str(depth), ".bashrc", EVIL]


def _reported_deep_bashrc(ws: Path) -> bool:
    return any(t.endswith("/.bashrc") and _DEEP_NAME in t for t in _write_denials(ws))


def test_a_tree_deeper_than_path_max_is_covered_and_reported(ws: Path) -> None:
    _deep_tree(ws / "output", _DEEP, "deep-secret-" + SECRET)
    lines = _run(ws, *_deep_actions(ws, _DEEP))
    assert lines[0] == "deepread OK 0 []" or lines[0].startswith("deepread ERR"), lines
    assert lines[1].startswith("deepwrite ERR") or _reported_deep_bashrc(ws), (lines, _write_denials(ws))


def test_control_a_shallow_tree_is_covered_and_reported(ws: Path) -> None:
    _deep_tree(ws / "output", 2, "deep-secret-" + SECRET)
    lines = _run(ws, *_deep_actions(ws, 2))
    assert lines == ["deepread OK 0 []", f"deepwrite OK {len(EVIL)}"], lines
    assert _reported_deep_bashrc(ws)


# -- 5. the probe cache, forged from inside ------------------------------------------------
_FORGE = (  # (the child's HOME is the sandbox's: the real one is named, it is the workspace)
    "import sys\n"
    "path = sys.argv[1] + '/.local/state/capgate/namespace-probe'\n"
    "key = open(path).read().partition('\\n')[0]\n"
    "open(path, 'w').write(key + '\\nuser namespaces are refused here (forged by the agent)')\n"
    "print('forged')\n"
)


def _home_workspace(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The user runs the agent on their HOME (write ".") with the audit log elsewhere."""
    require_namespace_backend()
    home = tmp_path / "home"
    (home / "proj").mkdir(parents=True)
    (home / "forge.py").write_text(_FORGE)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": 1, "filesystem": {"write": ["."]}}))
    logs = tmp_path / "logs"
    logs.mkdir()
    return home, policy, logs


def _home_run(home: Path, policy: Path, logs: Path, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return capgate_run(["run", "--backend", "auto", "--policy", str(policy), "--allow-user-expansion",
                        "--audit-log", str(logs / f"{name}.jsonl"), "--workspace", str(home), "--", *argv],
                       home=home, cwd=home, timeout=60)


def _chosen(result: subprocess.CompletedProcess[str]) -> str:
    line = next(x for x in result.stderr.splitlines() if x.startswith("capgate: backend: "))
    return line.split()[2]


def test_an_agent_cannot_downgrade_later_runs_through_the_probe_cache(tmp_path: Path) -> None:
    home, policy, logs = _home_workspace(tmp_path)
    first = _home_run(home, policy, logs, "first", PY, str(home / "forge.py"), str(home))
    assert first.returncode == 0 and _chosen(first) == "namespace", first.stderr
    second = _home_run(home, policy, logs, "second", "/bin/true")
    assert _chosen(second) == "namespace", second.stderr


def test_control_auto_keeps_the_namespace_backend_run_after_run(tmp_path: Path) -> None:
    home, policy, logs = _home_workspace(tmp_path)
    first = _home_run(home, policy, logs, "first", "/bin/true")
    second = _home_run(home, policy, logs, "second", "/bin/true")
    assert _chosen(first) == _chosen(second) == "namespace", second.stderr


# -- 6. a stale "ok" where user namespaces are refused --------------------------------------
_RESTRICTED = """
set -e
echo 0 > /proc/sys/user/max_user_namespaces
export HOME={home}
cd {ws}
rm -f {home}/.local/state/capgate/namespace-probe
if [ "$1" = stale ]; then
  mkdir -p {home}/.local/state/capgate
  {py} -c 'from capgate.backends.namespace import _probe_key as k, find_bwrap as b; print(k(b()), end=chr(10))' \
    > {home}/.local/state/capgate/namespace-probe
  printf ok >> {home}/.local/state/capgate/namespace-probe
fi
set +e
{py} -m capgate run --backend namespace --workspace {ws} -- /bin/echo ran
echo "rc=$?"
"""


def _restricted(ws: Path, mode: str) -> str:
    """Run capgate where user namespaces are refused: in a user namespace of our own whose
    ``max_user_namespaces`` is 0 (nothing on the host changes)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is needed to refuse user namespaces without touching the host")
    script = ws.parent / "restricted.sh"
    script.write_text(_RESTRICTED.format(home=ws.parent / "home", ws=ws, py=PY))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "XDG_STATE_HOME"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent.parent)
    done = subprocess.run([unshare, "-Ur", "sh", str(script), mode], capture_output=True, text=True, timeout=60,
                          env=env)
    return done.stdout + done.stderr


def test_a_stale_probe_answer_still_ends_in_the_documented_refusal(ws: Path) -> None:
    out = _restricted(ws, "stale")
    assert "rc=125" in out, out


def test_control_refused_user_namespaces_are_refused_with_125(ws: Path) -> None:
    out = _restricted(ws, "fresh")
    assert "rc=125" in out and "user namespaces are refused here" in out, out
    assert "\nran\n" not in out


# -- 7. a covered file reported as created -------------------------------------------------
def test_a_covered_file_that_was_there_before_is_not_reported_as_created(ws: Path) -> None:
    (ws / "output" / ".env").write_text(SECRET)
    lines = _run(ws, "read", str(ws / "output" / ".env"))
    assert lines == ["read OK 0 []"], lines
    assert not _reported(ws, ws / "output" / ".env"), _write_denials(ws)


def test_control_a_read_only_path_that_was_there_before_is_not_reported(ws: Path) -> None:
    (ws / "output" / ".git" / "hooks").mkdir(parents=True)
    lines = _run(ws, "read", str(ws / "src" / "app.py"))
    assert lines == ["read OK 12 [print('hi') ]"], lines
    assert not _reported(ws, ws / "output" / ".git"), _write_denials(ws)
