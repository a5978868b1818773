"""``AuditLog.record_child`` (the launcher's fast path for a child's forwarded decisions)
writes exactly the lines ``record_many`` writes, and counts the same."""

from __future__ import annotations

import io
import json

from capgate.audit import AuditLog
from capgate.decision import Decision

ROWS: list[tuple[str, str, bool, str, str, int | None]] = [
    ("fs.read", '/tmp/a"b\\c\n\u00e9 \u2603 \x01\x7f', True, "filesystem.read[0]", "under read root /x", 12),
    ("fs.write", "/etc/x", False, "filesystem.write", 'not under any write root "quoted"', None),
    ("net.connect", "example.com:443", False, "network.enabled", "network is off", 7),
]


def _lines(log: io.StringIO) -> list[dict[str, object]]:
    out = []
    for line in log.getvalue().splitlines():
        data = json.loads(line)
        data.pop("timestamp")
        out.append(data)
    return out


def test_record_child_writes_what_record_many_writes() -> None:
    fast, general = io.StringIO(), io.StringIO()
    fast_log, general_log = AuditLog(fast), AuditLog(general)
    fast_log.record_child(ROWS)
    general_log.record_many([(op, target, Decision(allowed, reason, rule), {"source": "child", "child_pid": pid})
                             for op, target, allowed, rule, reason, pid in ROWS])
    got, want = _lines(fast), _lines(general)
    assert got == want and [list(d) for d in got] == [list(d) for d in want]  # same keys, same order
    assert fast.getvalue().count("\n") == len(ROWS)
    assert (fast_log.allowed, fast_log.denied, fast_log.summary()) == (
        general_log.allowed, general_log.denied, general_log.summary()) == (1, 2, [
            ("fs.write", "/etc/x", 1), ("net.connect", "example.com:443", 1)])


def test_record_child_keeps_allowed_lines_out_of_a_warning_level_log() -> None:
    sink = io.StringIO()
    log = AuditLog(sink, level="warning")
    log.record_child(ROWS)
    assert [d["decision"] for d in _lines(sink)] == ["deny", "deny"]
    assert log.allowed == 1 and log.denied == 2


def test_lines_are_what_structlogs_chain_writes() -> None:
    """The launcher no longer imports structlog (~40 ms with asyncio, every run): its lines,
    from ``_JsonLines``, must be exactly what the structlog chain wrote before."""
    import structlog

    ours, theirs = io.StringIO(), io.StringIO()
    reference = structlog.wrap_logger(
        structlog.WriteLogger(theirs),
        processors=[structlog.processors.add_log_level,
                    lambda _l, _n, event: {**event, "timestamp": event.get("timestamp", "T")},
                    structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(20),
    )
    log = AuditLog(ours)
    cases: list[tuple[str, str, dict[str, object]]] = [
        ("info", "run.start", {"backend": "soft", "command": ["a", "b"], "n": 3, "ok": True, "none": None,
                               "odd": object, "text": "é\u2028\"q\"", "timestamp": "T"}),
        ("warning", "child.report", {"lines": 1, "timestamp": "T"}),
        ("info", "decision", {"op": "fs.read", "target": "/x", "decision": "allow", "rule": "r", "reason": "why",
                              "timestamp": "T"}),
    ]
    for level, name, fields in cases:
        log._emit(level, name, dict(fields))
        getattr(reference, level)(name, **fields)
    assert ours.getvalue() == theirs.getvalue()
    assert [json.loads(line)["event"] for line in ours.getvalue().splitlines()] == [c[1] for c in cases]


def test_a_warning_level_log_leaves_info_events_out() -> None:
    sink = io.StringIO()
    log = AuditLog(sink, level="warning")
    log.event("run.start")
    log.warning("child.report", lines=1)
    assert [d["event"] for d in _lines(sink)] == ["child.report"]
