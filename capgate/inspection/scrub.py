"""Find or replace fixed byte strings in a stream cut anywhere (reads, TLS records, chunks).

Both keep back only the longest tail of what they saw that could still be the start of one of
the strings, so a server-sent event or a streamed line passes at once (its last bytes do not
begin a secret) while a value split across two reads is still caught.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StreamReplacer", "StreamScanner", "replace_all"]


def _partial_tail(buf: bytes, needles: Sequence[bytes]) -> int:
    """The length of the longest suffix of ``buf`` that is a proper prefix of a needle."""
    best = 0
    for needle in needles:
        first = needle[:1]
        limit = min(len(needle) - 1, len(buf))
        start = len(buf) - limit
        pos = buf.find(first, start)
        while pos != -1:
            k = len(buf) - pos
            if k > best and needle.startswith(buf[pos:]):
                best = k
                break  # (earlier positions give longer suffixes; the first match is the longest)
            pos = buf.find(first, pos + 1)
    return best


def replace_all(data: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    for old, new in pairs:
        data = data.replace(old, new)  # (no match: the same object back, one scan)
    return data


class StreamReplacer:
    """Replace every ``old`` with its ``new`` across ``feed`` calls; ``flush`` at the end."""

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        self.pairs = [(old, new) for old, new in pairs if old]
        self._olds = [old for old, _ in self.pairs]
        self._pending = b""
        self._in_place = all(len(old) == len(new) for old, new in self.pairs)
        self._width = max((len(old) for old in self._olds), default=1) - 1

    def feed(self, data: bytes) -> bytes:
        buf = replace_all(self._pending + data, self.pairs) if self._pending else replace_all(data, self.pairs)
        keep = _partial_tail(buf, self._olds)
        self._pending = buf[len(buf) - keep:] if keep else b""
        return buf[: len(buf) - keep] if keep else buf

    def feed_buffer(self, buf: bytearray, n: int) -> bytes | memoryview:
        """``feed(buf[:n])``, in ``buf`` itself when it can (every ``new`` as long as its
        ``old``, nothing held from before): no copy of a large read, one scan per value. The
        result may be a view of ``buf`` (``buf`` is the caller's scratch buffer: changed, and
        valid until it is refilled)."""
        if self._pending or not self._in_place:
            return self.feed(bytes(memoryview(buf)[:n]))
        for old, new in self.pairs:
            at = buf.find(old, 0, n)
            while at != -1:
                buf[at:at + len(old)] = new
                at = buf.find(old, at + len(new), n)
        keep = _partial_tail(bytes(buf[max(0, n - self._width):n]), self._olds)
        if keep:
            self._pending = bytes(buf[n - keep:n])
        return memoryview(buf)[:n - keep]

    def flush(self) -> bytes:
        out, self._pending = self._pending, b""
        return out


class StreamScanner:
    """Report which ``needles`` appear in a stream (once each), across ``feed`` calls."""

    def __init__(self, needles: Sequence[bytes]) -> None:
        self.needles = [n for n in needles if n]
        self._tail = b""
        self._width = max((len(n) for n in self.needles), default=1) - 1

    def feed(self, data: bytes) -> list[bytes]:
        if not self.needles:
            return []
        buf = self._tail + data
        found = [n for n in self.needles if n in buf]
        self._tail = buf[-self._width:] if self._width else b""
        return found
