"""Child processes of the CLI backends: one process group each, framed stdout, escalating stop.

Both CLI backends run their program through :class:`pexpect.popen_spawn.PopenSpawn`, that is
over plain pipes: a pseudo-terminal would merge stderr into stdout, turn ``\\n`` into
``\\r\\n``, echo input and make ``claude --input-format stream-json`` refuse its stdin
(backends.md §5.4). :class:`CliProcess` adds what PopenSpawn lacks for a supervised program:

* the child starts a **new session**, so it leads its own process group and everything it
  spawns (tool commands, MCP servers) can be signalled at once with ``os.killpg``;
* **stderr is kept apart** from stdout (PopenSpawn merges them): a thread drains it into a
  bounded tail used in error messages, so stdout carries only the JSON lines;
* stdout is framed into lines by :class:`LineFramer` with an explicit size cap, so a line of
  several megabytes is read whole and a runaway line is a clear protocol error, never a
  silent truncation or an unbounded buffer;
* :meth:`CliProcess.stop` ends the group with an escalating sequence (optionally close stdin,
  then SIGINT, SIGTERM, SIGKILL, each after a grace period) and reaps the leader.

:func:`group_members` lists the live members of a process group from ``/proc``; tests use it
to assert that no process of a stopped CLI remains.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pexpect.popen_spawn import PopenSpawn

from genagent_thespian import Event, EventKind
from genagent_thespian._core.types import WireMapping

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "CliProcess",
    "LineFramer",
    "OversizedLine",
    "ProcessStartError",
    "decode_json_line",
    "group_members",
    "redact",
]


def decode_json_line(line: bytes | str) -> WireMapping | Event | None:
    """Decode one stdout line of a JSONL-speaking CLI.

    Returns the JSON object, ``None`` for a blank line, or a ``warning`` event (code
    ``garbage``) for anything that is not a JSON object, so a stray line never breaks a turn.
    """
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        return obj
    message = "non-JSON line on stdout: " + text[:200]
    return Event(EventKind.WARNING, {"code": "garbage", "message": message})


#: Default cap of one stdout line. Tool results of whole files make lines of several MB.
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024

_READ_CHUNK = 64 * 1024
_STDERR_TAIL_BYTES = 8 * 1024
#: Signals a program gets back at their default action when it starts (see ``CliProcess``).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@dataclass(frozen=True, slots=True)
class OversizedLine:
    """Stands in for a stdout line that exceeded the cap (its bytes were dropped).

    Attributes:
        limit: The cap in bytes that the line exceeded.
    """

    limit: int

    def __str__(self) -> str:
        return f"a stdout line exceeded the {self.limit}-byte limit"


class ProcessStartError(Exception):
    """The program could not be started (missing binary, not executable, bad cwd)."""


class LineFramer:
    """Split a byte stream into ``\\n``-terminated lines, with a cap on one line's size.

    Chunks go in with :meth:`feed`; complete lines come out of :meth:`pop` without their
    terminator (a trailing ``\\r`` is removed too). A line longer than ``max_line_bytes``
    is not kept: the framer drops its bytes up to the next newline and yields one
    :class:`OversizedLine` in its place, so memory stays bounded and the caller decides.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        """Refuse a non-positive cap: it would turn every line into an :class:`OversizedLine`."""
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False
        self._ready: collections.deque[bytes | OversizedLine] = collections.deque()

    def feed(self, chunk: bytes) -> None:
        """Add a chunk of the stream."""
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            self._append(chunk[start:end])
            if newline < 0:
                break
            self._finish_line()
            start = newline + 1

    def finish(self) -> None:
        """Mark the end of the stream: a last line without terminator is released too."""
        if self._parts or self._skipping:
            self._finish_line()

    def pop(self) -> bytes | OversizedLine | None:
        """Return and forget the oldest complete line (or marker), or ``None`` if none."""
        return self._ready.popleft() if self._ready else None

    def _append(self, piece: bytes) -> None:
        """Add a piece of the current line, or start skipping it once it passes the cap.

        While skipping, the pieces are dropped as they come, so an endless line costs no memory.
        """
        if self._skipping or not piece:
            return
        if self._size + len(piece) > self.max_line_bytes:
            self._parts.clear()
            self._size = 0
            self._skipping = True
            return
        self._parts.append(piece)
        self._size += len(piece)

    def _finish_line(self) -> None:
        """Queue the finished line, or its :class:`OversizedLine` marker, and reset for the next
        one.

        A trailing ``\\r`` is removed so CRLF output frames like LF output.
        """
        if self._skipping:
            self._ready.append(OversizedLine(self.max_line_bytes))
        else:
            line = b"".join(self._parts)
            self._ready.append(line[:-1] if line.endswith(b"\r") else line)
        self._parts.clear()
        self._size = 0
        self._skipping = False


