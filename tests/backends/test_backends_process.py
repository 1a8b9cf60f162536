"""Tests of backends/_process.py: line framing, process groups, stderr, escalating stop."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from genagent_thespian.backends._process import (
    CliProcess,
    LineFramer,
    OversizedLine,
    ProcessStartError,
    group_members,
    redact,
)
from support_cli import assert_groups_gone, fake_cli

pytestmark = pytest.mark.timeout(60)


def drain(framer: LineFramer) -> list[bytes | OversizedLine]:
    lines = []
    while (line := framer.pop()) is not None:
        lines.append(line)
    return lines


def read_all(process: CliProcess, timeout: float = 10.0) -> list[bytes | OversizedLine]:
    """Read every line up to end of file, then stop (reap) the process."""
    lines: list[bytes | OversizedLine] = []
    while True:
        try:
            line = process.read_line(timeout)
        except EOFError:
            process.wait(10)
            process.stop(grace=1)
            return lines
        assert line is not None, "no output within the timeout"
        lines.append(line)


# -- LineFramer --------------------------------------------------------------------------


def test_framer_joins_lines_split_across_chunks_and_strips_cr() -> None:
    framer = LineFramer()
    for chunk in (b'{"a"', b": 1}\r\n{", b'"b": 2}\n', b"tail"):
        framer.feed(chunk)
    assert drain(framer) == [b'{"a": 1}', b'{"b": 2}']
    framer.finish()
    assert drain(framer) == [b"tail"]


def test_framer_keeps_whitespace_at_chunk_seams() -> None:
    framer = LineFramer()
    framer.feed(b"hello ")
    framer.feed(b" world\n")
    assert drain(framer) == [b"hello  world"]


def test_framer_replaces_an_oversized_line_by_a_marker_and_recovers() -> None:
    framer = LineFramer(max_line_bytes=10)
    framer.feed(b"short\n" + b"x" * 8)
    framer.feed(b"x" * 8 + b"\nnext\n")
    lines = drain(framer)
    assert lines[0] == b"short"
    assert isinstance(lines[1], OversizedLine) and lines[1].limit == 10
    assert "10-byte limit" in str(lines[1])
    assert lines[2] == b"next"


def test_framer_accepts_a_line_of_exactly_the_limit() -> None:
    framer = LineFramer(max_line_bytes=4)
    framer.feed(b"abcd\nabcde\n")
    lines = drain(framer)
    assert lines[0] == b"abcd"
    assert isinstance(lines[1], OversizedLine)


def test_framer_rejects_a_non_positive_limit() -> None:
    with pytest.raises(ValueError):
        LineFramer(max_line_bytes=0)


# -- CliProcess ----------------------------------------------------------------------------


def test_process_runs_in_its_own_group_with_stderr_apart(tmp_path: Path) -> None:
    script = fake_cli(
        tmp_path,
        """
        import os, sys
        print("out-1", flush=True)
        print("err-1", file=sys.stderr, flush=True)
        print(os.getpgid(0), os.getsid(0), flush=True)
        """,
    )
    process = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    lines = read_all(process)
    assert lines[0] == b"out-1"
    pgid, sid = (int(v) for v in lines[1].split())  # type: ignore[union-attr]
    assert pgid == process.pid == process.pgid == sid
    assert pgid != os.getpgid(0)
    assert process.wait(5) == 0
    assert process.stderr_tail() == "err-1"


def test_process_reads_a_line_of_several_megabytes(tmp_path: Path) -> None:
    script = fake_cli(tmp_path, 'import sys\nsys.stdout.write("y" * 3_000_000 + "\\nend\\n")\n')
    process = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    lines = read_all(process)
    assert [len(line) for line in lines] == [3_000_000, 3]  # type: ignore[arg-type]


def test_process_stdin_is_closed_unless_kept_open(tmp_path: Path) -> None:
    script = fake_cli(tmp_path, "import sys\nprint(repr(sys.stdin.read()), flush=True)\n")
    closed = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    assert read_all(closed) == [b"''"]
    kept = CliProcess([script], cwd=str(tmp_path), env=os.environ, keep_stdin_open=True)
    assert kept.read_line(0.3) is None  # waits for input
    kept.write_line("hello")
    kept.close_stdin()
    assert read_all(kept) == [b"'hello\\n'"]
    with pytest.raises(BrokenPipeError):
        kept.write_line("late")


def test_process_start_failure_names_the_program(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-cli")
    with pytest.raises(ProcessStartError, match="no-such-cli"):
        CliProcess([missing], cwd=str(tmp_path), env=os.environ)


def test_stop_escalates_to_sigkill_and_ends_the_whole_group(tmp_path: Path) -> None:
    # The leader ignores SIGINT and SIGTERM; its child (same group) outlives everything
    # short of SIGKILL.
    script = fake_cli(
        tmp_path,
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN);"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child', flush=True);"
            "time.sleep(60)"])
        time.sleep(60)
        """,
    )
    process = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    assert process.read_line(10) == b"child"
    assert len(process.members()) == 2
    status = process.stop(grace=0.3)
    assert status == -signal.SIGKILL
    assert_groups_gone([process.pgid])
    assert process.stop(grace=0.1) == -signal.SIGKILL  # idempotent


