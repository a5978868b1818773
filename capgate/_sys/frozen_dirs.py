"""Which directories no process of a Landlock-confined tree can change.

Why: the soft sandbox's ``open`` hook resolves every path again (an ``openat2`` that refuses
symlinks, an ``fstat`` for the link count) so the gate judges the object the open will reach.
That lookup is most of what a gated read costs. For a file whose directory chain the tree
cannot change, the answer cannot change either: the names on the way stay the same objects,
no symlink can appear among them and no hard link can be made to or from the file. Landlock
gives exactly that guarantee for everything outside the write roots: creating, removing,
renaming and linking need a write right on the directory that holds the name, and a
Landlock-confined process cannot mount (it cannot change the tree's topology either). So the
first lookup's answer may be reused for the life of the process.

Landlock's rules are on *inodes*, and it walks the path the kernel took, through mounts,
checking every directory on the way. A write root bind-mounted elsewhere (or a file system
mounted inside a write root and also elsewhere) makes directories writable under a second
path that is not beneath any write root. So the question is answered on the mount table
(``/proc/self/mountinfo``), in file-system terms: a write root is the region
``(device, path inside that file system)`` of its mount, plus the whole of every mount made
beneath it; a directory is frozen when no directory on the way to it, seen through any mount
that covers it, lies in such a region. Conservative on purpose: a mount table that cannot be
read, pseudo file systems (``/proc``, ``/sys``, ``/dev``) and anything ambiguous answer "not
frozen", and the caller then does the full lookup as before.

What this does not cover: changes made from outside the sandbox (the user's own processes,
which are not the adversary here), and trees that are not confined by Landlock — the caller
asks only when the process knows its tree's writes are confined to exactly these roots.
"""

from __future__ import annotations

__all__ = ["CONFINED_ENV", "CONFINED_WRITES", "FrozenDirs", "parse_mountinfo"]

# Set in a soft-sandboxed child's environment (``CONFINED_ENV=CONFINED_WRITES``) by the process
# that applied the run's Landlock plan, once it took effect, when that plan confines the
# tree's writes to the policy's write roots: the spawner, the supervisor's fork fallback, or
# ns_exec inside the namespace view (they repeat these strings: they import no capgate module).
CONFINED_ENV = "CAPGATE_LANDLOCK"
CONFINED_WRITES = "writes"

_PSEUDO = ("/proc", "/sys", "/dev")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str, str]]:
    """``(mount point, root inside its file system, device "major:minor")`` per mount, in the
    table's order (a later mount on the same point covers the earlier one)."""
    mounts: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            raise ValueError(f"unexpected mountinfo line {line!r}")
        mounts.append((_unescape(fields[4]), _unescape(fields[3]), fields[2]))
    return mounts


def _within(path: str, root: str) -> bool:
    return path == root or root == "/" or path.startswith(root + "/")


def _inside(path: str, mount_point: str, root: str) -> str:
    """``path`` (beneath ``mount_point``) as a path inside the mount's file system."""
    rest = path[len(mount_point):] if mount_point != "/" else path
    if root == "/":
        return rest or "/"
    return root + rest if rest else root


class FrozenDirs:
    """``frozen(directory)``: True when, under a Landlock domain whose writes are confined to
    ``write_roots`` (canonical paths), no process of the tree can change which object any
    name on the way to ``directory`` refers to, nor add or remove a name in it."""

    def __init__(self, write_roots: list[str], mountinfo: str) -> None:
        self._mounts = parse_mountinfo(mountinfo)
        # device -> the roots (inside that file system) of the regions the tree may change
        regions: dict[str, list[str]] = {}
        for root in write_roots:
            covering = self._covering(root)
            if not covering:
                raise ValueError(f"no mount holds the write root {root}")
            point, inner, device = covering[-1]
            regions.setdefault(device, []).append(_inside(root, point, inner))
            for point, inner, device in self._mounts:
                if _within(point, root):
                    regions.setdefault(device, []).append(inner)
        self._regions = regions
        # Only mounts of a device that holds a region can put a directory inside one.
        self._relevant = [m for m in self._mounts if m[2] in regions]
        self._known: dict[str, bool] = {"/": self._own_name_frozen("/")}

    def _covering(self, path: str) -> list[tuple[str, str, str]]:
        """The mounts whose point is ``path`` or above it, the one a lookup lands on last (the
        longest point; on one point, the later mount covers the earlier)."""
        return sorted((m for m in self._mounts if _within(path, m[0])), key=lambda m: len(m[0]))

    def _own_name_frozen(self, path: str) -> bool:
        """No region holds ``path`` seen through any mount that covers it (every mount on
        that point or above it, covered ones included: more than the walk can take, never less)."""
        for point, inner, device in self._relevant:
            if _within(path, point):
                here = _inside(path, point, inner)
                if any(_within(here, region) for region in self._regions[device]):
                    return False
        return True

    def frozen(self, directory: str) -> bool:
        """``directory``: canonical (absolute, normalised, no symlink on the way)."""
        known = self._known.get(directory)
        if known is not None:
            return known
        if not directory.startswith("/") or any(_within(directory, p) for p in _PSEUDO):
            return False
        parent = directory.rsplit("/", 1)[0] or "/"
        answer = self.frozen(parent) and self._own_name_frozen(directory)
        if len(self._known) > 65536:
            self._known.clear()
        self._known[directory] = answer
        return answer
