"""Bounded, authenticated framing for Thespian's TCP transport: no unauthenticated byte is trusted.

Thespian 4.0.1 frames every message as ``b"<length>>" + body`` and trusts the length it reads:
``int()`` accepts ``-5``, ``+5``, `` 5`` or ``1_0``, a negative length makes the next
``recv`` raise ``ValueError`` outside every handler (the actor process exits, the admin stops
serving), and a length of a gigabyte is buffered in full before anything looks at the body.
This module replaces that receive path, in our transport layer, with one that checks each
piece of a frame before it reads the next:

1. **The length prefix**: ASCII digits only, no sign, no leading zero, no more digits than
   :attr:`TransportLimits.max_frame_bytes` has, then ``>``; the length must lie between the
   authentication header and ``max_frame_bytes``. At most those few bytes are read.
2. **The header** (68 bytes): the magic and a tag over the announced length, made with the
   node secret. Until it verifies, a connection holds fewer than 80 bytes of the peer's data.
3. **The body**: buffered up to the announced (and now authenticated) length only, then its
   own tag is checked, in constant time, before :func:`pickle.loads` sees a byte of it.

A frame that fails any check closes that one connection, is never acknowledged (an
unauthenticated peer gets no byte of ours), and is logged to Thespian's internal log
(``THESPLOG_FILE``) at most once per peer per minute, with a count of what was not logged.

Frame body (inside Thespian's ``b"<length>>"`` prefix, ``N`` = the body's length as 8 bytes
big-endian, ``K = HMAC-SHA256(secret, b"genagent-thespian/thespian-tcp-frame/v2")``)::

    b"GAT2" | HMAC-SHA256(K, b"GAT2head" + N) | HMAC-SHA256(K, b"GAT2body" + N + pickle) | pickle

The Thespian internals replaced here are listed, and checked at import, in
:mod:`genagent_thespian._security`, which installs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import logging
import os
import pickle
import select
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from thespian.system.timing import ExpirationTimer
from thespian.system.transport import TCPTransport, errmgmt, streamBuffer
from thespian.system.utilis import thesplog

from .._core.errors import InvalidOption, MessageTooLarge
from .._core.types import Pickled, ThespianInternal

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "HEADER_BYTES",
    "MAX_FRAME_BYTES_ENV",
    "FrameCodec",
    "FrameReceiver",
    "RejectionLog",
    "TransportLimits",
    "accept_new_incoming",
    "handle_readable_incoming",
    "rejections",
]

#: Default largest frame (the pickled message plus 68 bytes) a node accepts or sends: 64 MiB.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Environment variable overriding the default ``max_frame_bytes`` (bytes, decimal).
MAX_FRAME_BYTES_ENV = "GENAGENT_MAX_FRAME_BYTES"
_MIN_FRAME_LIMIT = 64 * 1024

_MAGIC = b"GAT2"
_KEY_LABEL = b"genagent-thespian/thespian-tcp-frame/v2"
_TAG_BYTES = hashlib.sha256().digest_size
#: Bytes of authentication header at the start of every frame body.
HEADER_BYTES = len(_MAGIC) + 2 * _TAG_BYTES
_DATAERR = str(streamBuffer.ackDataErrPacket)

#: Bytes one read may take from an authenticated frame (Thespian reads 1,024,000 at most).
_RECV_CHUNK = 1024 * 1024
#: Bytes one readable event may consume from one connection before others get their turn.
_READ_BUDGET = 4 * _RECV_CHUNK
#: Seconds between two log lines about the same peer.
_LOG_WINDOW = 60.0
#: Peers remembered by the rejection log before stale ones are forgotten.
_LOG_PEERS = 4096


@dataclasses.dataclass(frozen=True)
class TransportLimits:
    """Limits the hardened TCP transport enforces on every connection of a node.

    Every process of a node (and every client attached to it) installs the same limits with
    the transport security (see ``docs/security.md``). A convention's nodes should agree on
    ``max_frame_bytes``: a node refuses to send a frame larger than its own limit, and drops
    one larger than its own limit when it arrives.

    Connections are *unauthenticated* from the moment they are accepted until the header of
    their first frame verifies (a peer with the secret sends it at once, so a legitimate
    connection is unauthenticated for one pass of the transport's loop).

    Args:
        max_frame_bytes: Largest frame accepted or sent, in bytes (a pickled message plus a
            68-byte header). Defaults to ``$GENAGENT_MAX_FRAME_BYTES`` or 64 MiB. A message
            that does not fit fails at its sender with :class:`MessageTooLarge`.
        handshake_timeout: Seconds an accepted connection may stay unauthenticated before it
            is closed (default 5).
        max_pending_per_peer: Unauthenticated connections one peer address may hold at once
            per process (default 8); the oldest is closed when a new one would exceed it.
            Thespian's loop spends time on every open connection in each pass (measured:
            about 65 us per connection per answered ask), so this bound is what keeps
            answers fast during a flood.
        max_pending_total: Unauthenticated connections from all peers together per process
            (default 64); the oldest is closed when a new one would exceed it.

    Raises:
        InvalidOption: A limit is out of range.
    """

    max_frame_bytes: int = dataclasses.field(
        default_factory=lambda: _env_int(MAX_FRAME_BYTES_ENV, DEFAULT_MAX_FRAME_BYTES)
    )
    handshake_timeout: float = 5.0
    max_pending_per_peer: int = 8
    max_pending_total: int = 64

    def __post_init__(self) -> None:
        """Check every limit when the settings are built, so a bad value fails the node's start
        rather than its first connection.
        """
        value = self.max_frame_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_FRAME_LIMIT:
            raise InvalidOption(
                f"max_frame_bytes must be an int of at least {_MIN_FRAME_LIMIT}, got {value!r}"
            )
        timeout = self.handshake_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidOption(
                f"handshake_timeout must be a positive number of seconds, got {timeout!r}"
            )
        for name in ("max_pending_per_peer", "max_pending_total"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidOption(f"{name} must be a positive int, got {count!r}")


def _env_int(name: str, default: int) -> int:
    """An integer setting from the environment; a malformed value is an error naming the variable.

    Falling back to the default on a typo would leave an operator believing a limit is in force.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text, 10)
    except ValueError:
        raise InvalidOption(f"${name} must be a decimal integer, got {text!r}") from None


