"""Plain data (dicts, lists, strings, ints, bools) as YAML text, one document per object.

Why not PyYAML: the export needs only this one direction, for data capgate itself built, and a
dependency for it would be the only one ``capgate export`` has. The output is deliberately
boring and stable (same input, same bytes — golden files diff cleanly):

- block style, two-space indent, keys in the order the builders put them;
- a string is written plain only when it is a conservative identifier-like word that no YAML
  1.1 or 1.2 reader takes for anything else (``yes``, ``on``, ``null``, ``1e3``, ``0x1f`` and
  the like are quoted); everything else is a JSON string, which is a valid YAML double-quoted
  scalar, so no escaping rules of our own;
- a multi-line text (the policy file in the ConfigMap) is a literal block (``|``) when it can
  be carried exactly (one final newline, printable characters), else a JSON string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dump_all", "dump_document"]

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
# Words YAML 1.1 (what many Kubernetes tools still read) turns into booleans or nulls.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED and not value.endswith(("/", "-")):
            return value
        return json.dumps(value, ensure_ascii=True)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _literal_ok(value: Any) -> bool:
    """A multi-line text that a literal block (``|``) carries exactly: one final newline, no
    leading blank or space (that would need an indentation indicator), printable characters."""
    return (isinstance(value, str) and "\n" in value[:-1] and value.endswith("\n") and not value.endswith("\n\n")
            and value[0] not in " \n" and all(ch == "\n" or (ch.isprintable() and ch != "\t") for ch in value))


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, not {type(key).__name__}")
    return _scalar(key)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping) and item:
                out.append(f"{pad}{_key(key)}:")
                out.extend(_lines(item, indent + 2))
            elif isinstance(item, Sequence) and not isinstance(item, str) and item:
                out.append(f"{pad}{_key(key)}:")
                out.extend(_lines(item, indent))
            elif _literal_ok(item):
                out.append(f"{pad}{_key(key)}: |")
                out.extend(f"{pad}  {line}" if line else "" for line in item[:-1].split("\n"))
            else:
                out.append(f"{pad}{_key(key)}: {_inline(item)}")
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if (isinstance(item, Mapping) or (isinstance(item, Sequence) and not isinstance(item, str))) and item:
                nested = _lines(item, indent + 2)
                out.append(f"{pad}- {nested[0][indent + 2:]}")
                out.extend(nested[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + _scalar(value)]


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[]"
    return _scalar(value)


def dump_document(obj: Mapping[str, Any]) -> str:
    """One object as a YAML document (without the ``---`` separator)."""
    return "\n".join(_lines(obj, 0)) + "\n"


def dump_all(objects: Sequence[Mapping[str, Any]]) -> str:
    """Every object as its own document, separated by ``---``, in the order given."""
    return "".join(f"---\n{dump_document(obj)}" for obj in objects)
