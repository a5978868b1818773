"""The end of a staged run: the change list, what ``apply`` will refuse, ``--on-exit``.

The launcher calls ``finish_staged_run`` once the child's tree is gone (also when it was
stopped by a signal or a limit). The change list is printed with the run id; every change
the policy would refuse is recorded in the audit log as a denial (so the summary shows it,
for native children too) and named; then ``--on-exit``: ``keep`` (the default) leaves the run
for ``capgate changes``/``apply``/``discard``; ``apply`` applies it — only when the child
exited 0 and no limit stopped it, else the run is kept and the reason said; ``discard``
removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING

from capgate.staging.changes import compute_changes, iter_lines, safe_name, with_renames
from capgate.staging.commands import apply_run, summary_line
from capgate.staging.store import RunLock, StagedRun, remove_run

if TYPE_CHECKING:
    from capgate.audit import AuditLog
    from capgate.policy.model import Policy

__all__ = ["MAX_LISTED", "finish_staged_run"]

MAX_LISTED = 200
ON_EXIT = ("keep", "apply", "discard")


def finish_staged_run(run: StagedRun, lock: RunLock, policy: Policy, audit: AuditLog, *, on_exit: str,
                      returncode: int, clean_end: bool, environ: Mapping[str, str], err: IO[str],
                      say: Callable[[str], None]) -> int | None:
    """Report the run and act on ``on_exit``; return an exit code to use instead of the
    child's (an ``--on-exit apply`` that was refused), else None."""
    from capgate import ops
    from capgate.decision import Decision
    from capgate.gate import Gate
    from capgate.staging.apply import check_changes

    lock.finish()
    try:
        changes = compute_changes(run.upper, run.workspace)
    except OSError as exc:
        say(f"staged run {run.run_id}: the change list could not be read ({exc}); the staging is kept at {run.path}")
        return None
    shown = with_renames(changes, run.workspace)
    err.write(summary_line(run, shown) + "\n")
    for i, line in enumerate(iter_lines(shown)):
        if i == MAX_LISTED:
            err.write(f"  ... and {len(shown) - MAX_LISTED} more: capgate changes {run.run_id}\n")
            break
        err.write(line + "\n")
    if run.quota_exceeded:
        say(f"limit reached: outputQuotaMb ({policy.limits.output_quota_mb} MB of staged writes): the child's tree "
            "was stopped")
    gate = Gate(policy, audit=audit)
    refused = check_changes(changes, run, gate, force=True, log=False, workspace_checks=False)
    for refusal in refused:
        path = os.path.join(run.workspace, refusal.path)
        audit.record(ops.FS_WRITE, gate.show(path), Decision.deny(f"staged by the run, refused at apply: "
                                                                  f"{refusal.reason}", refusal.rule, path),
                     source="staging")
    if refused:
        say(f"apply will refuse {len(refused)} of these changes (the policy does not let the agent write them):")
        for refusal in refused[:MAX_LISTED]:
            err.write(f"  {safe_name(refusal.path)}: {safe_name(refusal.reason)} [{refusal.rule}]\n")
    if not changes:
        remove_run(run)
        return None
    if on_exit == "discard":
        remove_run(run)
        say(f"staged run {run.run_id} discarded (--on-exit discard): the workspace is unchanged")
        return None
    if on_exit == "apply":
        if not clean_end or returncode != 0:
            why = "was stopped" if not clean_end else f"exited with status {returncode}"
            say(f"--on-exit apply: not applied, because the child {why}; the run is kept: "
                f"capgate changes {run.run_id}")
            return None
        code = apply_run(run, force=False, environ=environ, out=err, err=err)
        return code if code != 0 else None
    say(f"review: capgate changes {run.run_id} --diff; land: capgate apply {run.run_id}; "
            f"drop: capgate discard {run.run_id}")
    return None