# -- the codec ---------------------------------------------------------------------------------


class FrameCodec:
    """Make and check frame bodies with the node secret.

    Has the ``dumps``/``loads`` pair Thespian's TCP transport expects of its ``serializer``;
    the receive path uses :meth:`check_header` and :meth:`check_body` through
    :class:`FrameReceiver` instead of ``loads``.
    """

    __slots__ = ("_key", "max_frame_bytes")

    def __init__(self, secret: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        """Derive the frame key from the node secret under a fixed label (domain separation),
        so the raw secret never keys a MAC itself.
        """
        self._key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
        self.max_frame_bytes = max_frame_bytes

    def __repr__(self) -> str:
        return f"FrameCodec(key=<masked>, max_frame_bytes={self.max_frame_bytes})"

    def _head_tag(self, length: int) -> bytes:
        """The MAC of a frame's length header, checked before any of the body is read.

        Authenticating the length first means an unauthenticated peer cannot make the node buffer a
        large body.
        """
        return hmac.new(
            self._key, _MAGIC + b"head" + length.to_bytes(8, "big"), hashlib.sha256
        ).digest()

    def _body_tag(self, length: int, payload: bytes | memoryview) -> bytes:
        """The MAC of the body, bound to its length so a body cannot be moved under another
        header.
        """
        mac = hmac.new(self._key, _MAGIC + b"body" + length.to_bytes(8, "big"), hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def dumps(self, obj: object) -> bytes:
        """Pickle *obj* and return the authenticated frame body.

        Raises:
            MessageTooLarge: The frame would exceed ``max_frame_bytes`` (Thespian turns this
                into a ``PoisonMessage`` for a sending actor; a client's call raises it).
        """
        payload = pickle.dumps(obj)
        length = HEADER_BYTES + len(payload)
        if length > self.max_frame_bytes:
            raise MessageTooLarge(
                f"a {type(obj).__name__} message pickles to a {length}-byte frame, over the "
                f"transport's max_frame_bytes of {self.max_frame_bytes}",
                size=length,
                limit=self.max_frame_bytes,
            )
        return b"".join((_MAGIC, self._head_tag(length), self._body_tag(length, payload), payload))

    def check_header(self, length: int, header: bytes | bytearray | memoryview) -> str | None:
        """Return why the first :data:`HEADER_BYTES` of a *length*-byte body fail, or ``None``."""
        view = memoryview(header)
        if view[: len(_MAGIC)] != _MAGIC:
            return "no authentication header"
        tag = view[len(_MAGIC) : len(_MAGIC) + _TAG_BYTES]
        if not hmac.compare_digest(tag, self._head_tag(length)):
            return "header tag does not match this node's secret"
        return None

    def check_body(self, body: bytes | bytearray | memoryview) -> str | None:
        """Return why a whole frame body (header included) fails its body tag, or ``None``."""
        view = memoryview(body)
        tag = view[len(_MAGIC) + _TAG_BYTES : HEADER_BYTES]
        if not hmac.compare_digest(tag, self._body_tag(len(view), view[HEADER_BYTES:])):
            return "body tag does not match this node's secret"
        return None

    def loads(self, body: bytes) -> Pickled:
        """Verify a whole frame body and unpickle it; Thespian's ``'ACK+DATAERR'`` if it fails."""
        view = memoryview(body)
        if len(view) <= HEADER_BYTES or len(view) > self.max_frame_bytes:
            return _DATAERR
        if self.check_header(len(view), view[:HEADER_BYTES]) or self.check_body(view):
            return _DATAERR
        return pickle.loads(view[HEADER_BYTES:])


# -- the receive buffer ------------------------------------------------------------------------


class FrameReceiver:
    """Thespian's ``ReceiveBuffer``, with every piece of a frame checked before the next is read.

    Same interface (``addMore``, ``remainingAmount``, ``isDone``, ``completed``,
    ``removeExtra``, ``is_empty``), so Thespian's transmit path (which reads acknowledgements
    and replies into one) needs no change. It never raises: a frame that fails a check sets
    :attr:`rejection`, drops what it buffered, reports itself done and completes as ``None``,
    which Thespian's transmit path treats as a corrupted acknowledgement, and
    :func:`handle_readable_incoming` as a connection to close.

    Attributes:
        rejection: Why the frame was refused, ``None`` while it is acceptable.
        peer: Address of the remote end, recorded when the connection was accepted.
    """

    __slots__ = (
        "_body",
        "_codec",
        "_done",
        "_extra",
        "_max_digits",
        "_prefix",
        "_size",
        "admitted",
        "authenticated",
        "deadline",
        "peer",
        "rejection",
    )

    def __init__(self, codec: FrameCodec, _thespian_deserializer: ThespianInternal = None) -> None:
        """Start reading one frame. The signature matches the ``ReceiveBuffer`` it replaces
        inside Thespian's transport, whose deserializer argument is not used (frames are
        decoded by the codec, after their tag is checked).
        """
        self._codec = codec
        self._max_digits = len(str(codec.max_frame_bytes))
        self._prefix = bytearray()
        self._size: int | None = None
        self._body = bytearray()
        self._extra = b""
        self._done = False
        #: Whether the header tag verified (the peer holds the secret, or replays a header).
        self.authenticated = False
        self.rejection: str | None = None
        self.peer: str | None = None
        #: For an accepted connection: when (monotonic) it must be authenticated by, and the
        #: order in which it was accepted. ``None`` for reused, already trusted connections.
        self.deadline: float | None = None
        self.admitted = 0

    @property
    def pending(self) -> bool:
        """Whether this is an accepted connection whose first header has not verified yet."""
        return self.deadline is not None and not self.authenticated and self.rejection is None

    def __repr__(self) -> str:
        state = self.rejection or ("done" if self._done else f"{len(self._body)}/{self._size}")
        return f"FrameReceiver({state})"

    def _reject(self, reason: str) -> None:
        """Refuse the frame and drop what was buffered, so a rejected peer holds no memory."""
        self.rejection = reason
        self._prefix = bytearray()
        self._body = bytearray()
        self._extra = b""

    def addMore(self, data: ThespianInternal) -> None:
        """Take bytes read from the socket; check each piece of the frame as it completes."""
        if self.rejection is not None:
            return
        if not isinstance(data, bytes | bytearray):
            self._reject(f"received {type(data).__name__}, not bytes")
            return
        if self._done:
            self._extra += data
            return
        if self._size is None:
            data = self._add_prefix(bytes(data))
            if self._size is None or self.rejection is not None:
                return
        wanted = self._size - len(self._body)
        self._body += data[:wanted]
        if len(data) > wanted:
            self._extra += data[wanted:]
        if not self.authenticated and len(self._body) >= HEADER_BYTES:
            reason = self._codec.check_header(self._size, self._body[:HEADER_BYTES])
            if reason:
                self._reject(reason)
                return
            self.authenticated = True
        if len(self._body) == self._size:
            reason = self._codec.check_body(self._body)
            if reason:
                self._reject(reason)
                return
            self._done = True

    def _add_prefix(self, data: bytes) -> bytes:
        """Consume the length prefix from *data*; return what follows its ``>``."""
        mark = data.find(b">")
        self._prefix += data if mark < 0 else data[:mark]
        digits = bytes(self._prefix)
        if digits and not digits.isdigit():
            self._reject("length prefix is not a decimal number (sign, space or other byte)")
        elif digits.startswith(b"0"):
            self._reject("length prefix has a leading zero")
        elif len(digits) > self._max_digits:
            self._reject(f"length prefix is longer than {self._max_digits} digits")
        elif mark >= 0 and not digits:
            self._reject("length prefix is empty")
        if mark < 0 or self.rejection is not None:
            return b""
        size = int(digits)
        if size <= HEADER_BYTES:
            self._reject(f"announced length {size} is shorter than the authentication header")
        elif size > self._codec.max_frame_bytes:
            self._reject(
                f"announced length {size} exceeds max_frame_bytes {self._codec.max_frame_bytes}"
            )
        else:
            self._size = size
        return data[mark + 1 :]

    def remainingAmount(self) -> int:
        """Bytes to read next: the rest of the prefix, the header, or the body (at least 1)."""
        if self.rejection is not None or self._done:
            return 1
        if self._size is None:
            return self._max_digits + 1 - len(self._prefix)
        if not self.authenticated:
            return HEADER_BYTES - len(self._body)
        return min(_RECV_CHUNK, self._size - len(self._body))

    def isDone(self) -> bool:
        """Whether no more should be read: the frame is complete, or it was refused."""
        return self._done or self.rejection is not None

    def is_empty(self) -> bool:
        """Whether nothing has been received yet."""
        return not self._prefix and self._size is None and self.rejection is None

    def removeExtra(self) -> None:
        """Forget bytes received after the end of this frame."""
        self._extra = b""

    def completed(self) -> tuple[Pickled, bytes] | None:
        """Return ``(message, extra bytes)`` of a complete, verified frame, else ``None``.

        A verified frame whose pickle cannot be loaded (a class the receiver lacks) comes back
        as Thespian's ``'ACK+DATAERR'`` control value, which both of Thespian's paths handle
        as a bad packet; the exception type is logged, never the data.
        """
        if not self._done:
            return None
        try:
            message = pickle.loads(memoryview(self._body)[HEADER_BYTES:])
        except Exception as exc:
            thesplog(
                "genagent_thespian security: an authenticated %d-byte frame could not be "
                "unpickled (%s)",
                len(self._body),
                type(exc).__name__,
                level=logging.ERROR,
            )
            message = _DATAERR
        return message, self._extra


# -- the rejection log -------------------------------------------------------------------------


def _to_thesplog(message: str, *args: object) -> None:
    # thesplog writes straight to Thespian's internal log file; the logging module would
    # forward the record through the very transport that is handling this connection.
    thesplog(message, *args, level=logging.WARNING)


class _Write(Protocol):
    """Where ``RejectionLog`` writes a line: ``(format, *args)``, as ``logging`` takes them."""

    def __call__(self, message: str, *args: object) -> None: ...


class RejectionLog:
    """Count refused frames; log at most one line per peer per minute.

    Args:
        clock: Monotonic seconds (injectable for tests).
        write: Receives ``(format, *args)`` for each line (default: Thespian's internal log).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        write: _Write = _to_thesplog,
    ) -> None:
        """A log of refused frames, rate-limited per peer; ``clock`` and ``write`` are injectable
        so tests check the rate limit without waiting or reading Thespian's log file.
        """
        self._clock = clock
        self._write = write
        self._lock = threading.Lock()
        self._peers: dict[str, tuple[float, int]] = {}
        #: Frames refused by this process so far.
        self.total = 0

    def record(self, peer: str, reason: str) -> None:
        """Count one refused frame from *peer*; log it unless *peer* was logged this minute."""
        now = self._clock()
        with self._lock:
            self.total += 1
            logged_at, unlogged = self._peers.get(peer, (None, 0))
            if logged_at is not None and now - logged_at < _LOG_WINDOW:
                self._peers[peer] = (logged_at, unlogged + 1)
                return
            self._peers[peer] = (now, 0)
            if len(self._peers) > _LOG_PEERS:
                self._peers = {
                    key: value for key, value in self._peers.items() if now - value[0] < _LOG_WINDOW
                }
        self._write(
            "genagent_thespian security: refused a TCP frame from %s: %s; connection closed "
            "(%d more refused from this peer in the previous minute were not logged)",
            peer,
            reason,
            unlogged,
        )


#: This process's refused frames (``rejections.total``) and their rate-limited log.
rejections = RejectionLog()


def _peer_of(sock: ThespianInternal) -> str:
    """The peer's address for log lines; a socket already gone gives a placeholder, not an error."""
    try:
        return str(sock.getpeername()[0])
    except (OSError, AttributeError, IndexError):
        return "an unknown peer"


# -- the receive path --------------------------------------------------------------------------


def handle_readable_incoming(
    transport: ThespianInternal, inc: ThespianInternal, has_exclusive_flag: bool = False
) -> ThespianInternal:
    """Replacement of ``TCPTransport._handleReadableIncoming``: read, check, close on failure.

    Reads what the frame's :class:`FrameReceiver` asks for (so never past a piece that has
    not been checked), as long as the socket has data and up to a budget per call, so that a
    small frame costs one pass of Thespian's loop. Socket errors are handled as Thespian
    does (retry with back-off on ``EAGAIN``, otherwise close); any other exception, and any
    refused frame, closes the connection and never escapes into the actor's loop.

    Returns:
        The incoming connection to keep watching, or ``None`` once it is closed or handed on.
    """
    return _read_incoming(transport, inc, has_exclusive_flag)


def _read_incoming(
    transport: ThespianInternal,
    inc: ThespianInternal,
    has_exclusive_flag: bool,
    *,
    probe: bool = False,
) -> ThespianInternal:
    """:func:`handle_readable_incoming`; with *probe*, nothing to read yet is no failure."""
    frame = inc._rData
    if frame.pending and time.monotonic() >= frame.deadline:
        rejections.record(frame.peer or _peer_of(inc.socket), "no authenticated header in time")
        inc.close()
        return None
    budget = _READ_BUDGET
    first = True
    while True:
        wanted = frame.remainingAmount()
        try:
            data = inc.socket.recv(wanted)
        except OSError as exc:
            if (probe or not first) and errmgmt.err_recv_inprogress(exc.errno):
                return inc  # read all that had arrived; wait for the rest
            inc.failCount = getattr(inc, "failCount", 0) + 1
            if (
                errmgmt.err_recv_inprogress(exc.errno)
                and inc.failCount < TCPTransport.MAX_CONSECUTIVE_READ_FAILURES
            ):
                inc.backoffPause(True)
                return inc
            inc.close()
            return None
        except Exception:
            inc.close()
            return None
        first = False
        inc.failCount = 0
        if not data:  # the peer closed before the frame was complete
            inc.close()
            return None
        frame.addMore(data)
        if frame.rejection is not None:
            rejections.record(frame.peer or _peer_of(inc.socket), frame.rejection)
            inc.close()
            return None
        if frame.authenticated and frame.deadline is not None:
            frame.deadline = None  # trusted from now on: Thespian's own 7-minute bound applies
            inc._expires = ExpirationTimer(TCPTransport.MAX_INCOMING_SOCKET_PERIOD)
        if frame.isDone():
            return transport._addedDataToIncoming(inc, has_exclusive_flag=has_exclusive_flag)
        budget -= len(data)
        if len(data) < wanted or budget <= 0:
            return inc


_thespian_accept_new_incoming = TCPTransport.TCPTransport._acceptNewIncoming
#: Connections accepted per readable event of the listening socket at most.
_ACCEPT_BATCH = 16
_admissions = itertools.count(1)


def accept_new_incoming(transport: ThespianInternal, limits: TransportLimits) -> None:
    """Wrapper of ``TCPTransport._acceptNewIncoming``: give new connections a deadline and a cap.

    Thespian accepts the connection; this then records the peer, gives the connection
    :attr:`TransportLimits.handshake_timeout` seconds to authenticate (Thespian's own bound is
    7 minutes) and, if the peer (or all peers together) now hold more unauthenticated
    connections than allowed, closes the oldest of them. Evicting the oldest rather than
    refusing the newest keeps a flood from locking out a legitimate sender on the same
    address (on loopback every process of the node is the same peer): a new connection is
    read at once, so a legitimate one, whose frame is usually there already, is authenticated
    before it is ever counted, and one whose frame is not there yet is the newest, not the
    oldest, when the flood's next connection arrives.
    Up to :data:`_ACCEPT_BATCH` waiting connections are accepted per call (Thespian accepts
    one per pass of its loop), so that a flood cannot keep the kernel's accept queue full
    and make a legitimate connect wait for a SYN retransmission.
    """
    for _ in range(_ACCEPT_BATCH):
        known = set(transport._incomingSockets)
        _thespian_accept_new_incoming(transport)
        for fileno, inc in list(transport._incomingSockets.items()):
            frame = getattr(inc, "_rData", None)
            if fileno in known or not isinstance(frame, FrameReceiver):
                continue
            frame.peer = _peer_of(inc.socket)
            frame.deadline = time.monotonic() + limits.handshake_timeout
            frame.admitted = next(_admissions)
            inc._expires = ExpirationTimer(timedelta(seconds=limits.handshake_timeout))
            # A sender with the secret has usually written its frame by now: read it at once,
            # so that it is authenticated before it could count against the caps.
            kept = _read_incoming(transport, inc, True, probe=True)
            if kept is None:  # refused, or a whole frame already delivered
                transport._incomingSockets.pop(fileno, None)
                continue
            transport._incomingSockets[fileno] = kept  # as Thespian's loop does
            if frame.pending:
                _evict_oldest(transport, limits, frame.peer)
        if not _more_to_accept(transport.socket):
            return


def _more_to_accept(listener: ThespianInternal) -> bool:
    """Whether the (blocking) listening socket has another connection waiting."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


def _evict_oldest(transport: ThespianInternal, limits: TransportLimits, peer: str) -> None:
    """Close the oldest unauthenticated connections beyond the per-peer and total limits.

    Legitimate peers authenticate within moments, so the oldest unauthenticated connections are the
    likeliest to be a flood's; closing them first keeps room for new handshakes. The per-peer limit
    is applied first, so a flooding peer loses its own connections before others.
    """
    pending = sorted(
        (
            (inc._rData.admitted, fileno, inc)
            for fileno, inc in transport._incomingSockets.items()
            if isinstance(getattr(inc, "_rData", None), FrameReceiver) and inc._rData.pending
        ),
        key=lambda item: item[0],
    )
    from_peer = [item for item in pending if item[2]._rData.peer == peer]
    excess = len(from_peer) - limits.max_pending_per_peer
    evicted = {fileno for _, fileno, _ in from_peer[: max(0, excess)]}
    reason = (
        f"more than {limits.max_pending_per_peer} unauthenticated connections from this peer; "
        "closed the oldest"
    )
    for _, fileno, inc in from_peer[: max(0, excess)]:
        _evict(transport, fileno, inc, reason)
    rest = [item for item in pending if item[1] not in evicted]
    excess = len(rest) - limits.max_pending_total
    reason = (
        f"more than {limits.max_pending_total} unauthenticated connections in all; "
        "closed the oldest"
    )
    for _, fileno, inc in rest[: max(0, excess)]:
        _evict(transport, fileno, inc, reason)


def _evict(transport: ThespianInternal, fileno: int, inc: ThespianInternal, reason: str) -> None:
    rejections.record(inc._rData.peer or "an unknown peer", reason)
    inc.close()
    del transport._incomingSockets[fileno]
