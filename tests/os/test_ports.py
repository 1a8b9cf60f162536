"""Tests for genagent_thespian._os.ports: admin ports nobody takes by chance, taken ones named."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from genagent_thespian import AgentSystem, InvalidOption
from genagent_thespian._os import ports
from genagent_thespian.testing import system_processes


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket of this process listening on a port from :func:`ports.free_port`."""
    with socket.create_server(("127.0.0.1", ports.free_port())) as sock:
        yield sock


def _ephemeral_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges:
        low, high = ranges.read().split()
    return int(low), int(high)


def test_free_ports_come_from_below_the_kernels_ephemeral_range_and_are_unused() -> None:
    low, _ = _ephemeral_range()
    drawn = {ports.free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in drawn), drawn
    assert len(drawn) > 1, "the ports are drawn at random, not one fixed port"
    for port in drawn:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: not even a closing connection


def test_a_taken_port_is_refused_naming_the_process_that_holds_it(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(InvalidOption) as caught:
        ports.claim_port(port, wait=0.2)
    message = str(caught.value)
    assert f"127.0.0.1:{port} is in use by pid {os.getpid()}" in message, message
    assert "pick another port" in message


def test_a_port_that_comes_free_while_waited_for_is_claimed(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = listener.getsockname()[1]
    tries: list[bool] = []
    bindable = ports._bindable

    def close_after_the_first_refusal(host: str, wanted: int) -> bool:
        tries.append(bindable(host, wanted))
        if not tries[-1]:
            listener.close()  # the previous run's admin ends while the new one waits
        return tries[-1]

    monkeypatch.setattr(ports, "_bindable", close_after_the_first_refusal)
    ports.claim_port(port, wait=30.0)
    assert tries == [False, True]


def test_a_closing_connection_on_the_port_does_not_count_as_taken() -> None:
    port = ports.free_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end lingers in TIME_WAIT
        client.close()
    assert not ports._unused("127.0.0.1", port), "the closed connection left no trace"
    ports.claim_port(port, wait=0.0)


def test_a_system_started_on_a_taken_port_fails_at_once_and_keeps_nothing(
    listener: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "CLAIM_WAIT", 0.2)
    port = listener.getsockname()[1]
    with pytest.raises(InvalidOption, match=f"admin port 127.0.0.1:{port} is in use by pid"):
        AgentSystem.start(admin_port=port, home=tmp_path / "home")
    # The home's lock went with the failed start: the same home starts on a free port.
    system = AgentSystem.start(home=tmp_path / "home")
    try:
        assert system.admin_port is not None and system.admin_port != port
        assert system.admin_port < _ephemeral_range()[0]
    finally:
        system.shutdown()
    assert not system_processes(system)
