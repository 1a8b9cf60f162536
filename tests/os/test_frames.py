"""Tests for genagent_thespian._os.frames: the codec, the checking receive buffer, the limits.

Pure objects, no actor system: every piece of a frame is checked before the next is read, a
refused frame never raises and never reaches ``pickle.loads``, and a peer without the secret
can make a receiver hold only a few dozen bytes.
"""

from __future__ import annotations

import os
import pickle
import secrets
from pathlib import Path

import pytest
from security_support import MarkerPayload

from genagent_thespian import InvalidOption, MessageTooLarge
from genagent_thespian._os.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_BYTES,
    MAX_FRAME_BYTES_ENV,
    FrameCodec,
    FrameReceiver,
    RejectionLog,
    TransportLimits,
)

DATAERR = "ACK+DATAERR"
#: Most bytes an unauthenticated peer can make a receiver buffer: the prefix and the header.
UNAUTHENTICATED_BOUND = len(str(DEFAULT_MAX_FRAME_BYTES)) + 1 + HEADER_BYTES


@pytest.fixture
def codec() -> FrameCodec:
    return FrameCodec(secrets.token_bytes(32))


def framed(body: bytes) -> bytes:
    return b"%d>" % len(body) + body


def feed(receiver: FrameReceiver, data: bytes, *, chunk: int | None = None) -> int:
    """Feed *data* the way the transport does (never more than asked); return bytes taken."""
    taken = 0
    while taken < len(data) and not receiver.isDone():
        wanted = receiver.remainingAmount()
        assert wanted >= 1
        piece = data[taken : taken + min(wanted, chunk or wanted)]
        receiver.addMore(piece)
        taken += len(piece)
    return taken


def test_round_trip_in_any_chunking(codec: FrameCodec) -> None:
    message = ("addr", {"k": [1, 2.5, "x"], "blob": os.urandom(3000)})
    wire = framed(codec.dumps(message))
    for chunk in (None, 1, 7, 100):
        receiver = FrameReceiver(codec)
        assert feed(receiver, wire, chunk=chunk) == len(wire)
        assert receiver.isDone() and receiver.rejection is None and receiver.authenticated
        assert receiver.completed() == (message, b"")
    assert codec.loads(codec.dumps(message)) == message


def test_bytes_past_the_frame_are_kept_as_extra(codec: FrameCodec) -> None:
    wire = framed(codec.dumps("first"))
    receiver = FrameReceiver(codec)
    feed(receiver, wire[:-10])
    receiver.addMore(wire[-10:] + b"next")
    assert receiver.completed() == ("first", b"next")
    receiver.removeExtra()
    assert receiver.completed() == ("first", b"")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"-5>" + b"x" * 64, "not a decimal number"),
        (b"+5>" + b"x" * 64, "not a decimal number"),
        (b" 5>" + b"x" * 64, "not a decimal number"),
        (b"1_0>" + b"x" * 64, "not a decimal number"),
        ("١٢٣>".encode(), "not a decimal number"),
        (b"0100>" + b"x" * 100, "leading zero"),
        (b"9" * 9, "longer than 8 digits"),
        (b">" + b"x" * 64, "empty"),
        (b"68>" + b"x" * 68, "shorter than the authentication header"),
        (b"%d>" % (DEFAULT_MAX_FRAME_BYTES + 1), "exceeds max_frame_bytes"),
        (b"\x80\x04\x95" + b"x" * 64, "not a decimal number"),
    ],
    ids=lambda value: repr(value[:10]) if isinstance(value, bytes) else value,
)
def test_bad_length_prefixes_are_refused_before_the_body(
    codec: FrameCodec, wire: bytes, reason: str
) -> None:
    receiver = FrameReceiver(codec)
    taken = feed(receiver, wire)
    assert receiver.rejection is not None and reason in receiver.rejection
    assert taken <= len(str(DEFAULT_MAX_FRAME_BYTES)) + 1  # nothing of the body was read
    assert receiver.isDone() and receiver.completed() is None
    assert receiver.remainingAmount() == 1  # never negative, never zero


