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
that covers it, lies in such a region. A mount can also show a write root's content without
being a bind of it: an overlay with a write root among its layers (after the kernel drops its
cached names, the overlay shows what the tree changed in the layer), or a FUSE file system
(its server may mirror anything). Such a mount's whole file system counts as a region.
Conservative on purpose: a mount table that cannot be
read, pseudo file systems (``/proc``, ``/sys``, ``/dev``) and anything ambiguous answer "not
frozen", and the caller then does the full lookup as before.

What this does not cover: changes made from outside the sandbox (the user's own processes,
which are not the adversary here), and trees that are not confined by Landlock — the caller
asks only when the process knows its tree's writes are confined to exactly these roots.
"""

from __future__ import annotations

import re

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
    return [(point, root, device) for point, root, device, _kind, _options in _parse(text)]


def _parse(text: str) -> list[tuple[str, str, str, str, str]]:
    """``parse_mountinfo`` plus each mount's file system type and its super options."""
    mounts: list[tuple[str, str, str, str, str]] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            raise ValueError(f"unexpected mountinfo line {line!r}")
        try:
            tail = fields[fields.index("-", 6) + 1:]
        except ValueError:
            tail = []
        kind = tail[0] if tail else ""
        options = tail[2] if len(tail) > 2 else ""
        mounts.append((_unescape(fields[4]), _unescape(fields[3]), fields[2], kind, options))
    return mounts


# An overlay's layers, as its super options name them (kernel 6.8+ also has the "+" forms).
_LAYER_KEYS = ("lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+")


def _layers(options: str) -> list[str]:
    """The directories an overlay's super options name (``lowerdir`` is ``:``-separated;
    ``\\`` escapes a ``:`` or ``,`` in a path, as overlayfs reads it)."""
    out: list[str] = []
    for option in options.split(","):  # (a comma inside a value is shown as \\054)
        key, _, value = option.partition("=")
        if key not in _LAYER_KEYS:
            continue
        value = _unescape(value)
        for layer in re.split(r"(?<!\\):", value) if key == "lowerdir" else [value]:
            out.append(re.sub(r"\\(.)", r"\1", layer))
    return out


def _shown_at(regions: dict[str, list[str]], mounts: list[tuple[str, str, str]]) -> list[str]:
    """The paths at which the mounts show a region (its top, or the mount's point when the
    mount shows only part of it)."""
    out: list[str] = []
    for point, inner, device in mounts:
        for region in regions.get(device, ()):
            if _within(region, inner):
                rest = region[len(inner):] if inner != "/" else region
                out.append((point.rstrip("/") + rest) or "/")
            elif _within(inner, region):
                out.append(point)
    return out


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
        table = _parse(mountinfo)
        self._mounts = [(point, root, device) for point, root, device, _kind, _options in table]
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
        # A mount whose content is a write root's by another way than a bind: an overlay with a
        # layer that overlaps a write root (or a mount of a device that holds one), and any FUSE
        # file system (its server may show anything, a write root included). Its whole file
        # system counts as a region (review round 9, finding 3: an overlay over output/ showed
        # the tree's symlink once the kernel dropped its cached names).
        touched = _shown_at(regions, self._mounts)
        for _point, _inner, device, kind, options in table:
            if kind == "fuse" or kind.startswith("fuse."):
                regions.setdefault(device, []).append("/")
            elif kind == "overlay":
                layers = _layers(options)
                if not layers or any(not layer.startswith("/") or any(_within(layer, t) or _within(t, layer)
                                                                      for t in touched) for layer in layers):
                    regions.setdefault(device, []).append("/")
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
