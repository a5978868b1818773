"""The gated process runner: ``from capgate import proc``; ``proc.run(argv, ...)``.

What it enforces, for every call (under ``capgate.current_gate()``):

* ``argv`` is a list; a string (a shell command line) is refused unless it is … never: use
  ``["sh", "-c", cmd]`` with ``allowShell: true`` if you really mean a shell.
* ``cwd`` (default: the workspace root; relative = relative to the workspace) must be a
  directory the policy lets the agent *read* (``fs.read`` decision). Naming it never makes it
  writable: nothing here grants a write.
* The command line is decided by ``capgate.cmdrules`` (allowlist on the resolved file looked
  up on the sanitized PATH, shells, trampolines, git and ``deniedArguments`` rules); the file
  that was decided is the file that is executed (``executable=`` the resolved path).
* The child gets a clean environment (``capgate._sys.clean_env``): ``envPassthrough`` plus the
  caller's ``env`` (never ``LD_*``, ``PYTHONPATH``, proxies, …), ``HOME`` = a fresh empty
  sandbox home and ``TMPDIR`` = a fresh private empty directory, both in one ``0700`` temp
  directory removed when the run ends (no state carries from one run to the next), and the
  sanitized ``PATH``. A command line naming git (also behind a trampoline) gets ``GIT_ENV``
  (``GIT_CONFIG_NOSYSTEM=1``, ``GIT_CONFIG_GLOBAL=/dev/null``, ``GIT_TERMINAL_PROMPT=0`` and
  config overrides that neutralize ``core.fsmonitor``/``core.hooksPath``/… of a hostile
  repository), and is refused when the repository's own configuration names a program
  to run (``capgate.gitconfig``: filter/textconv/merge drivers, aliases, …).
* It runs under ``capgate.supervisor.supervise``: new session, rlimits, pids cgroup, wall
  time ``min(timeout, limits.wallTimeSeconds)`` killing the whole tree, capped output.
* With ``allowShell: false`` the whole tree may ``execve`` only the allowed commands (plus the
  ELF loader, non-shell ``#!`` interpreters, git's helper directory): Landlock, set before the
  child starts and inherited by every descendant (``CommandRules.exec_allowlist``). An allowed
  program that starts ``/bin/sh -c`` by itself (a git driver, ``awk`` ``system()``, ``sed``
  ``e``, ``os.system``) gets ``EACCES``. The result's ``exec_confined`` (and the audit event)
  say whether the kernel enforced it; without Landlock the run goes on without it.
* Every run is in the audit log: the ``proc.exec`` decision (with argv, resolved file and
  cwd), and a ``proc.run`` event with exit status or signal, duration and limits fired.

The result is a ``subprocess.CompletedProcess`` with ``stdout``/``stderr`` bytes and extra
attributes: ``truncated`` (either stream was cut at ``maxCapturedOutputMb``),
``stdout_truncated``, ``stderr_truncated``, ``timed_out``, ``limits_fired``, ``duration``,
``executable``. A run stopped by the wall time is *returned* (``returncode`` -9,
``timed_out`` True), not raised, so the caller keeps the output it produced.

What it does not do: confine what the child reads, writes or connects to — it runs outside the
fs/net gate, as the calling user (rlimits are not a sandbox; use the container backend).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from capgate import ops
from capgate._sys.clean_env import build_child_env, sanitized_path_dirs
from capgate.cmdrules import GIT_ENV
from capgate.decision import Decision
from capgate.errors import PermissionDenied
from capgate.gate import Gate, current_gate
from capgate.gitconfig import GIT_CONFIG_RULE, git_config_refusal, git_in_argv
from capgate.supervisor import in_soft_sandbox, supervise

__all__ = ["decide_command_line", "run"]


def _shown_argv(argv: Sequence[str]) -> list[str]:
    return [a[:200] for a in argv[:32]]


# The decision to read the workspace root, per gate: a pure function of the policy (string
# matching on a path canonical since the policy was loaded), asked by every proc.run.
_workspace_read: weakref.WeakKeyDictionary[Gate, Decision] = weakref.WeakKeyDictionary()


def _resolve_cwd(gate: Gate, cwd: object) -> str:
    target: object = gate.policy.workspace if cwd is None else cwd
    canonical: str | None
    if cwd is None:
        canonical = gate.policy.workspace  # canonical since the policy was loaded
        decision = _workspace_read.get(gate)
        if decision is None:
            decision = _workspace_read[gate] = gate.peek_path(ops.FS_READ, canonical)
        gate.record(ops.FS_READ, gate.show(canonical), decision)  # as decide_path logs it
        return _checked_cwd(gate, canonical, decision, target)
    else:
        try:
            canonical = gate.canonical_path(target)
        except Exception:  # a target that cannot name a path: gate.check logs the denial
            canonical = None
    if canonical is None:
        decision = gate.check(ops.FS_READ, target)
    else:  # gate.check without canonicalizing twice (its hard-link rule is for regular files)
        decision = gate.decide_path(ops.FS_READ, canonical)
    return _checked_cwd(gate, canonical, decision, target)


def _checked_cwd(gate: Gate, canonical: str | None, decision: Decision, target: object) -> str:
    if not decision.allowed or canonical is None:
        raise PermissionDenied(ops.PROC_EXEC, str(target), f"cwd not readable: {decision.reason}", decision.rule)
    try:
        is_dir = stat.S_ISDIR(os.stat(canonical).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        raise gate.deny(ops.PROC_EXEC, gate.show(canonical), "cwd is not a directory", "process.cwd")
    return canonical


def _git_config_decision(
    gate: Gate, args: list[str], workdir: str, child_env: dict[str, str], path_dirs: tuple[str, ...],
    allowed: Decision,
) -> Decision:
    """Deny when the repository git would use configures a program to run (``capgate.gitconfig``).

    The git that lists the configuration is an allowed git the command line names, found the
    way the run finds it (never a file the agent planted); no allowed git means none can run.
    """
    why = git_config_refusal(args, workdir, child_env,
                             lambda word: gate.command_rules.allowed_executable(word, workdir, path_dirs))
    return allowed if why is None else Decision.deny(why, GIT_CONFIG_RULE, allowed.target)


def _decide(gate: Gate, args: list[str], workdir: str, env: Mapping[str, str] | None
            ) -> tuple[Decision, str | None, dict[str, str]]:
    """The decision on a whole command line, the executable it resolves to and the child's
    environment: one decision point for ``run`` and ``capgate check proc.exec CMD ARGS...``."""
    child_env: dict[str, str] = {}
    try:
        path_dirs = sanitized_path_dirs(gate.policy, cwd=workdir)  # once: the lookup and the child's PATH
        decision, resolved = gate.command_rules.decide_argv(args, workdir, path_dirs=path_dirs)
        # HOME and TMPDIR: a fresh private directory per run, made and removed by the supervisor
        # (``private_dirs``); the placeholders here are replaced before the child starts. The
        # git variables go to any command line that names git (also behind ``env``, ``timeout``…).
        child_env = build_child_env(gate.policy, home="/nonexistent", tmpdir="/nonexistent", extra=env,
                                    cwd=workdir, path_dirs=path_dirs)
        if git_in_argv(args):
            child_env.update(GIT_ENV)
            if decision.allowed:
                decision = _git_config_decision(gate, args, workdir, child_env, path_dirs, decision)
    except Exception as exc:  # fail closed: an error while deciding is a denial
        decision, resolved = Decision.deny(f"error while deciding: {exc}", "gate.error", args[0][:200]), None
    return decision, resolved, child_env


def decide_command_line(argv: Sequence[str], *, gate: Gate | None = None) -> Decision:
    """What ``run(argv)`` would decide, without running anything (``capgate check proc.exec
    git status``). Recorded in the gate's audit log as ``run`` records it."""
    gate = gate or current_gate()
    args = [str(a) for a in argv]
    if not args:
        return Decision.deny("empty command line", "process.argv")
    try:
        workdir = _resolve_cwd(gate, None)
    except PermissionDenied as exc:
        return Decision.deny(f"the workspace cannot be read: {exc.reason}", exc.rule, args[0][:200])
    decision, resolved, _env = _decide(gate, args, workdir, None)
    gate.record(ops.PROC_EXEC, args[0][:200], decision, argv=_shown_argv(args), resolved=resolved,
                cwd=gate.show(workdir))
    return decision