def test_stop_with_sigint_lets_a_cooperative_program_exit(tmp_path: Path) -> None:
    script = fake_cli(
        tmp_path,
        """
        import time
        try:
            print("ready", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
    )
    process = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    assert process.read_line(10) == b"ready"
    assert process.stop(grace=5) == 0
    assert read_all(process) == [b"interrupted"]
    assert group_members(process.pgid) == []


#: What a node started with ``nohup`` or ``&`` in a non-interactive shell ignores.
NOHUP_AND_BACKGROUND = (signal.SIGINT, signal.SIGHUP)


def test_a_program_started_by_a_node_that_ignores_sigint_still_exits_on_it(
    tmp_path: Path,
) -> None:
    """A node started with ``&`` or ``nohup`` ignores SIGINT/SIGHUP; its programs must not."""
    script = fake_cli(
        tmp_path,
        """
        import signal, time
        try:
            print("ready", signal.getsignal(signal.SIGHUP) == signal.SIG_DFL, flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
    )
    ignored = {
        signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGHUP)
    }
    try:
        process = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    finally:
        for signum, previous in ignored.items():
            signal.signal(signum, previous)
    assert process.read_line(10) == b"ready True"
    assert process.stop(grace=5) == 0, "the SIGINT was ignored and the program was killed"
    assert read_all(process) == [b"interrupted"]


def test_stop_closing_stdin_first_is_a_clean_exit(tmp_path: Path) -> None:
    script = fake_cli(tmp_path, "import sys\nsys.stdin.read()\nprint('bye', flush=True)\n")
    process = CliProcess([script], cwd=str(tmp_path), env=os.environ, keep_stdin_open=True)
    assert process.stop(close_stdin_first=True, signals=(), grace=5) == 0
    assert read_all(process) == [b"bye"]


def test_stderr_tail_is_bounded_and_redacted(tmp_path: Path) -> None:
    script = fake_cli(
        tmp_path,
        """
        import sys
        for i in range(2000):
            sys.stderr.write(f"noise line {i}\\n")
        sys.stderr.write("key sk-ant-api03-abcdefghijklmnop in use\\n")
        """,
    )
    process = CliProcess([script], cwd=str(tmp_path), env=os.environ)
    read_all(process)
    process.wait(5)
    tail = process.stderr_tail(limit=200)
    assert len(tail) <= 200
    assert "sk-ant***" in tail and "abcdefghijklmnop" not in tail


def test_redact_masks_keys_and_bearer_tokens() -> None:
    text = "Authorization: Bearer abcdefghijklmnopqrstuvwxyz key=sk-proj-0123456789abcdef ok"
    masked = redact(text)
    assert "abcdefghijklmnopqrstuvwxyz" not in masked
    assert "0123456789abcdef" not in masked
    assert masked.endswith(" ok")


def test_group_members_ignores_other_groups() -> None:
    assert os.getpid() in group_members(os.getpgid(0))
    assert group_members(2**22 + 12345) == []


def test_python_is_posix() -> None:  # the backends rely on setsid and /proc
    assert sys.platform.startswith("linux")
