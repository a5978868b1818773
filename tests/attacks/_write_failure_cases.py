"""The write-failure matrix, shared by the in-process tests and the ENOSPC run (which goes
into a subprocess because it needs a small tmpfs mounted in its own mount namespace).

Every case writes through one API and one mode, is stopped part-way by one cause, ends the
file one way, and is then judged by the same three facts: the caller saw an error, the target
holds its old bytes exactly (or, for ``x``, does not exist), and the directory holds nothing
new (no temp file, no partial file)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from capgate import fs

OLD = b"old content: must survive every failed write\n"
MODES = ["w", "wb", "w+", "wb+", "a", "ab", "x", "xb", "r+", "rb+"]
ENDINGS = ["with", "close-in-finally", "small-writes-then-close"]


@dataclass(frozen=True)
class Case:
    api: str  # "write_text", "write_bytes" or "open:<mode>"
    ending: str  # one of ENDINGS (the two helpers end the file themselves: "api")

    @property
    def mode(self) -> str:
        if self.api.startswith("open:"):
            return self.api.split(":", 1)[1]
        return "wb" if self.api == "write_bytes" else "w"

    @property
    def id(self) -> str:
        return f"{self.api}-{self.ending}"


def cases() -> Iterator[Case]:
    yield Case("write_text", "api")
    yield Case("write_bytes", "api")
    for mode in MODES:
        for ending in ENDINGS:
            yield Case(f"open:{mode}", ending)


class CallerError(Exception):
    """Raised by the 'caller' inside a with block."""


def prepare(path: str, case: Case) -> None:
    """The file as it was before the write: absent for exclusive creation, else OLD."""
    if os.path.lexists(path):
        os.unlink(path)
    if "x" not in case.mode:
        with open(path, "wb") as fh:
            fh.write(OLD)


def _payload(case: Case, size: int) -> Any:
    return b"n" * size if "b" in case.mode or case.api == "write_bytes" else "n" * size


def run(case: Case, rel: str, size: int, raise_inside: bool = False) -> BaseException | None:
    """Do the write; return the exception the caller saw (None: it succeeded)."""
    data = _payload(case, size)
    try:
        if case.api == "write_text":
            fs.write_text(rel, data)
        elif case.api == "write_bytes":
            fs.write_bytes(rel, data)
        elif case.ending == "with":
            with fs.open(rel, case.mode) as fh:
                fh.write(data)
                if raise_inside:
                    raise CallerError("the caller's own error")
        else:
            fh = fs.open(rel, case.mode)
            try:
                if case.ending == "small-writes-then-close":
                    step = 4096
                    for start in range(0, size, step):
                        fh.write(data[start : start + step])
                else:
                    fh.write(data)
                if raise_inside:
                    raise CallerError("the caller's own error")
            finally:
                fh.close()
    except BaseException as exc:  # reported to the judge
        return exc
    return None


def judge(path: str, case: Case, before: set[str], seen: BaseException | None) -> list[str]:
    """What went wrong, in words (empty: the case holds)."""
    problems = []
    if seen is None:
        problems.append("the caller saw no error")
    if "x" in case.mode:
        if os.path.lexists(path):
            problems.append(f"exclusive create left a file of {os.path.getsize(path)} bytes")
    else:
        with open(path, "rb") as fh:
            now = fh.read()
        if now != OLD:
            problems.append(f"old content lost: now {len(now)} bytes {now[:20]!r}")
    after = set(os.listdir(os.path.dirname(path)))
    extra = sorted(after - before - {os.path.basename(path)})
    if extra:
        problems.append(f"left behind: {extra}")
    return problems


def matrix(directory: str, rel_dir: str, size: int, raise_inside: bool = False,
           select: Callable[[Case], bool] = lambda c: True) -> dict[str, list[str]]:
    """Run every selected case in ``directory`` (``rel_dir`` relative to the workspace)."""
    results = {}
    for case in cases():
        if not select(case):
            continue
        path = os.path.join(directory, "target.txt")
        prepare(path, case)
        before = set(os.listdir(directory))
        seen = run(case, f"{rel_dir}/target.txt", size, raise_inside)
        results[case.id] = judge(path, case, before, seen)
    return results