def run(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run an allowed command; see the module docstring. Raises ``PermissionDenied``."""
    gate = current_gate()
    if isinstance(argv, (str, bytes)):
        raise gate.deny(
            ops.PROC_EXEC,
            os.fsdecode(argv)[:200],
            "a string command is a shell command line; pass an argv list",
            "process.allowShell",
        )
    try:
        # Plain str from here on (a str subclass could answer checks with one text and
        # reach the child with another).
        args = [str.__str__(a) if isinstance(a, str) else os.fsdecode(a) if isinstance(a, (bytes, os.PathLike))
                else a for a in argv]
    except TypeError:
        raise gate.deny(ops.PROC_EXEC, "<argv>", "argv items must be str or path-like", "process.argv")
    if not args or not all(isinstance(a, str) for a in args):
        raise gate.deny(ops.PROC_EXEC, "<argv>", "argv must be a non-empty list of strings", "process.argv")
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        raise TypeError("input must be bytes")
    workdir = _resolve_cwd(gate, cwd)
    shown = args[0][:200]
    decision, resolved, child_env = _decide(gate, args, workdir, env)
    fields: dict[str, Any] = {"argv": _shown_argv(args), "resolved": resolved, "cwd": gate.show(workdir)}
    gate.record(ops.PROC_EXEC, shown, decision, **fields)
    if not decision.allowed or resolved is None:
        raise PermissionDenied(ops.PROC_EXEC, shown, decision.reason, decision.rule)

    result = supervise(
        args,
        executable=resolved,
        limits=gate.policy.limits,
        env=child_env,
        cwd=workdir,
        input=bytes(input) if input is not None else None,
        timeout=timeout,
        private_dirs=True,
        # Inside ``capgate run`` the launcher's Landlock ruleset already holds the whole tree
        # (and building a plan needs what the hooks refuse: ctypes, reading the binaries).
        confine=None if in_soft_sandbox() else gate.command_rules.exec_plan(),
    )
    rc = result.returncode
    gate.audit.event(
        "proc.run",
        command=shown,
        resolved=resolved,
        cwd=gate.show(workdir),
        exit_status=rc if rc >= 0 else None,
        signal=signal.Signals(-rc).name if rc < 0 and -rc in signal.valid_signals() else None,
        duration=round(result.duration, 6),
        timed_out=result.timed_out,
        limits_fired=list(result.limits_fired),
        output_truncated=result.stdout_truncated or result.stderr_truncated,
        containment=result.containment,
        exec_confined=result.exec_confined,
    )
    completed: subprocess.CompletedProcess[bytes] = subprocess.CompletedProcess(args, rc, result.stdout, result.stderr)
    extra = {
        "truncated": result.stdout_truncated or result.stderr_truncated,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "timed_out": result.timed_out,
        "limits_fired": result.limits_fired,
        "duration": result.duration,
        "executable": resolved,
        "exec_confined": result.exec_confined,
    }
    for key, value in extra.items():
        setattr(completed, key, value)
    return completed
