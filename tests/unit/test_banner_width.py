"""The launcher's lines fit 100 columns (issue 14): ``banner_text`` wraps a long message onto
``capgate:   `` continuation lines, never inside a word, and leaves the summary's table alone."""

from __future__ import annotations

from capgate.launcher import BANNER_WIDTH, _home_relative, banner_text


def test_a_short_message_is_one_line_unchanged() -> None:
    assert banner_text("policy: built-in defaults") == "capgate: policy: built-in defaults\n"


def test_a_long_message_continues_on_indented_lines_within_the_width() -> None:
    message = "kernel layer (Landlock): " + "the whole tree writes only in the write roots, " * 6
    lines = banner_text(message).splitlines()
    assert len(lines) > 1 and lines[0].startswith("capgate: kernel layer")
    assert all(line.startswith("capgate:   ") for line in lines[1:])
    assert all(len(line) <= BANNER_WIDTH for line in lines)
    # Nothing lost: joined back, the words are the message's.
    joined = " ".join(line.removeprefix("capgate:   ").removeprefix("capgate: ") for line in lines)
    assert joined.split() == message.split()


def test_a_long_path_is_never_broken() -> None:
    path = "/tmp/" + "x" * 120 + "/run.jsonl"
    lines = banner_text(f"audit log: {path}").splitlines()
    assert lines == ["capgate: audit log:", f"capgate:   {path}"]


def test_the_table_under_the_first_line_is_kept_as_it_is() -> None:
    row = "      1  fs.read      /" + "y" * 120
    assert banner_text(f"1 denied, 0 allowed\n  count  operation    target\n{row}") == (
        f"capgate: 1 denied, 0 allowed\n  count  operation    target\n{row}\n")


def test_the_audit_log_under_home_is_shown_with_a_tilde() -> None:
    assert _home_relative("/home/u/.local/state/capgate/audit/run.jsonl", "/home/u") == (
        "~/.local/state/capgate/audit/run.jsonl")
    assert _home_relative("/home/user2/x.jsonl", "/home/u") == "/home/user2/x.jsonl"  # (not a prefix by name)
    assert _home_relative("/var/log/x.jsonl", "/") == "/var/log/x.jsonl"


def test_an_indented_item_continues_deeper_than_itself() -> None:
    lines = banner_text("  widened: filesystem.write: " + '"/a/long/path" ' * 8 + "(from --allow-write)").splitlines()
    assert lines[0].startswith("capgate:   widened:") and len(lines) > 1
    assert all(line.startswith("capgate:     ") for line in lines[1:])
    assert all(len(line) <= BANNER_WIDTH for line in lines)