def test_forged_header_is_refused_after_at_most_the_header(
    codec: FrameCodec, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(MarkerPayload(str(marker)))
    other = FrameCodec(secrets.token_bytes(32))
    announced = 60 * 1024 * 1024  # within max_frame_bytes: the header decides
    candidates = {
        "no header": b"%d>" % announced + payload * 10,
        "zero tags": b"%d>" % announced + b"GAT2" + bytes(64) + payload,
        "another secret": framed(other.dumps(MarkerPayload(str(marker)))),
        "the old v1 layout": framed(b"GAT1" + bytes(32) + payload),
    }
    for name, wire in candidates.items():
        receiver = FrameReceiver(codec)
        taken = feed(receiver, wire)
        assert receiver.rejection is not None, name
        assert taken <= UNAUTHENTICATED_BOUND, name
        assert not receiver.authenticated
        assert receiver.completed() is None
    assert not marker.exists()


def test_header_of_another_length_does_not_verify(codec: FrameCodec) -> None:
    """A header is bound to the length it announces: it cannot front a longer body."""
    body = codec.dumps("short")
    longer = b"%d>" % (len(body) + 1000) + body + b"x" * 1000
    receiver = FrameReceiver(codec)
    feed(receiver, longer)
    assert receiver.rejection == "header tag does not match this node's secret"


def test_tampered_body_is_refused_before_unpickling(codec: FrameCodec, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    body = bytearray(codec.dumps(["harmless", "x" * 100]))
    body[-20:] = pickle.dumps(MarkerPayload(str(marker)))[-20:]
    receiver = FrameReceiver(codec)
    feed(receiver, framed(bytes(body)))
    assert receiver.authenticated  # the header was genuine...
    assert receiver.rejection == "body tag does not match this node's secret"  # ...the body not
    assert receiver.completed() is None
    assert codec.loads(bytes(body)) == DATAERR
    assert not marker.exists()


def test_authenticated_but_unloadable_pickle_completes_as_a_data_error(codec: FrameCodec) -> None:
    body = codec.dumps("x")
    payload = b"\x80\x04\x95garbage."
    length = HEADER_BYTES + len(payload)
    forged = b"GAT2" + codec._head_tag(length) + codec._body_tag(length, payload) + payload
    receiver = FrameReceiver(codec)
    feed(receiver, framed(forged))
    assert receiver.rejection is None
    assert receiver.completed() == (DATAERR, b"")
    assert len(body) > HEADER_BYTES


def test_non_bytes_input_is_refused_without_raising(codec: FrameCodec) -> None:
    receiver = FrameReceiver(codec)
    receiver.addMore(("a tuple", "Thespian passes by mistake"))
    assert receiver.rejection == "received tuple, not bytes"
    receiver.addMore(b"more")  # ignored once refused
    assert receiver.isDone()


def test_reads_never_exceed_what_was_checked(codec: FrameCodec) -> None:
    receiver = FrameReceiver(codec)
    assert receiver.remainingAmount() == len(str(DEFAULT_MAX_FRAME_BYTES)) + 1
    receiver.addMore(b"1000>")
    assert receiver.remainingAmount() == HEADER_BYTES  # the header, not the body
    receiver.addMore(b"GAT2" + bytes(10))
    assert receiver.remainingAmount() == HEADER_BYTES - 14


def test_dumps_refuses_a_message_over_the_limit() -> None:
    codec = FrameCodec(secrets.token_bytes(32), max_frame_bytes=100_000)
    codec.dumps(b"x" * 90_000)
    with pytest.raises(MessageTooLarge, match="max_frame_bytes of 100000") as caught:
        codec.dumps(b"x" * 100_000)
    assert caught.value.limit == 100_000 and caught.value.size > 100_000
    assert isinstance(caught.value, ValueError)
    assert pickle.loads(pickle.dumps(caught.value)) == caught.value


def test_receiver_limit_follows_the_codec() -> None:
    small = FrameCodec(secrets.token_bytes(32), max_frame_bytes=100_000)
    receiver = FrameReceiver(small)
    feed(receiver, b"100001>")
    assert receiver.rejection == "announced length 100001 exceeds max_frame_bytes 100000"


def test_limits_default_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_FRAME_BYTES_ENV, raising=False)
    assert TransportLimits().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 64 * 1024 * 1024
    monkeypatch.setenv(MAX_FRAME_BYTES_ENV, "1048576")
    assert TransportLimits().max_frame_bytes == 1048576
    monkeypatch.setenv(MAX_FRAME_BYTES_ENV, "lots")
    with pytest.raises(InvalidOption, match="GENAGENT_MAX_FRAME_BYTES must be a decimal"):
        TransportLimits()
    monkeypatch.delenv(MAX_FRAME_BYTES_ENV)
    for bad in (0, 1000, -1, 2.5, True, "64M"):
        with pytest.raises(InvalidOption, match="max_frame_bytes must be an int"):
            TransportLimits(max_frame_bytes=bad)  # type: ignore[arg-type]
    limits = TransportLimits(handshake_timeout=0.5, max_pending_per_peer=1, max_pending_total=2)
    assert (limits.handshake_timeout, limits.max_pending_per_peer) == (0.5, 1)
    for bad_timeout in (0, -1, float("nan"), True, "5"):
        with pytest.raises(InvalidOption, match="handshake_timeout must be a positive"):
            TransportLimits(handshake_timeout=bad_timeout)  # type: ignore[arg-type]
    for field in ("max_pending_per_peer", "max_pending_total"):
        for bad_count in (0, -3, 1.5, False):
            with pytest.raises(InvalidOption, match=f"{field} must be a positive int"):
                TransportLimits(**{field: bad_count})  # type: ignore[arg-type]


def test_rejections_are_logged_once_per_peer_per_minute() -> None:
    now = [1000.0]
    lines: list[str] = []
    log = RejectionLog(clock=lambda: now[0], write=lambda fmt, *args: lines.append(fmt % args))
    for _ in range(5):
        log.record("10.0.0.9", "length prefix is empty")
    log.record("10.0.0.8", "no authentication header")
    now[0] += 59.0
    log.record("10.0.0.9", "no authentication header")
    assert len(lines) == 2 and log.total == 7
    now[0] += 1.0
    log.record("10.0.0.9", "no authentication header")
    assert len(lines) == 3
    assert "from 10.0.0.9: no authentication header" in lines[-1]
    assert "(5 more refused from this peer in the previous minute" in lines[-1]


def test_codec_and_receiver_reprs_hide_the_key(codec: FrameCodec) -> None:
    assert repr(codec) == f"FrameCodec(key=<masked>, max_frame_bytes={DEFAULT_MAX_FRAME_BYTES})"
    receiver = FrameReceiver(codec)
    feed(receiver, b"-1>")
    assert "not a decimal number" in repr(receiver)