class _PipeSpawn(PopenSpawn):
    """PopenSpawn whose reader reads large chunks and whose reads block with a timeout.

    PopenSpawn's own ``read_nonblocking`` never waits (its ``expect`` loop polls every
    0.1 ms) and its reader thread reads 1 KiB at a time; this subclass reuses the reader
    thread and queue (``_read_incoming``, ``_read_queue``, ``_read_reached_eof``, the same
    in pexpect 4.8 and 4.9) but blocks on the queue with a timeout.
    """

    _read_reached_eof: bool = False

    def _read_incoming(self) -> None:
        """The reader thread: move stdout into the queue in large chunks, ``None`` at the end.

        A read error counts as end of file: the process's stdout is gone either way, and the
        consumer learns it from the ``None`` instead of a reader thread dying silently.
        """
        fileno = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fileno, _READ_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                self._read_queue.put(None)
                return
            self._read_queue.put(chunk)

    def read_chunk(self, timeout: float) -> bytes | None:
        """Return the next stdout chunk, ``b""`` at end of file, or ``None`` on timeout."""
        if self._read_reached_eof:
            return b""
        try:
            chunk = self._read_queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if chunk is None:
            self._read_reached_eof = True
            return b""
        return bytes(chunk)


class CliProcess:
    """One CLI program running in its own process group, stdout framed into lines.

    Args:
        argv: Program and arguments (no shell).
        cwd: Working directory of the program.
        env: Complete environment of the program.
        keep_stdin_open: Keep a stdin pipe to write to (claude's stream-json input). When
            false, stdin is closed at once so the program sees end of file (backends.md
            §5.2: both CLIs hang on an open, silent stdin).
        max_line_bytes: Cap of one stdout line, see :class:`LineFramer`.

    Raises:
        ProcessStartError: The program could not be started; the message names the path.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        keep_stdin_open: bool = False,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        """Start ``argv`` in a new session (its own process group) with stderr on a separate pipe.

        The new session lets the whole group be signalled (a CLI's own children included) without
        touching the agent. Stderr is drained by its own thread into a bounded tail, so a chatty CLI
        never blocks on a full pipe and an error report can quote its last lines.
        """
        self.argv = list(argv)
        stderr_read, stderr_write = os.pipe()

        def in_child() -> None:  # runs between fork and exec: new session, own stderr
            """Run in the child between fork and exec: a new session, stderr to its own pipe,
            and the default action for the signals :meth:`stop` sends.

            A node started in the background (``&`` in a script, ``nohup``) ignores SIGINT or
            SIGHUP, and an ignored signal stays ignored across ``exec``: the program would
            then never see the SIGINT that asks it to exit cleanly, and each stop would wait
            out its grace period before the kill.
            """
            os.setsid()
            os.dup2(stderr_write, 2)
            for signum in _STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)

        try:
            self._spawn = _PipeSpawn(
                self.argv, cwd=cwd, env=dict(env), preexec_fn=in_child, timeout=None
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(stderr_read)
            os.close(stderr_write)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProcessStartError(f"cannot start {self.argv[0]!r} in {cwd!r}: {reason}") from exc
        os.close(stderr_write)
        self.pid: int = self._spawn.pid
        self.pgid: int = self.pid  # setsid made the child the leader of a new group
        self._framer = LineFramer(max_line_bytes)
        self._eof = False
        self._stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_lock = threading.Lock()
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(stderr_read,), name=f"stderr-{self.pid}", daemon=True
        )
        self._stderr_thread.start()
        self._stdin_open = True
        if not keep_stdin_open:
            self.close_stdin()

    # -- stdin -------------------------------------------------------------------------------

    def write_line(self, line: str) -> None:
        """Write one line (a ``\\n`` is added) to the program's stdin.

        Raises:
            BrokenPipeError: stdin is closed or the program has exited.
        """
        if not self._stdin_open:
            raise BrokenPipeError("stdin of the program is closed")
        self._spawn.send(line + "\n")
        self._spawn.proc.stdin.flush()

    def close_stdin(self) -> None:
        """Close stdin so the program reads end of file. Idempotent."""
        if self._stdin_open:
            self._stdin_open = False
            with contextlib.suppress(OSError):
                self._spawn.sendeof()

    # -- stdout ------------------------------------------------------------------------------

    def read_line(self, timeout: float) -> bytes | OversizedLine | None:
        """Return the next stdout line, or ``None`` if none arrived within ``timeout`` seconds.

        Raises:
            EOFError: stdout reached end of file and every line was returned.
        """
        deadline = time.monotonic() + timeout
        while True:
            line = self._framer.pop()
            if line is not None:
                return line
            if self._eof:
                raise EOFError("stdout closed")
            chunk = self._spawn.read_chunk(deadline - time.monotonic())
            if chunk is None:
                return None
            if chunk == b"":
                self._eof = True
                self._framer.finish()
            else:
                self._framer.feed(chunk)

    # -- state -------------------------------------------------------------------------------

    def poll(self) -> int | None:
        """Return the exit status of the leader (negative for a signal), or ``None``."""
        status: int | None = self._spawn.proc.poll()  # pexpect is untyped: a Popen
        return status

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the leader to exit; return its status or None."""
        try:
            status: int | None = self._spawn.proc.wait(timeout=max(timeout, 0.0))
            return status
        except subprocess.TimeoutExpired:
            return None

    @property
    def returncode(self) -> int | None:
        """Exit status of the leader once reaped (negative for a signal)."""
        status: int | None = self._spawn.proc.returncode
        return status

    def stderr_tail(self, limit: int = 2000) -> str:
        """Return the last ``limit`` characters of stderr, decoded and with secrets masked."""
        self._stderr_thread.join(timeout=0.2 if self.poll() is not None else 0)
        with self._stderr_lock:
            data = b"".join(self._stderr_tail)
        return redact(data.decode("utf-8", "replace")[-limit:].strip())

    def _drain_stderr(self, fd: int) -> None:
        """Keep reading stderr to its end, holding only the last ``_STDERR_TAIL_BYTES`` of it.

        Reading it all keeps the CLI from blocking on a full pipe; keeping only the tail bounds the
        memory of a CLI that logs for hours.
        """
        try:
            while True:
                try:
                    chunk = os.read(fd, _READ_CHUNK)
                except OSError:
                    return
                if not chunk:
                    return
                with self._stderr_lock:
                    self._stderr_tail.append(chunk)
                    self._stderr_size += len(chunk)
                    while self._stderr_size - len(self._stderr_tail[0]) >= _STDERR_TAIL_BYTES:
                        self._stderr_size -= len(self._stderr_tail.popleft())
        finally:
            os.close(fd)

    # -- stopping ----------------------------------------------------------------------------

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the whole process group; return whether any member got it."""
        try:
            os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(
        self,
        *,
        close_stdin_first: bool = False,
        signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
        grace: float = 5.0,
    ) -> int | None:
        """End the program and its whole group; return the leader's exit status.

        Each step waits ``grace`` seconds for the leader to exit: close stdin (if asked),
        then each of ``signals`` to the group, then SIGKILL. Whatever the leader did, the
        group is sent SIGKILL at the end, so a tool command that ignored the signals or
        outlived the leader does not remain. Idempotent.
        """
        if close_stdin_first:
            self.close_stdin()
            self.wait(grace)
        for signum in signals:
            if self.poll() is not None:
                break
            self.signal_group(signum)
            self.wait(grace)
        if self.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.wait(30.0)
        if self.signal_group(signal.SIGKILL):  # stragglers that outlived the leader
            deadline = time.monotonic() + 5.0
            while self.members() and time.monotonic() < deadline:
                time.sleep(0.01)
        self.close_stdin()
        self._release_stdout()
        return self.returncode

    def _release_stdout(self) -> None:
        """Close the stdout pipe once its reader thread saw end of file (all writers gone)."""
        self._spawn._read_thread.join(timeout=2.0)
        if not self._spawn._read_thread.is_alive():
            with contextlib.suppress(OSError):
                self._spawn.proc.stdout.close()

    def members(self) -> list[int]:
        """Return the pids of live (non-zombie) processes of this group."""
        return group_members(self.pgid)


def group_members(pgid: int) -> list[int]:
    """Return the pids of the live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def redact(text: str) -> str:
    """Mask things that look like API keys (``sk-...``, long bearer tokens) in ``text``."""
    return _SECRET_PATTERN.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    """Keep the first six characters (enough to tell keys apart in a log), mask the rest."""
    token = match.group(0)
    return token[:6] + "***"


_SECRET_PATTERN = re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-.]{16,})")
