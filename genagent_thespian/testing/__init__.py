"""Test kit shipped to users: fakes at the seams we own, fixtures, and waiting helpers.

* :class:`ScriptedBackend` and its script items (:class:`Fail`, :class:`Crash`,
  :class:`Exit`, :class:`Slow`, :class:`Gate`) play deterministic turns;
* :class:`TelemetryCapture` records telemetry events and waits for them;
* :func:`wait_until` waits on a condition with an upper bound (never sleep to wait);
* pytest fixtures, enabled with ``pytest_plugins = ["genagent_thespian.testing"]``:
  ``agent_system`` (a fresh ``multiprocTCPBase`` system on a free port, shut down after
  the test with no process left) and ``any_agent_system`` (the same test once per
  supported base: ``simpleSystemBase`` and ``multiprocTCPBase``). They exist when pytest
  is running (it has imported itself before it loads its plugins): a program that uses
  the fakes without pytest does not import it, nor make every actor process it starts
  inherit its 5 MiB of heap.

The modules behind it::

    _scripted.py          ScriptedBackend and its script items
    _scripted_agent.py    ScriptedAgent: a general agent driven by JSON (the CLI, demos)
    _fake_llm_server.py   FakeLLMServer: the Anthropic and OpenAI HTTP APIs on loopback
    _conformance.py       BackendConformance: the suite every backend must pass
    _chaos.py             kill processes and damage stores on purpose, reproducibly

Fakes sit at seams the framework owns (the ``Backend`` class, the providers' HTTP APIs), so
a test exercises the same code paths as production rather than a patched stand-in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

from .._api.system import AgentSystem
from .._api.telemetry import attach, detach
from .._core.types import Metadata, Polled
from .._os.processes import processes_with_marker
from ._chaos import (
    ChaosKill,
    ChaosMonkey,
    children_of,
    corrupt_file,
    corrupt_store,
    descendants_of,
    kill_process,
    kill_process_group,
    process_alive,
    process_group_members,
    wait_for_exit,
)
from ._fake_llm_server import (
    FakeLLMServer,
    Hang,
    HTTPError,
    Raw,
    RecordedRequest,
    Reply,
    ScriptItem,
    StreamError,
    Text,
    Thinking,
    ToolUse,
    Truncated,
    When,
)
from ._scripted import (
    Crash,
    Exit,
    Fail,
    Gate,
    ScriptedBackend,
    ScriptedSession,
    Slow,
    WorkerExit,
    open_gate,
    read_history,
)

__all__ = [
    "ChaosKill",
    "ChaosMonkey",
    "Crash",
    "Exit",
    "Fail",
    "FakeLLMServer",
    "Gate",
    "HTTPError",
    "Hang",
    "Raw",
    "RecordedRequest",
    "Reply",
    "ScriptItem",
    "ScriptedBackend",
    "ScriptedSession",
    "Slow",
    "StreamError",
    "TelemetryCapture",
    "Text",
    "Thinking",
    "ToolUse",
    "Truncated",
    "When",
    "WorkerExit",
    "children_of",
    "corrupt_file",
    "corrupt_store",
    "descendants_of",
    "kill_process",
    "kill_process_group",
    "open_gate",
    "process_alive",
    "process_group_members",
    "read_history",
    "system_processes",
    "wait_for_exit",
    "wait_until",
]


def wait_until(
    condition: Callable[[], Polled],
    *,
    timeout: float = 10.0,
    interval: float = 0.005,
    message: str = "",
) -> Polled:
    """Return ``condition()``'s first truthy value, polling until ``timeout`` seconds.

    Raises:
        AssertionError: the condition stayed false (with ``message``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)


def system_processes(system: AgentSystem) -> list[int]:
    """Return the live pids of ``system``'s processes (its process group, marked children).

    Zombies are left out: they hold no resources and only wait for their parent to reap
    them (the short-lived parent of Thespian's daemonized admin is one).
    """
    pids: set[int] = set(processes_with_marker(system.system_id))
    if system.pgid is not None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == system.pgid:
                        pids.add(int(entry))
                except ProcessLookupError:
                    continue
    pids.discard(os.getpid())
    return sorted(pid for pid in pids if process_alive(pid))


