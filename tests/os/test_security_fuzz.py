"""Hypothesis fuzzing of every port of a running leader with random and mutated frames.

The attacker holds no secret. Its frames are built from pieces (length prefix, header, tags,
body) that are random, forged or taken from genuine frames and then mutated (bits flipped,
bytes inserted or deleted), truncated and concatenated, and sent to any listening port of the
node. Genuine frames are made with this process's codec, so mutations explore the checks
themselves, not only the first byte.

The oracle: every process of the node is the one that was there before (none ended, none
replaced), every service answers (:meth:`Leader.assert_serving`), the agent answers an ``ask``
after every example, no pickled ``__reduce__`` payload ran (its marker file does not exist),
and no process grew by more than a bounded amount of memory.
"""

from __future__ import annotations

import errno
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from security_support import MarkerPayload
from transport_attacks import Leader, rss_kib

from genagent_thespian._os.frames import DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES, FrameCodec
from genagent_thespian.testing import system_processes

HOST = "127.0.0.1"
EXAMPLES = 250
#: RSS growth (KiB) any process of the node may show over the whole run.
RSS_BOUND_KIB = 16 * 1024


@pytest.fixture(scope="module")
def leader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leader]:
    node = Leader(tmp_path_factory.mktemp("fuzz") / "store.sqlite3")
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers") / "pwned"


def _installed_codec() -> FrameCodec:
    from thespian.system.transport import TCPTransport

    codec = TCPTransport.serializer
    assert isinstance(codec, FrameCodec), "the leader fixture installs the hardening first"
    return codec


def _prefixed(body: bytes) -> bytes:
    return b"%d>" % len(body) + body


# -- strategies --------------------------------------------------------------------------------

prefixes = st.one_of(
    st.integers(-(10**12), 10**12).map(lambda n: str(n).encode()),
    st.sampled_from([b"", b"+5", b" 5", b"1_0", b"0x10", b"05", "١٢".encode(), b"9" * 30]),
    st.integers(0, DEFAULT_MAX_FRAME_BYTES * 2).map(lambda n: str(n).encode()),
    st.binary(max_size=12),
)
headers = st.one_of(
    st.binary(max_size=HEADER_BYTES + 8),
    st.binary(min_size=HEADER_BYTES - 4, max_size=HEADER_BYTES - 4).map(lambda b: b"GAT2" + b),
    st.just(b"GAT1" + bytes(32)),
)


@st.composite
def forged_frames(draw: st.DrawFn, marker_path: str) -> bytes:
    """A prefix, a header and a body that hold no valid tag, in any combination."""
    body = draw(
        st.one_of(
            st.binary(max_size=512),
            st.just(pickle.dumps(MarkerPayload(marker_path))),
        )
    )
    header = draw(headers)
    consistent = draw(st.booleans())  # the length the rest really has, or anything
    prefix = str(len(header) + len(body)).encode() if consistent else draw(prefixes)
    separator = draw(st.sampled_from([b">", b">", b"", b">>", b"<"]))
    return prefix + separator + header + body


@st.composite
def mutated_genuine_frames(draw: st.DrawFn, marker_path: str) -> bytes:
    """A genuine frame (made with the node's secret) with bytes flipped, inserted or cut."""
    codec = _installed_codec()
    message = draw(
        st.one_of(
            st.text(max_size=64),
            st.binary(max_size=256),
            st.just(("to-someone", "a message")),
        )
    )
    genuine = _prefixed(codec.dumps(message))
    frame = bytearray(genuine)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(frame) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "marker"]))
        if action == "flip":
            frame[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            frame[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and len(frame) > 1:
            del frame[position]
        elif action == "marker":
            frame[position:] = pickle.dumps(MarkerPayload(marker_path))
    assume(bytes(frame) != genuine)  # two flips of one bit cancel: not an attack
    return bytes(frame)


@st.composite
def attacks(draw: st.DrawFn, marker_path: str) -> bytes:
    """One connection's bytes: frames (forged or mutated), truncated and concatenated."""
    pieces = draw(
        st.lists(
            st.one_of(
                forged_frames(marker_path),
                mutated_genuine_frames(marker_path),
                st.binary(max_size=256),
            ),
            min_size=1,
            max_size=3,
        )
    )
    data = b"".join(pieces)
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated anywhere
    return data


def _send(port: int, data: bytes) -> None:
    """Send *data* and hang up; a receiver that already closed (reset) is fine."""
    with socket.create_connection((HOST, port), timeout=10) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            while conn.recv(4096):  # a refused frame is closed at once, unanswered
                pass
        except TimeoutError:
            pass  # an incomplete frame the receiver still waits for: we hang up
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise


@pytest.mark.slow
def test_fuzzed_frames_on_every_port_end_nothing_and_run_nothing(
    leader: Leader, marker: Path
) -> None:
    ports = sorted(leader.all_ports())
    before = leader.pids()
    processes = system_processes(leader.system)
    rss_before = {pid: rss_kib(pid) for pid in processes}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(port=st.sampled_from(ports), data=attacks(str(marker)))
    def attack(port: int, data: bytes) -> None:
        _send(port, data)
        assert leader.ask() == "pong"
        assert not marker.exists()

    attack()
    leader.assert_serving(before)
    assert not marker.exists()
    growth = {pid: rss_kib(pid) - rss_before[pid] for pid in processes}
    assert max(growth.values()) < RSS_BOUND_KIB, growth
