"""A system's processes hold none of the sockets and pipes of the program that started it.

Thespian forks the admin from the starting program and every actor from the admin, and
closes nothing it inherited: a port the program closed stayed bound in every actor process
(connections to it queued and never accepted), and a pipe's reader never saw end of file.
The admin now releases the sockets and pipes it inherited before anything else
(``_os/admin_start.py``). The shutdown guard, which had found the starter through an actor
that inherited its port, knows it by its endpoint's address (``_os/shutdown_guard.py``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from thespian.actors import ActorSystem

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.cli import ScriptedAgent
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
    finally:
        system.shutdown()
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_only_the_endpoint_that_started_the_system_shuts_it_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No sweep after Thespian's shutdown: only a shutdown the admin obeyed ends the system.
    monkeypatch.setattr(AgentSystem, "_sweep", lambda self: None)
    system = g.start_system(
        make_default=False, store_path=str(tmp_path / "a.sqlite"), home=str(tmp_path / "home")
    )
    try:
        g.start_agent(ScriptedAgent, name="a", backend="scripted", system=system)
        # A raw client in the very program that started the system, tidying up after itself.
        caps = g.client_capabilities(system)
        ActorSystem("multiprocTCPBase", caps, transientUnique=True).shutdown()
        assert g.ask("a", "still there?", system=system).text, "the raw shutdown was obeyed"
        system.shutdown()
        wait_until(
            lambda: not system_processes(system),
            timeout=15.0,
            message="the starter's own shutdown was refused",
        )
    finally:
        system.shutdown()
        for pid in system_processes(system):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
