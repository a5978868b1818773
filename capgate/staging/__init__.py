"""Staged writes (``capgate run --staged``): the agent edits the workspace, a person decides
what lands.

One module per step, as git keeps the work tree, the staged state and the apply apart:
``store`` (where a run's staging lives), ``capgate._sys.stage_mount`` (the overlay, mounted
for the namespace backend), ``changes`` (what the run changed), ``apply`` (the only code that
writes the real workspace, built like the gate), ``report`` (the launcher's end-of-run list)
and ``commands`` (``capgate changes``/``apply``/``discard``).
"""

from __future__ import annotations

from capgate.staging.changes import Change, compute_changes
from capgate.staging.store import StagedRun, find_run, list_runs, staging_root

__all__ = ["Change", "StagedRun", "compute_changes", "find_run", "list_runs", "staging_root"]
