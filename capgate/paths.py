"""Path canonicalization and the compiled filesystem rules.

What this enforces: every filesystem decision is made on one canonical absolute path —
``~`` expanded, relative paths joined to the *workspace* (never the cwd), ``..``/``.``/
repeated slashes and every symlink hop resolved (``/proc/self/root``, ``/proc/self/fd/N`` and
``/dev/fd/N`` are symlinks too, so they resolve to what they point at). Deny patterns are
anchored to absolute gitignore patterns once, when the policy is built, and compiled into a
single regex.

What it does not do: open anything. ``capgate.fs`` opens first and then asks about the path
the kernel reports for the opened descriptor, so a path that changes after this module looked
at it cannot be used to get around a decision.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from capgate.decision import Decision
from capgate.errors import PolicyError
from capgate.ops import FS_DELETE, FS_READ, FS_WRITE

__all__ = [
    "PathMatcher",
    "PathRules",
    "anchor_pattern",
    "canonicalize",
    "coerce_path",
    "display",
    "expand_home",
    "glob_regexes",
    "is_within",
    "resolve_root",
]

_GLOB_CHARS = frozenset("*?[")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 control characters
_CASE_INSENSITIVE = sys.platform == "darwin"  # follow the filesystem, as the design says


def coerce_path(target: object) -> str:
    """Accept ``str`` or ``os.PathLike[str]``; refuse bytes, NUL bytes, empty and the rest.

    Always returns an exact ``str``: a subclass (passed in, or returned by ``__fspath__``) is
    copied into a plain one first, so no check here or later (``in``, ``startswith``, slicing,
    hashing) runs the caller's overridden methods. Raises ``TypeError``/``ValueError``; callers
    turn that into a denial.
    """
    if type(target) is not str:  # the common case first: an isinstance of an ABC costs more
        if isinstance(target, os.PathLike):
            target = os.fspath(target)
        if not isinstance(target, str):
            raise TypeError(f"path must be a str or os.PathLike[str], not {type(target).__name__}")
        # str.__str__ of a subclass returns an exact-str copy (the base slot, not an override).
        target = str.__str__(target)
    if not target:
        raise ValueError("empty path")
    if "\x00" in target:
        raise ValueError("path contains a NUL byte")
    if not target.isascii():
        # What the kernel will be given: a lone surrogate outside surrogateescape's range
        # ('\ud800') cannot be encoded, and must be refused here as malformed, not escape
        # later as UnicodeEncodeError from whichever call first encodes it.
        os.fsencode(target)
    return target


def expand_home(path: str, home: str) -> str:
    if path == "~":
        return home
    if path.startswith("~/"):
        return home.rstrip("/") + "/" + path[2:]
    return path


def canonicalize(target: object, workspace: str, home: str) -> str:
    """The canonical absolute path of ``target`` for a decision (no I/O beyond lstat/readlink)."""
    path = expand_home(coerce_path(target), home)
    if not path.startswith("/"):
        path = workspace.rstrip("/") + "/" + path
    return os.path.realpath(path)


def is_within(path: str, root: str) -> bool:
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def display(path: str, home: str) -> str:
    """``path`` with the home directory shown as ``~`` (for messages and the audit log)."""
    if home and home != "/" and is_within(path, home):
        return "~" + path[len(home) :]
    return path


def resolve_root(entry: str, workspace: str, home: str, key: str) -> str:
    """Canonicalize one ``read``/``write`` root; a relative entry must stay in the workspace.

    A relative root that leaves the workspace (``../x``, or a symlink shipped in a repo such
    as ``vendor -> ~``) is refused: a root outside the workspace must be written explicitly.
    """
    expanded = expand_home(entry, home)
    relative = not expanded.startswith("/")
    if relative:
        expanded = workspace.rstrip("/") + "/" + expanded
    resolved = os.path.realpath(expanded)
    if relative and not is_within(resolved, workspace):
        raise PolicyError(
            f"{key} {entry!r} resolves to {resolved} outside the workspace (through '..' or a "
            "symlink); a root outside the workspace must be written as an absolute or ~ path",
            key,
        )
    return resolved


def _glob_escape(literal: str) -> str:
    escaped = re.sub(r"([\\*?\[\]])", r"\\\1", literal)
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def anchor_pattern(pattern: str, workspace: str, home: str, key: str) -> tuple[str, ...]:
    """Turn a gitignore-style deny entry into patterns anchored at ``/``.

    * no slash (``.env*``) or a leading ``**/``: that name at any depth, anywhere;
    * ``~/…``: under the home directory; ``/…``: absolute; anything else with a slash: under
      the workspace root.
    The literal (glob-free) prefix of an anchored pattern is symlink-resolved, and when that
    changes it both spellings are returned, because decisions are made on resolved paths.
    """
    if pattern.startswith("!"):
        raise PolicyError(f"{key} {pattern!r}: negated patterns are not allowed in deny lists", key)
    if _CONTROL.search(pattern):
        raise PolicyError(f"{key} {pattern!r}: control characters are not allowed in deny patterns", key)
    if pattern[-1:].isspace() and not pattern.endswith("\\ "):
        # gitignore drops unescaped trailing whitespace, so "notes.txt " would mean notes.txt to
        # git and a name ending in a space to a literal reading: a typo either way, made visible.
        raise PolicyError(
            f"{key} {pattern!r}: trailing whitespace in a deny pattern (a typo? gitignore ignores it; "
            "write a trailing space of a name as '\\ ')",
            key,
        )
    trimmed = pattern.rstrip("/")
    if not trimmed:
        raise PolicyError(f"{key} {pattern!r}: pattern matches the whole filesystem", key)
    if all(part in ("*", "**") for part in trimmed.split("/")):
        # "**", "*", "**/*": gitignore reads these as "everything". pathspec compiles them to a
        # bare "." that our component matcher cannot use, so they get their own anchor.
        return (MATCH_ALL,)
    if trimmed == "~":
        trimmed = "~/"  # the home directory itself, not a file named "~"
    elif "/" not in trimmed or pattern.startswith("**/"):
        return (pattern,)
    directory_only = pattern.endswith("/")
    if trimmed.startswith("~/"):
        base, rest = home, trimmed[2:]
    elif trimmed.startswith("/"):
        base, rest = "/", trimmed.lstrip("/")
    else:
        base, rest = workspace, trimmed
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PolicyError(f"{key} {pattern!r}: '..' is not allowed in deny patterns", key)
    literal: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part) or "\\" in part:
            break
        literal.append(part)
    glob_tail = parts[len(literal) :]
    lexical = os.path.normpath(os.path.join(base, *literal))
    spellings = [lexical]
    resolved = os.path.realpath(lexical)
    if resolved != lexical:
        spellings.append(resolved)
    suffix = "/" if directory_only else ""
    out = []
    for prefix in spellings:
        text = "/" + _glob_escape(prefix.lstrip("/")) if prefix != "/" else ""
        if glob_tail:
            text = text + "/" + "/".join(glob_tail)
        out.append((text or "/") + suffix)
    return tuple(out)


# gitignore line -> regex source. Filled by pathspec at policy build time; a sandboxed child
# gets the same sources from the effective policy (``DenyPattern.regexes``) and never needs to
# import pathspec — it costs ~35 ms of start-up.
_REGEX_SOURCES: dict[str, str] = {}


# The anchored form of a deny entry that matches every path ("**", "*").
MATCH_ALL = "/"
# capgate.fs's sibling temp names (``fs._temp_name``): ``.NAME.capgate-<12 hex>.tmp``.
_TEMP_NAME = re.compile(r"\..*\.capgate-[0-9a-f]{12}\.tmp\Z", re.DOTALL)


def _glob_regex(line: str) -> re.Pattern[str]:
    """The regex for one gitignore line (pathspec's translation, named groups removed).

    ``re.DOTALL``: pathspec spells ``**`` and ``*`` with ``.``, which would not match a newline
    in a directory or file name (``data/a\nb/secret.txt`` slipped past ``data/**/secret.txt``)."""
    flags = re.DOTALL | (re.IGNORECASE if _CASE_INSENSITIVE else 0)
    source = _REGEX_SOURCES.get(line)
    if source is None:
        import pathspec

        for compiled in pathspec.GitIgnoreSpec.from_lines([line]).patterns:
            regex = getattr(compiled, "regex", None)
            if regex is not None and compiled.include:
                source = regex.pattern.replace("(?P<ps_d>", "(?:")
                break
        else:
            raise PolicyError(f"deny pattern {line!r} matches nothing")
        _REGEX_SOURCES[line] = source
    return re.compile(source, flags)


def seed_regexes(pairs: Iterable[tuple[str, str]]) -> None:
    for line, source in pairs:
        _REGEX_SOURCES.setdefault(line, source)


def _is_literal(component: str) -> bool:
    return not (_GLOB_CHARS & set(component) or "\\" in component)


def _gitignore_line(line: str) -> str:
    """``line`` as gitignore reads it: unescaped trailing whitespace is not part of a pattern
    (pathspec strips any ``str.isspace`` character; the policy loader refuses such entries,
    see ``anchor_pattern``, so this only keeps ``PathMatcher`` equal to the reference)."""
    return line if line.endswith("\\ ") else line.rstrip()


def _ends_in_space(component: str) -> bool:
    """A component that, sent to pathspec as the end of a line of its own, would lose its
    trailing whitespace (``ke? `` in ``**/ke? /**``): it must stay inside its whole line."""
    return component[-1:].isspace()


def _classify(line: str) -> tuple[str, Any]:
    """Sort one anchored deny line by shape; only ``name``, ``tail`` and ``loose`` need a regex.

    * ``("all", None)``: ``**``/``*`` — everything;
    * ``("exact", name)``, ``("prefix", p)``, ``("suffix", s)``: a component equal to, starting
      with, ending with — a name pattern (``.bashrc``, ``.env*``, ``*.pem``), also spelled
      ``**/name`` or ``**/name/**`` (the directory and what is beneath it);
    * ``("name", "/glob")``: any other one-component glob, at any depth;
    * ``("sequence", ((a, b), (c,)))``: literal components in order at any depth, ``**`` between
      groups (``**/.git/hooks``, ``**/.git/modules/**/hooks``);
    * ``("literal", "/abs/path")``: one absolute path and what is beneath it — also
      ``/abs/path/**``: capgate denies the directory itself for ``dir/**`` (the reference does:
      its regex matches ``dir/``), so its names cannot be listed, as with ``**/dir/**``;
    * ``("tail", ("/abs/lit", line))``: an absolute literal prefix and a glob below it; the
      regex is the *whole* line's, matched against the whole path (pathspec translates some
      tails alone wrongly: ``/**/*/**`` gives ``/``), tried only at and below the prefix;
    * ``("loose", line)``: what is left, matched by pathspec's regex on the whole path.

    Only whole lines, or components that do not end in whitespace, go to pathspec on their
    own (pathspec strips a line's trailing whitespace). A trailing ``/`` (directory only)
    changes nothing here: a directory pattern also matches the directory itself, since a name
    alone cannot tell a directory from a file.
    """
    line = _gitignore_line(line)
    body = line.rstrip("/")
    if line == MATCH_ALL:
        return "all", None
    if _CASE_INSENSITIVE:  # pragma: no cover - macOS: pathspec's regexes with IGNORECASE
        return ("name", "/" + body) if "/" not in body else ("loose", line)
    if body.startswith("**/"):
        parts = body.split("/")[1:]
        if parts[-1] == "**":
            parts = parts[:-1]  # "**/x/**": x's contents; with the directory rule, x itself too
        if len(parts) == 1 and parts[0] != "**" and "**" not in parts[0] and not _ends_in_space(parts[0]):
            return _classify(parts[0])  # "**/name" is "name"
        if parts and "**" not in (parts[0], parts[-1]) and all(p == "**" or _is_literal(p) for p in parts):
            groups: list[tuple[str, ...]] = []
            current: list[str] = []
            for part in parts:
                if part == "**":
                    groups.append(tuple(current))
                    current = []
                else:
                    current.append(part)
            groups.append(tuple(current))
            return "sequence", tuple(g for g in groups if g)
        return "loose", line
    if "/" not in body:
        if "**" in body:
            return "loose", line
        if _is_literal(body):
            return "exact", body
        if _simple_star(body, leading=False):
            return "prefix", body[:-1]
        if _simple_star(body, leading=True):
            return "suffix", body[1:]
        return ("loose", line) if _ends_in_space(body) else ("name", "/" + body)
    if body.startswith("/"):
        parts = body.split("/")[1:]
        lit: list[str] = []
        for part in parts:
            if not _is_literal(part):
                break
            lit.append(part)
        key = "/" + "/".join(lit) if lit else ""
        tail = parts[len(lit) :]
        if not tail or tail == ["**"]:
            return ("literal", key) if key else ("all", None)
        return "tail", (key, line)
    return "loose", line


def glob_regexes(anchored: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The (gitignore line, regex source) pairs a ``PathMatcher`` needs for these lines —
    computed where the policy is built, carried to a sandboxed child in the policy.

    Fails closed (``PolicyError``): each line matched through a regex from pathspec must deny
    a path built from it (globs filled in, ``**`` as one directory), since a translation that
    matches nothing — pathspec's ``/``-only regex for some tails, a whitespace it stripped —
    would otherwise be a deny rule that silently denies nothing. Names, literals and sequences
    involve no translation (and so cost large deny lists nothing here); lines whose character
    classes cannot be filled in (POSIX ``[:alpha:]``) are not checked."""
    needed = []
    translated = []
    for line in anchored:
        kind, value = _classify(line)
        if kind == "name":
            needed.append(str(value))
        elif kind == "tail":
            needed.append(value[1])
        elif kind == "loose":
            needed.append(str(value))
        else:
            continue
        translated.append(line)
    out = []
    for line in needed:
        _glob_regex(line)
        out.append((line, _REGEX_SOURCES[line]))
    for line in translated:
        witness = _witness(_gitignore_line(line))
        if witness is not None and not PathMatcher([(line,)]).matches(witness):
            raise PolicyError(f"capgate's matcher for {line!r} does not deny {witness!r}, a path it must deny "
                              "(an internal error: the policy is refused rather than deny nothing)")
    return tuple(out)


def _witness(line: str) -> str | None:
    """An absolute path the gitignore ``line`` matches, or None when it cannot tell."""
    components = []
    for part in line.strip("/").split("/"):
        if part in ("", "**"):
            components.append("x" if part == "**" else "")
            continue
        filled = _fill(part)
        if filled is None:
            return None
        components.append(filled)
    path = "/" + "/".join(c for c in components if c)
    return None if path == "/" else path


def _fill(glob: str) -> str | None:
    """One name matching the one-component ``glob`` (``*``/``?`` as ``x``, a class by its
    first fitting candidate)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch == "\\" and i + 1 < len(glob):
            out.append(glob[i + 1])
            i += 2
            continue
        if ch in "*?":
            out.append("x")
        elif ch == "[":
            start = i + 2 if glob[i + 1 : i + 2] in ("!", "^") else i + 1
            end = glob.find("]", start + 1)  # a "]" first in a class is one of its characters
            if end < 0:
                out.append("[")
            else:
                body = glob[i + 1 : end]
                if "[:" in body or "\\" in body:
                    return None
                negated = body[:1] in ("!", "^")
                chars = re.escape(body[1:] if negated else body).replace("\\-", "-")
                try:
                    klass = re.compile(("[^" if negated else "[") + chars + "]")
                except re.error:
                    return None
                pick = next((c for c in _CANDIDATES if c != "/" and klass.fullmatch(c)), None)
                if pick is None:
                    return None
                out.append(pick)
                i = end + 1
                continue
        else:
            out.append(ch)
        i += 1
    name = "".join(out)
    return name if name not in ("", ".", "..") else None


_CANDIDATES = "xa0A_-." + "".join(chr(c) for c in range(0x21, 0x7F)) + "é"


def _component_regex(glob_line: str) -> str:
    # pathspec's "^<glob>(?:(?:/)|$)" for "/<glob>": keep the part that matches one component.
    source = _glob_regex(glob_line).pattern
    return source[1:].split("(?:(?:/)|$)")[0].split("(?:/)")[0]


def _bucketed(items: list[tuple[str, int]]) -> tuple[tuple[int, dict[str, int]], ...]:
    """Strings grouped by length, each mapped to its first pattern index: a component is then
    tested with one slice and one hash lookup per distinct length, not once per pattern."""
    buckets: dict[int, dict[str, int]] = {}
    for text, index in items:
        buckets.setdefault(len(text), {}).setdefault(text, index)
    return tuple(sorted(buckets.items()))


# A directory's verdict: denied (True), or not denied and the glob tails anchored at or above
# it, as (index, whole-line regex) pairs, that a path beneath it must still try.
_DirVerdict = tuple[bool, tuple[tuple[int, "re.Pattern[str]"], ...]]
_DIR_CACHE_MAX = 16384
_DECISION_CACHE_MAX = 16384


class PathMatcher:
    """A set of anchored deny patterns, sorted by shape once so that a decision costs about
    the same however many patterns there are (the way git's ignore code and ripgrep's globset
    do it):

    * names (``.bashrc``, ``**/node_modules/**``) are one hash lookup per component; ``prefix*``
      and ``*suffix`` one slice and lookup per distinct length; only other globs (``a?c``) are a
      regex, one alternation over the component;
    * absolute literals (``~/.ssh``) are a hash lookup per ancestor; ``**/a/b`` sequences are
      indexed by their last component; absolute globs (``/ws/gen/*/x.key``) by their literal
      prefix, and only paths at or below it run their (whole-line) regex; the few shapes left
      form one regex.

    A path is denied when it or any ancestor matches, as a file or as a directory — so the
    verdict of a directory is computed once and cached (the policy is frozen): a file costs its
    own name's checks plus one lookup of its directory.

    ``first_match`` (run on denials only) names the first matching pattern in policy order.
    """

    def __init__(self, patterns: Sequence[tuple[str, ...]]) -> None:
        flags = re.DOTALL | (re.IGNORECASE if _CASE_INSENSITIVE else 0)  # names may contain newlines
        self._all: int | None = None
        self._exact: dict[str, int] = {}
        prefixes: list[tuple[str, int]] = []
        suffixes: list[tuple[str, int]] = []
        self._name_res: list[tuple[re.Pattern[str], int]] = []
        self._sequences: dict[str, list[tuple[tuple[tuple[str, ...], ...], int]]] = {}
        self._literal: dict[str, int] = {}
        self._tails: dict[str, list[tuple[int, re.Pattern[str]]]] = {}
        self._loose: list[tuple[re.Pattern[str], int]] = []
        for index, anchored in enumerate(patterns):
            for line in anchored:
                kind, value = _classify(line)
                if kind == "all":
                    self._all = index if self._all is None else self._all
                elif kind == "exact":
                    self._exact.setdefault(value, index)
                elif kind == "prefix":
                    prefixes.append((value, index))
                elif kind == "suffix":
                    suffixes.append((value, index))
                elif kind == "name":
                    self._name_res.append((re.compile(_component_regex(value), flags), index))
                elif kind == "sequence":
                    self._sequences.setdefault(value[-1][-1], []).append((value, index))
                elif kind == "literal":
                    self._literal.setdefault(value, index)
                elif kind == "tail":
                    key, whole = value
                    self._tails.setdefault(key, []).append((index, _glob_regex(whole)))
                else:
                    self._loose.append((_glob_regex(value), index))
        self._prefixes = _bucketed(prefixes)
        self._suffixes = _bucketed(suffixes)
        self._names = (
            re.compile("|".join(f"(?:{r.pattern})" for r, _ in self._name_res), flags) if self._name_res else None
        )
        joined = "|".join(f"(?:{r.pattern})" for r, _ in self._loose)
        self._loose_all = re.compile(joined, flags) if self._loose else None
        self._dirs: dict[str, _DirVerdict] = {}
        self._root: _DirVerdict = (False, tuple(self._tails.get("", ())))

    # -- the answer -------------------------------------------------------------------
    def matches(self, path: str) -> bool:
        """Whether any pattern matches the absolute, canonical ``path`` or an ancestor."""
        if path == "/":
            return False
        if self._all is not None:
            return True
        directory, _, name = path.rpartition("/")
        verdict = self._dirs.get(directory) if directory else self._root
        if verdict is None:
            verdict = self._directory(directory)
        if verdict[0]:
            return True
        return self._self_match(path, name, verdict[1])

    def _directory(self, directory: str) -> _DirVerdict:
        """The verdict of ``directory``, from its nearest cached ancestor down."""
        pending = []
        verdict: _DirVerdict | None = None
        current = directory
        while current:
            verdict = self._dirs.get(current)
            if verdict is not None:
                break
            pending.append(current)
            current = current.rpartition("/")[0]
        if verdict is None:
            verdict = self._root
        if len(self._dirs) + len(pending) > _DIR_CACHE_MAX:
            self._dirs.clear()
        for path in reversed(pending):
            if verdict[0]:
                self._dirs[path] = verdict
                continue
            denied = self._self_match(path, path.rpartition("/")[2], verdict[1])
            tails = verdict[1]
            own = self._tails.get(path) if self._tails else None
            if own and not denied:
                tails = (*tails, *own)
            verdict = (denied, tails)
            self._dirs[path] = verdict
        return verdict

    def _self_match(self, path: str, name: str, tails: tuple[tuple[int, re.Pattern[str]], ...]) -> bool:
        """Whether ``path`` itself (not an ancestor) matches, as a file or as a directory;
        ``tails``: the glob tails anchored above ``path`` (its own are looked up here)."""
        if name in self._exact:
            return True
        for length, bucket in self._prefixes:
            if name[:length] in bucket:
                return True
        for length, bucket in self._suffixes:
            if name[-length:] in bucket:
                return True
        if self._names is not None and self._names.fullmatch(name):
            return True
        if path in self._literal:
            return True
        if name in self._sequences and self._sequence_hit(path, name) is not None:
            return True
        if self._tails:
            own = self._tails.get(path)
            if own:
                tails = (*tails, *own)
        if tails:
            rel = path[1:]
            for _, regex in tails:
                if regex.match(rel) or regex.match(rel + "/"):
                    return True
        if self._loose_all is not None:
            rel = path[1:]
            if self._loose_all.match(rel) or self._loose_all.match(rel + "/"):
                return True
        return False

    def _sequence_hit(self, path: str, name: str) -> int | None:
        """First index of a ``**/a/b`` sequence that ends at ``path``."""
        components = path[1:].split("/")
        hits = [index for groups, index in self._sequences.get(name, ()) if _sequence_ends_here(components, groups)]
        return min(hits) if hits else None

    # -- naming the rule (denials only) -------------------------------------------------
    def first_match(self, path: str) -> int | None:
        """Index of the first pattern (in policy order) matching ``path``, or None."""
        if not self.matches(path):
            return None
        hits: list[int] = [self._all] if self._all is not None else []
        components = path[1:].split("/")
        for depth in range(1, len(components) + 1):
            here = "/" + "/".join(components[:depth])
            name = components[depth - 1]
            if name in self._exact:
                hits.append(self._exact[name])
            for length, bucket in self._prefixes:
                if name[:length] in bucket:
                    hits.append(bucket[name[:length]])
            for length, bucket in self._suffixes:
                if name[-length:] in bucket:
                    hits.append(bucket[name[-length:]])
            hits += [i for r, i in self._name_res if r.fullmatch(name)]
            if here in self._literal:
                hits.append(self._literal[here])
            found = self._sequence_hit(here, name) if name in self._sequences else None
            if found is not None:
                hits.append(found)
            rel = here[1:]
            for anchor, regexes in self._tails.items():
                if anchor == "" or is_within(here, anchor):
                    hits += [i for i, r in regexes if r.match(rel) or r.match(rel + "/")]
            hits += [i for r, i in self._loose if r.match(rel) or r.match(rel + "/")]
        return min(hits) if hits else -1


def _sequence_ends_here(components: list[str], groups: tuple[tuple[str, ...], ...]) -> bool:
    """Whether ``groups`` (literal runs, ``**`` between them) occur in order in
    ``components`` with the last run ending at the last component."""
    last = groups[-1]
    end = len(components) - len(last)
    if end < 0 or tuple(components[end:]) != last:
        return False
    position = 0
    for group in groups[:-1]:
        size = len(group)
        while position + size <= end and tuple(components[position : position + size]) != group:
            position += 1
        if position + size > end:
            return False
        position += size
    return True


def _simple_star(body: str, *, leading: bool) -> bool:
    """``*suffix`` (leading) or ``prefix*`` (trailing) with no other glob characters."""
    if len(body) < 2 or "\\" in body:
        return False
    core = body[1:] if leading else body[:-1]
    star = body[0] if leading else body[-1]
    return star == "*" and not (_GLOB_CHARS & set(core))


def _entry(entries: Sequence[Any], index: int | None) -> Any:
    if index is not None and index >= 0:
        return entries[index]
    from capgate.policy.model import DenyPattern

    return DenyPattern("(pattern)", (), "filesystem.deny")


def _roots_match(path: str, roots: Iterable[str]) -> str | None:
    for root in roots:
        if is_within(path, root):
            return root
    return None


class PathRules:
    """The filesystem decision table, compiled from a ``FilesystemPolicy``.

    Deny beats allow: ``denyRead`` denies reads and writes, ``denyWrite`` and the
    mandatory list deny writes and deletes, the protected files (policy, audit log) deny
    writes. Otherwise a read needs a read root, a write root or a runtime root; a write or
    delete needs a write root (and never the root itself for a delete).
    """

    def __init__(self, fs_policy: object, home: str) -> None:
        from capgate.policy.model import FilesystemPolicy

        assert isinstance(fs_policy, FilesystemPolicy)
        self._fs = fs_policy
        self._home = home
        for entry in (*fs_policy.deny_read, *fs_policy.deny_write):
            seed_regexes(entry.regexes)
        self._deny_read = PathMatcher([p.anchored for p in fs_policy.deny_read])
        self._deny_write = PathMatcher([p.anchored for p in fs_policy.deny_write])
        self._readable = tuple(fs_policy.read) + tuple(fs_policy.write)
        self._protected = frozenset(fs_policy.protected)
        # The policy is frozen and a decision depends on (op, canonical path) alone: remember
        # answers, per operation, up to a bound (cleared, not evicted one by one, past it).
        self._decided: dict[str, dict[str, Decision]] = {
            key: {} for op in (FS_READ, FS_WRITE, FS_DELETE) for key in (op, op + "/no-temp-rule")
        }

    def decide(self, op: str, path: str, *, temp_rule: bool = True) -> Decision:
        """Allow or deny ``op`` on the canonical ``path`` — a pure function of the two (and
        ``temp_rule``), so answers are remembered per operation, up to a bound (cleared, not
        evicted one by one, past it).

        ``temp_rule=False`` skips rule ``fs.tempFile`` (the names of ``capgate.fs``'s unfinished
        writes). That rule keeps ``fs``'s output quota honest: the quota is charged when the
        temp file is committed, so renaming one out through ``fs`` would escape it. The soft
        hooks pass False: a plain ``open()`` write is not charged to any quota, so the name
        protects nothing there, and ``capgate.fs`` inside the sandbox creates, renames and
        removes its own temp files through those very hooks."""
        cache = self._decided.get(op if temp_rule else op + "/no-temp-rule")
        if cache is None:
            return self._decide(op, path, temp_rule)
        decision = cache.get(path)
        if decision is None:
            decision = self._decide(op, path, temp_rule)
            if len(cache) >= _DECISION_CACHE_MAX:
                cache.clear()
            cache[path] = decision
        return decision

    def deny_lists(self, op: str, path: str) -> Decision | None:
        """The denial the deny lists give ``op`` on ``path`` (``denyRead``, the temp names,
        the protected files, ``denyWrite`` and the mandatory list), or None: ``decide`` without
        the roots, for a walk that stays beneath the roots by construction (the namespace
        view's scan). The same tables as ``decide``, which starts with this very check."""
        return self._denial(op, path, True)

    def _denial(self, op: str, path: str, temp_rule: bool) -> Decision | None:
        fs = self._fs
        if self._deny_read.matches(path):
            entry = _entry(fs.deny_read, self._deny_read.first_match(path))
            return Decision.deny(f"denyRead {entry.source!r}", entry.key, path)
        if op == FS_READ:
            return None
        if op not in (FS_WRITE, FS_DELETE):
            return Decision.deny(f"unknown filesystem operation {op!r}", "gate.op", path)
        if temp_rule and _TEMP_NAME.match(path.rpartition("/")[2]):
            # An unfinished atomic write of capgate.fs: its bytes are charged to the quota
            # and its content published only when the writer closes it. Renaming it out (or
            # writing, removing it) would make unaccounted, non-atomic files.
            return Decision.deny("the temp file of an unfinished capgate write", "fs.tempFile", path)
        if path in self._protected:
            return Decision.deny("protected file (policy or audit log)", "filesystem.protected", path)
        if self._deny_write.matches(path):
            entry = _entry(fs.deny_write, self._deny_write.first_match(path))
            label = "mandatory denyWrite" if entry.mandatory else "denyWrite"
            return Decision.deny(f"{label} {entry.source!r}", entry.key, path)
        return None

    def _decide(self, op: str, path: str, temp_rule: bool) -> Decision:
        denial = self._denial(op, path, temp_rule)
        if denial is not None:
            return denial
        fs = self._fs
        if op == FS_READ:
            root = _roots_match(path, self._readable)
            if root is not None:
                return Decision.allow(f"under read root {display(root, self._home)}", "filesystem.read", path)
            root = _roots_match(path, fs.runtime_read)
            if root is not None:
                return Decision.allow(f"runtime root {display(root, self._home)}", "runtime.read", path)
            return Decision.deny("not under any read root", "filesystem.read", path)
        root = _roots_match(path, fs.write)
        if root is None:
            return Decision.deny("not under any write root", "filesystem.write", path)
        if op == FS_DELETE and path == root:
            return Decision.deny("a write root itself cannot be deleted", "filesystem.write", path)
        return Decision.allow(f"under write root {display(root, self._home)}", "filesystem.write", path)

    def recursive_delete_root(self, path: str) -> str | None:
        return _roots_match(path, self._fs.recursive_delete)
