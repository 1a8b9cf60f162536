"""A conformance suite that any :class:`~genagent_thespian.Backend` can run with pytest.

Subclass :class:`BackendConformance` in a test module (the class name must start with
``Test`` for pytest to collect it), provide a ``provider`` fixture and the hooks, and every
test below runs against your backend::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def provider(self):
            with FakeLLMServer() as server:
                yield server

        def make_backend(self):
            return MyBackend()

        def start_options(self, provider):
            return {"base_url": provider.url, "api_key": "sk-test"}

        def script_text(self, provider, text):
            provider.script(Text(text, chunks=3))

        def script_error(self, provider):
            provider.script(HTTPError(529))

        def script_slow(self, provider):
            provider.script(Hang(prefix=Text("partial")))

        def assert_continues(self, provider, first_prompt, first_answer):
            second = provider.model_requests[1]
            assert first_prompt in json.dumps(second.body)

The provider is whatever stands in for the LLM: a :class:`FakeLLMServer` for HTTP
backends, a script for a scripted backend, fake programs for CLI backends. What is checked:

* ``start_session`` refuses an unknown option with ``InvalidOption``;
* a text turn ends with exactly one terminal event, a ``result``, last; every event
  pickles; ``Response.from_events`` assembles the scripted text;
* the session pickles before and after a turn, and the copy carries on the conversation;
* ``update_session`` makes the second turn continue the first (checked by the hook);
* a failing turn ends with exactly one ``error`` event carrying a ``BackendError`` whose
  ``kind`` is one of ``BackendErrorKind``, and no ``result``;
* setting ``ctx.cancelled`` ends an in-flight turn within :attr:`cancel_deadline` seconds
  with an ``error`` of kind ``cancelled``;
* ``terminate_session`` and ``close`` are idempotent.
"""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest

from .._core.backend import Backend, TurnContext
from .._core.errors import BackendError, BackendErrorKind, InvalidOption
from .._core.turn import Event, EventKind, Response
from .._core.types import Options, Session, UserTerm

__all__ = ["BackendConformance", "FakeServerConformance", "collect_turn"]

_KNOWN_KINDS = frozenset(
    value
    for name, value in vars(BackendErrorKind).items()
    if name.isupper() and isinstance(value, str)
)


def collect_turn(
    backend: Backend,
    session: Session,
    prompt: str,
    *,
    ctx: TurnContext | None = None,
    timeout: float = 30.0,
    on_event: Callable[[Event], None] | None = None,
) -> list[Event]:
    """Run one turn in a helper thread and return its events, failing after ``timeout``.

    Args:
        on_event: Called with each event as it arrives (in the helper thread).

    Raises:
        AssertionError: The turn did not finish within ``timeout`` seconds.
        BaseException: Whatever ``prompt`` raised, re-raised here.
    """
    ctx = ctx or TurnContext(agent="conformance", ref=f"ref-{uuid.uuid4().hex[:8]}")
    events: list[Event] = []
    failure: list[BaseException] = []

    def consume() -> None:
        """Run the turn on a thread, keeping every event and any exception for the caller.

        A backend that raises instead of ending with an ``ERROR`` event breaks the contract; the
        exception is kept so the test can report it instead of hanging.
        """
        try:
            for event in backend.prompt(session, prompt, ctx):
                events.append(event)
                if on_event is not None:
                    on_event(event)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=consume, name="conformance-turn", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        ctx.cancelled.set()
        raise AssertionError(
            f"the turn did not end within {timeout}s; events so far: {[e.kind for e in events]}"
        )
    if failure:
        raise failure[0]
    return events


def _terminal(events: list[Event]) -> list[Event]:
    """The terminal events among ``events``: a turn must have exactly one."""
    return [e for e in events if e.kind in (EventKind.RESULT, EventKind.ERROR)]


