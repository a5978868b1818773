"""Threads and executor workers started inside ``with gate:`` are decided by that gate.

On Python < 3.14 a new thread starts with an empty ``contextvars`` context, so without help a
``threading.Thread`` started inside ``with gate:`` would see no gate and fall back to the
ambient one (built from ``$CAPGATE_POLICY`` or the cwd): another policy, silently. Two small
patches, installed the first time a gate is activated, close that:

* ``threading.Thread.start`` records the starting thread's gate and runs the thread's ``run``
  under it (``Timer`` and every subclass included); ``_thread.start_new_thread`` (looked up at
  call time: ``threading`` keeps its own reference to the original) does the same;
* ``ThreadPoolExecutor.submit`` runs each work item under the *submitter's* gate (or none),
  because its worker threads are reused across submissions and would otherwise keep the gate
  of whoever happened to create them. ``map`` and asyncio's ``run_in_executor`` go through
  ``submit``; ``asyncio.to_thread`` copies the context itself.

A thread that reaches no gate this way (started before the gate, by C code, or through a
reference to ``_thread.start_new_thread`` taken before the patch) is refused by
``current_gate`` rather than guessed at (see ``gate.py``).
"""

from __future__ import annotations

import _thread
import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["install"]

_installed_thread = False
_installed_executor = False
_install_lock = threading.Lock()


def install(current: contextvars.ContextVar[Any]) -> None:
    """Patch ``Thread.start`` (once) and, if ``concurrent.futures.thread`` is loaded, the
    executor; otherwise the executor is patched the first time a thread starts after it is
    imported (its first ``submit`` starts a worker: that item runs under the inherited gate,
    which is the submitter's)."""
    global _installed_thread
    if _installed_thread and _installed_executor:
        return
    with _install_lock:
        if not _installed_thread:
            _patch_thread_start(current)
            _patch_start_new_thread(current)
            _installed_thread = True
        _maybe_patch_executor(current)


def _patch_thread_start(current: contextvars.ContextVar[Any]) -> None:
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        gate = current.get()
        if gate is not None and not getattr(self, "_capgate_gate_bound", False):
            self._capgate_gate_bound = True  # type: ignore[attr-defined]
            run = self.run

            def run_under_gate() -> None:
                token = current.set(gate)
                try:
                    run()
                finally:
                    current.reset(token)

            self.run = run_under_gate  # type: ignore[method-assign]
        if not _installed_executor:
            _maybe_patch_executor(current)
        original_start(self)

    start.__doc__ = original_start.__doc__
    threading.Thread.start = start  # type: ignore[method-assign]


def _patch_start_new_thread(current: contextvars.ContextVar[Any]) -> None:
    original = _thread.start_new_thread

    def start_new_thread(function: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any] | None = None) -> int:
        gate = current.get()
        if gate is None:
            return original(function, args, {} if kwargs is None else kwargs)

        def call_under_gate(*a: Any, **k: Any) -> Any:
            token = current.set(gate)
            try:
                return function(*a, **k)
            finally:
                current.reset(token)

        return original(call_under_gate, args, {} if kwargs is None else kwargs)

    start_new_thread.__doc__ = original.__doc__
    _thread.start_new_thread = start_new_thread
    if getattr(_thread, "start_new", None) is original:  # the old alias
        _thread.start_new = start_new_thread


def _maybe_patch_executor(current: contextvars.ContextVar[Any]) -> None:
    global _installed_executor
    module = sys.modules.get("concurrent.futures.thread")
    if _installed_executor or module is None:
        return
    executor = module.ThreadPoolExecutor
    original_submit = executor.submit

    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        gate = current.get()

        def call_under_gate() -> Any:
            token = current.set(gate)
            try:
                return fn(*args, **kwargs)
            finally:
                current.reset(token)

        return original_submit(self, call_under_gate)

    submit.__doc__ = original_submit.__doc__
    executor.submit = submit
    _installed_executor = True
