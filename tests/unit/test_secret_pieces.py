"""Pieces of a secret are scrubbed from a response stream cut anywhere (review round 8,
finding 8: a server that quotes a cut piece of the credential header handed it back)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from capgate.inspection.pieces import BLOCK, PieceScrubber, scrub_pieces

SECRET = b"sk-real-SECRET-value-0123456789abcdefXYZ"
PLACEHOLDER = b"capgate-placeholder-" + b"p" * (len(SECRET) - 20)


def _longest_common_piece(data: bytes, secret: bytes) -> int:
    best = 0
    for i in range(len(secret)):
        for j in range(i + best + 1, len(secret) + 1):
            if secret[i:j] in data:
                best = j - i
            else:
                break
    return best


def _through(chunks: list[bytes]) -> bytes:
    scrubber = PieceScrubber([(SECRET, PLACEHOLDER)])
    return b"".join(scrubber.feed(c) for c in chunks) + scrubber.flush()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SECRET) - 1), st.integers(2 * BLOCK - 1, len(SECRET)), st.binary(max_size=40),
       st.binary(max_size=40), st.lists(st.integers(0, 200), max_size=4))
def test_a_piece_is_gone_wherever_the_stream_is_cut(start: int, length: int, before: bytes, after: bytes,
                                                   cuts: list[int]) -> None:
    piece = SECRET[start:start + length]
    data = before + b"bad authorization: " + piece + b"\n" + after
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    out = _through(chunks)
    assert len(out) == len(data)  # (Content-Length still holds)
    assert _longest_common_piece(out, SECRET) < 2 * BLOCK - 1 or _longest_common_piece(before + after, SECRET) \
        >= 2 * BLOCK - 1


def test_prefixes_and_suffixes_of_a_block_are_gone() -> None:
    for cut in range(BLOCK, len(SECRET)):
        assert SECRET[:cut] not in scrub_pieces(b"x" + SECRET[:cut] + b"y", SECRET, PLACEHOLDER)
        assert SECRET[-cut:] not in scrub_pieces(b"x" + SECRET[-cut:] + b"y", SECRET, PLACEHOLDER)


def test_the_whole_value_becomes_the_placeholder() -> None:
    assert bytes(scrub_pieces(b"<" + SECRET + b">", SECRET, PLACEHOLDER)) == b"<" + PLACEHOLDER + b">"


def test_text_without_pieces_passes_unchanged_and_at_once() -> None:
    """The control: ordinary bodies are not touched, and a streamed line is not held back."""
    rng = random.Random(7)
    body = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz \n") for _ in range(5000))
    assert _through([body[:1234], body[1234:]]) == body
    scrubber = PieceScrubber([(SECRET, PLACEHOLDER)])
    assert scrubber.feed(b"data: {\"delta\": \"hi\"}\n\n") == b"data: {\"delta\": \"hi\"}\n\n"


def test_the_relays_body_scrubber_finds_pieces_in_its_buffer_and_stops_at_its_budget() -> None:
    """``BodyScrubber.feed_buffer`` (the relay's in-place path hands it a view of its buffer):
    a piece split across two reads is scrubbed within the budget; past the budget only the
    whole value is (the control: a piece there comes through, the whole value never does)."""
    from capgate.inspection.pieces import BodyScrubber

    piece = SECRET[3:23]
    first, second = bytearray(b"a" * 100 + piece[:9]), bytearray(piece[9:] + b"\n")
    scrubber = BodyScrubber([(SECRET, PLACEHOLDER)], budget=None)
    out = bytes(scrubber.feed_buffer(first, len(first))) + bytes(scrubber.feed_buffer(second, len(second)))
    out += scrubber.flush()
    assert piece not in out and len(out) == len(first) + len(second)
    late = BodyScrubber([(SECRET, PLACEHOLDER)], budget=50)
    body = bytearray(b"b" * 60)
    tail = bytearray(b"x" + piece + b"y" + SECRET + b"z")
    out = bytes(late.feed_buffer(body, len(body))) + bytes(late.feed_buffer(tail, len(tail))) + late.flush()
    assert piece in out and SECRET not in out