class TelemetryCapture:
    """Record telemetry events in this process, thread-safely, and wait for them.

    Example:
        >>> with TelemetryCapture(["prompt.stop"]) as capture:   # doctest: +SKIP
        ...     ask("a", "hi")
        ...     capture.wait_for("prompt.stop")
    """

    def __init__(
        self, event_names: Iterable[str] | None = None, *, system: AgentSystem | None = None
    ) -> None:
        """Prepare a capture; its handler is attached only inside the ``with`` block.

        The handler id is unique per capture, so several captures in one test, or in parallel tests,
        never detach each other.
        """
        self._names = None if event_names is None else list(event_names)
        self._system = system
        self._id = f"capture-{uuid.uuid4().hex}"
        self._lock = threading.Condition()
        self.events: list[tuple[str, dict[str, float], Metadata]] = []

    def __enter__(self) -> TelemetryCapture:
        """Attach the handler; returns once every agent sends the captured names.

        ``attach`` waits for the agents' acknowledgements, so a turn the test starts right
        after the ``with`` line is captured from its first event.
        """
        attach(self._id, self._names, self._record, system=self._system)
        return self

    def __exit__(self, *exc: object) -> None:
        """Detach the handler; the events recorded so far stay readable."""
        detach(self._id, system=self._system)

    def _record(self, name: str, measurements: dict[str, float], metadata: Metadata) -> None:
        """The handler: keep the event and wake ``wait_for`` (runs on the telemetry thread)."""
        with self._lock:
            self.events.append((name, measurements, metadata))
            self._lock.notify_all()

    def named(self, name: str) -> list[tuple[dict[str, float], Metadata]]:
        """Return ``(measurements, metadata)`` of every recorded event called ``name``."""
        with self._lock:
            return [(m, md) for n, m, md in self.events if n == name]

    def names(self) -> list[str]:
        """Return the names of the recorded events in arrival order."""
        with self._lock:
            return [n for n, _, _ in self.events]

    def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, float], Metadata], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[tuple[dict[str, float], Metadata]]:
        """Wait until ``count`` events called ``name`` (matching ``predicate``) arrived."""

        def matching() -> list[tuple[dict[str, float], Metadata]]:
            """The captured events named ``name`` that satisfy the predicate, oldest first."""
            return [
                (m, md)
                for n, m, md in self.events
                if n == name and (predicate is None or predicate(m, md))
            ]

        with self._lock:
            if not self._lock.wait_for(lambda: len(matching()) >= count, timeout):
                raise AssertionError(
                    f"{count} {name!r} event(s) not seen within {timeout}s; saw {self.names()}"
                )
            return matching()


def _system_fixture(base: str) -> Iterator[AgentSystem]:
    """Yield a system on ``base`` with its own home folder, then prove it left no process behind.

    The temporary home keeps a test from finding, locking or stopping the user's own nodes. The
    process check runs only on the multiprocess bases; after a failed check the survivors are killed
    so one leaking test does not poison the ones after it.
    """
    from .._api.client import _set_default, shutdown_system

    # A home of its own: test systems never touch (or lock) the user's real nodes.
    with tempfile.TemporaryDirectory(prefix="genagent-test-home-") as home:
        system = AgentSystem.start(base=base, home=home)
        _set_default(system)
        try:
            yield system
        finally:
            shutdown_system(system)
            if base != "simpleSystemBase":
                _assert_no_process_left(system)


def _assert_no_process_left(system: AgentSystem) -> None:
    """Fail the test if any process of ``system`` outlives its shutdown (after a bounded wait).

    Survivors are SIGKILLed before the failure is raised: the report names them, and the next test
    starts on a clean machine.
    """

    def gone() -> bool:
        """Whether no process of the system is left."""
        return not system_processes(system)

    try:
        wait_until(gone, timeout=10.0)
    except AssertionError:
        survivors = system_processes(system)
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(
            f"processes of the actor system survived shutdown: {survivors}"
        ) from None


if "pytest" in sys.modules:
    import pytest

    @pytest.fixture
    def agent_system() -> Iterator[AgentSystem]:
        """A fresh ``multiprocTCPBase`` system on a free port, made current; nothing left after."""
        yield from _system_fixture("multiprocTCPBase")

    @pytest.fixture(params=["simpleSystemBase", "multiprocTCPBase"])
    def any_agent_system(request: pytest.FixtureRequest) -> Iterator[AgentSystem]:
        """The same test once per supported base (one fixture, as Thespian's own suite does)."""
        yield from _system_fixture(request.param)

    __all__ += ["agent_system", "any_agent_system"]
