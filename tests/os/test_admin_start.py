"""A system's processes hold none of the sockets and pipes of the program that started it.

Thespian forks the admin from the starting program and every actor from the admin, and
closes nothing it inherited: a port the program closed stayed bound in every actor process
(connections to it queued and never accepted), and a pipe's reader never saw end of file.
The admin now closes the sockets and pipes it inherited before anything else
(``_os/admin_start.py``), and remembers its starter, which the shutdown guard needs.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_support import Echo

import genagent_thespian as g
from genagent_thespian.testing import system_processes, wait_until


@pytest.fixture
def opened() -> Iterator[tuple[socket.socket, int, int]]:
    """A listening socket and both ends of a pipe, opened before the system starts."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    reader, writer = os.pipe()
    try:
        yield listener, reader, writer
    finally:
        listener.close()
        for fd in (reader, writer):
            with contextlib.suppress(OSError):
                os.close(fd)  # closed by the test already


def test_the_starters_sockets_and_pipes_are_not_held_by_the_system(
    opened: tuple[socket.socket, int, int], tmp_path: Path
) -> None:
    listener, reader, writer = opened
    port = listener.getsockname()[1]
    system = g.start_system(
        make_default=False, store_path=str(tmp_path / "a.sqlite"), home=str(tmp_path / "home")
    )
    try:
        assert system_processes(system)
        listener.close()
        os.close(writer)
        # Nobody listens on the port any more: connecting is refused, not queued for good.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # The pipe's last writer is gone: its reader sees end of file.
        assert select.select([reader], [], [], 10)[0] == [reader]
        assert os.read(reader, 1) == b""
        # The admin knew its starter, and its actors inherit that (the shutdown guard's rule).
        echo = system.asys.createActor(Echo)
        assert system.asys.ask(echo, "starter?", 10) == ("starter", os.getpid())
    finally:
        system.shutdown()
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")
