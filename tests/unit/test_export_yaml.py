"""The export's YAML writer: what it writes, a YAML reader reads back as the same data."""

from __future__ import annotations

import pytest

from capgate.export.yaml_text import dump_all, dump_document
from tests._export_samples import require

TRICKY = ["yes", "No", "on", "OFF", "y", "null", "~", "true", "1", "1e3", "0x1f", "0o17", "1_000", "12:30",
          "-", "-x", "a: b", "#c", "x #y", "*.example.org", "**.example.org", "&a", "!tag", "@x", "`x`",
          "'q'", '"q"', "%x", "a\tb", "é", "\u2028", "", " lead", "trail ", "a/", "/usr/bin", "k8s:app",
          "multi\nline\n", "no final newline\nhere", "\nleading blank\n", "two\n\n", "{x}", "[x]", "|", ">"]


def test_tricky_strings_read_back_unchanged() -> None:
    yaml = require("yaml")
    doc = {"strings": TRICKY, "keys": {s: s for s in TRICKY if s}, "numbers": [0, 7, -3], "flags": [True, False],
           "empty_map": {}, "empty_list": [], "nested": [[1, [2]], {"a": [{"b": {}}]}], "none": None}
    assert yaml.safe_load(dump_document(doc)) == doc


def test_documents_are_separate_and_ordered() -> None:
    yaml = require("yaml")
    docs = [{"kind": "A", "n": 1}, {"kind": "B", "n": 2}]
    text = dump_all(docs)
    assert text.startswith("---\nkind: A\n")
    assert list(yaml.safe_load_all(text)) == docs


def test_refuses_what_it_cannot_write_exactly() -> None:
    with pytest.raises(TypeError):
        dump_document({"x": 1.5})
    with pytest.raises(TypeError):
        dump_document({1: "x"})  # type: ignore[dict-item]