def _advance(backend: Backend, session: Session, events: list[Event]) -> Session:
    """Apply ``update_session`` as the worker does: for session_started and result."""
    for event in events:
        if event.kind in (EventKind.SESSION_STARTED, EventKind.RESULT):
            session = backend.update_session(session, event)
    return session


class BackendConformance:
    """The conformance tests; subclass it and implement the hooks (see the module docs)."""

    #: Seconds within which a cancelled turn must end.
    cancel_deadline: ClassVar[float] = 5.0
    #: Seconds any one turn may take.
    turn_timeout: ClassVar[float] = 30.0

    # -- hooks --------------------------------------------------------------------------

    @pytest.fixture
    def provider(self) -> Iterator[UserTerm]:
        """Yield what stands in for the LLM (override this fixture)."""
        raise NotImplementedError("override the 'provider' fixture")
        yield

    def make_backend(self) -> Backend:
        """Return a new backend instance."""
        raise NotImplementedError

    def start_options(self, provider: UserTerm) -> Options:
        """Return valid ``start_session`` options that point the backend at ``provider``."""
        raise NotImplementedError

    def script_text(self, provider: UserTerm, text: str) -> None:
        """Make the next turn answer ``text``."""
        raise NotImplementedError

    def script_error(self, provider: UserTerm) -> None:
        """Make the next turn fail on the provider's side."""
        raise NotImplementedError

    def script_slow(self, provider: UserTerm) -> None:
        """Make the next turn start and then stall until it is cancelled."""
        raise NotImplementedError

    def wait_until_in_flight(self, provider: UserTerm, first_event: threading.Event) -> None:
        """Wait until the slow turn reached the provider (default: its first event)."""
        if not first_event.wait(self.turn_timeout):
            raise AssertionError("the slow turn produced no event")

    def assert_continues(self, provider: UserTerm, first_prompt: str, first_answer: str) -> None:
        """Assert that the provider saw the second turn continue the first conversation."""
        pytest.skip("assert_continues is not implemented for this backend")

    # -- fixtures -----------------------------------------------------------------------

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        """A fresh backend for each test, closed afterwards even when the test fails."""
        backend = self.make_backend()
        try:
            yield backend
        finally:
            backend.close()

    @pytest.fixture
    def session(self, backend: Backend, provider: UserTerm) -> Session:
        """A session started with the suite's options against this test's ``provider``."""
        return backend.start_session(self.start_options(provider))

    # -- tests --------------------------------------------------------------------------

    def test_start_session_rejects_unknown_option(
        self, backend: Backend, provider: UserTerm
    ) -> None:
        """An unknown option fails ``start_session`` with :class:`InvalidOption`, naming it.

        A silently ignored option is a setting the user believes in but does not have.
        """
        options = {**self.start_options(provider), "no_such_option_for_conformance": 1}
        with pytest.raises(InvalidOption, match="no_such_option_for_conformance"):
            backend.start_session(options)

    def test_text_turn_ends_with_one_result(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """A text turn ends with exactly one terminal event, a ``RESULT``, as the very last event.

        The agent's turn-end order depends on it: one terminal, last, and every event picklable
        (events cross processes from the worker).
        """
        self.script_text(provider, "Hello from the conformance suite")
        events = collect_turn(backend, session, "Say hello", timeout=self.turn_timeout)
        terminal = _terminal(events)
        assert len(terminal) == 1, [e.kind for e in events]
        assert events[-1] is terminal[0]
        assert events[-1].kind == EventKind.RESULT, events[-1].data
        assert sum(e.kind == EventKind.SESSION_STARTED for e in events) <= 1
        for event in events:
            assert pickle.loads(pickle.dumps(event)).kind == event.kind
        response = Response.from_events(events)
        assert response.text == "Hello from the conformance suite"

    def test_session_pickles_before_and_after_a_turn(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """A session pickles at any boundary and a new backend instance continues it.

        That is what happens when a worker process is replaced after a crash, and what a durable
        agent does after a restart: the only thing that survives is the pickled session.
        """
        session = pickle.loads(pickle.dumps(session))
        self.script_text(provider, "first")
        events = collect_turn(backend, session, "one", timeout=self.turn_timeout)
        assert events[-1].kind == EventKind.RESULT
        session = pickle.loads(pickle.dumps(_advance(backend, session, events)))
        # A fresh instance continues the session, as after the worker was replaced: the old
        # one is closed first (a provider may allow one live writer per session).
        backend.close()
        fresh = self.make_backend()
        try:
            self.script_text(provider, "second")
            events = collect_turn(fresh, session, "two", timeout=self.turn_timeout)
        finally:
            fresh.close()
        assert events[-1].kind == EventKind.RESULT
        assert Response.from_events(events).text == "second"

    def test_second_turn_continues_the_first(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """A second turn continues the conversation of the first, as the provider sees it."""
        self.script_text(provider, "the first answer")
        first = collect_turn(backend, session, "the first prompt", timeout=self.turn_timeout)
        assert first[-1].kind == EventKind.RESULT
        session = _advance(backend, session, first)
        self.script_text(provider, "the second answer")
        second = collect_turn(backend, session, "the second prompt", timeout=self.turn_timeout)
        assert second[-1].kind == EventKind.RESULT
        assert Response.from_events(second).text == "the second answer"
        self.assert_continues(provider, "the first prompt", "the first answer")

    def test_a_turn_after_warm_runs_as_without_it(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """``warm`` (``prewarm=True``) returns a picklable session the first turn runs on.

        The worker calls it ahead of the first turn, on the same backend instance; the
        turn must then answer exactly as it would have without it.
        """
        ctx = TurnContext(agent="conformance", ref="prewarm")
        warmed = pickle.loads(pickle.dumps(backend.warm(session, ctx)))
        self.script_text(provider, "after the warm")
        events = collect_turn(backend, warmed, "hello", timeout=self.turn_timeout)
        assert events[-1].kind == EventKind.RESULT, events[-1].data
        assert Response.from_events(events).text == "after the warm"

    def test_a_session_warmed_and_closed_before_any_turn_stays_usable(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """What ``warm`` started may be retired unused (idle timeout, the session cap).

        The session it returned must then start (or resume) in a new backend instance as if
        it had never been warmed: no provider state that exists only in a retired process.
        """
        warmed = backend.warm(session, TurnContext(agent="conformance", ref="prewarm"))
        backend.close()
        fresh = self.make_backend()
        try:
            self.script_text(provider, "fresh start")
            events = collect_turn(fresh, warmed, "hello", timeout=self.turn_timeout)
        finally:
            fresh.close()
        assert events[-1].kind == EventKind.RESULT, events[-1].data
        assert Response.from_events(events).text == "fresh start"

    def test_error_turn_ends_with_one_error(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """A provider failure ends the turn with exactly one ``ERROR`` carrying a classified
        :class:`BackendError` that pickles: its kind is what retry and restart decisions read.
        """
        self.script_error(provider)
        events = collect_turn(backend, session, "fail please", timeout=self.turn_timeout)
        terminal = _terminal(events)
        assert len(terminal) == 1, [e.kind for e in events]
        assert events[-1].kind == EventKind.ERROR
        error = events[-1].data.get("error")
        assert isinstance(error, BackendError), error
        assert error.kind in _KNOWN_KINDS
        assert error.kind != BackendErrorKind.CANCELLED
        assert pickle.loads(pickle.dumps(error)) == error

    def test_error_turn_leaves_the_session_usable(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """A failed turn does not spoil the session: the next turn on it succeeds."""
        self.script_error(provider)
        failed = collect_turn(backend, session, "fail please", timeout=self.turn_timeout)
        session = _advance(backend, session, failed)
        self.script_text(provider, "recovered")
        events = collect_turn(backend, session, "again", timeout=self.turn_timeout)
        assert events[-1].kind == EventKind.RESULT
        assert Response.from_events(events).text == "recovered"

    def test_cancel_ends_the_turn_promptly(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """Setting ``ctx.cancelled`` during a turn ends it promptly with one terminal event.

        Interrupts, watchdogs and shutdown all rely on this: a backend that ignores cancellation
        holds its worker, and the agent behind it, for as long as the provider takes.
        """
        self.script_slow(provider)
        ctx = TurnContext(agent="conformance", ref="cancelled-turn")
        first_event = threading.Event()
        outcome: dict[str, list[Event]] = {}

        def run() -> None:
            """Run the slow turn on a thread, noting its first event so cancellation hits it
            mid-turn.
            """
            outcome["events"] = collect_turn(
                backend,
                session,
                "take your time",
                ctx=ctx,
                timeout=self.turn_timeout,
                on_event=lambda event: first_event.set(),
            )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.wait_until_in_flight(provider, first_event)
        cancelled_at = time.monotonic()
        ctx.cancelled.set()
        thread.join(self.cancel_deadline)
        took = time.monotonic() - cancelled_at
        assert not thread.is_alive(), f"the turn went on {self.cancel_deadline}s after cancel"
        events = outcome["events"]
        assert len(_terminal(events)) == 1, [e.kind for e in events]
        assert events[-1].kind == EventKind.ERROR, [e.kind for e in events]
        error = events[-1].data.get("error")
        assert isinstance(error, BackendError)
        assert error.kind == BackendErrorKind.CANCELLED, error
        assert took < self.cancel_deadline

    def test_terminate_session_is_idempotent(
        self, backend: Backend, session: Session, provider: UserTerm
    ) -> None:
        """Ending a session twice is harmless: several stop paths may end the same session."""
        self.script_text(provider, "bye")
        events = collect_turn(backend, session, "hello", timeout=self.turn_timeout)
        session = _advance(backend, session, events)
        backend.terminate_session(session)
        backend.terminate_session(session)

    def test_close_is_idempotent(self, provider: UserTerm) -> None:
        """Closing a backend twice, used or not, is harmless: several cleanup paths may close it."""
        unused = self.make_backend()
        unused.close()
        unused.close()
        used = self.make_backend()
        session = used.start_session(self.start_options(provider))
        self.script_text(provider, "hi")
        collect_turn(used, session, "hello", timeout=self.turn_timeout)
        used.close()
        used.close()


class FakeServerConformance(BackendConformance):
    """The suite for HTTP backends, with a :class:`FakeLLMServer` as the provider.

    Implement :meth:`make_backend` and :meth:`start_options` (point ``base_url`` at
    ``provider.url`` or ``provider.openai_base_url``), and :meth:`assert_continues` for
    your wire format.
    """

    @pytest.fixture
    def provider(self) -> Iterator[UserTerm]:
        """A :class:`FakeLLMServer` for each test, closed afterwards."""
        from ._fake_llm_server import FakeLLMServer

        with FakeLLMServer() as server:
            yield server

    def script_text(self, provider: UserTerm, text: str) -> None:
        """Script one streamed text reply (three chunks, so streaming is exercised)."""
        from ._fake_llm_server import Text

        provider.script(Text(text, chunks=3))

    def script_error(self, provider: UserTerm) -> None:
        """Script a retryable overload (529) that a backend must map to ``BackendError``."""
        from ._fake_llm_server import HTTPError

        provider.script(HTTPError(529, retry_after=0))

    def script_slow(self, provider: UserTerm) -> None:
        """Script a reply that starts and then hangs, for the cancel and timeout tests."""
        from ._fake_llm_server import Hang, Text

        provider.script(Hang(prefix=Text("partial answer", chunks=2)))

    def wait_until_in_flight(self, provider: UserTerm, first_event: threading.Event) -> None:
        """Return once the backend's request reached the provider (the turn is in flight)."""
        provider.wait_for_requests(1, timeout=self.turn_timeout)
