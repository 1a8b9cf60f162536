"""The asyncio driver of the client plans: one thread and one endpoint for every task.

The sync API gives each thread its own Thespian ``private()`` endpoint and blocks it for
the length of a call. An event loop cannot do that, and a thread per call would cost a
thread per waiting ``ask``. Here one *transport thread* owns one endpoint per system:
tasks hand it messages to send (a queue) and register a *waiter* for the reply; the thread
alternates between sending what is queued and listening, and routes each incoming
message to its waiter (by ``ref`` when the reply carries one) with
``loop.call_soon_threadsafe``. Thespian has no asyncio integration of its own
(``thespian.md`` §5.1, "Other frameworks / asyncio"), so this bridge is the whole cost: one
thread, however many tasks.

Two internals of the pinned Thespian 4.0.1 are used, each with a fallback: the endpoint's
``_tx_to_actor`` (schedule a send without waiting for its acknowledgement, what Thespian's
own ``ask`` does) and the length of its transmit queue (see :meth:`AsyncTransport._flush`).
Without them the thread sends with the public, blocking ``tell``.

Replies that carry no ref (``Accepted(None)`` from halt, resume, notify) cannot be told
apart by content, so such exchanges (``Exchange.exclusive``) run one at a time per loop.

On ``simpleSystemBase`` actors only run inside the caller's own ``ask``/``listen``, so the
transport thread runs each plan whole with the sync driver instead (still one thread; a
cancelled call then stops waiting but its exchange runs to its end in that thread).

One awaited ``ask``, across the threads involved::

    task (event loop)                transport thread                    agent
      run(plan) -> Exchange
      _register(waiter); _send ----> outbox -> _flush: _tx_to_actor ---> Prompt(ref)
      await waiter.inbox             listen() <-------------------------- Response(ref)
                                     _dispatch: _by_key[ref] -> offer
                                     _post -> _deliver (one call_soon_threadsafe per loop)
      <- ("answer", Response)
      plan.send(reply) -> result

Every waiter is answered exactly once: by its answer, by the ``PoisonMessage`` of what it
sent, by a failed transmit, by its deadline (``AskTimeout``), or by ``stop``
(``SystemNotRunning``). While it waits, the liveness check of its plan (``on_idle``)
runs every ``_LIVENESS_INTERVAL`` seconds, as in the sync driver, so a call to an agent
that died or moved is resent or failed rather than left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from thespian.actors import ActorSystem
from thespian.system.transport import SendStatus

from .._core.errors import AskTimeout, GenAgentError, SystemNotRunning
from .._core.types import ActorAddress, WireMessage
from ..messages import TurnEvent
from . import calls
from .calls import Exchange, Plan
from .system import Subscriptions, is_answer

if TYPE_CHECKING:
    from .system import AgentSystem

__all__ = ["AsyncTransport", "transport_for"]

T = TypeVar("T")

#: Seconds between liveness checks while a task waits (as the sync driver).
_LIVENESS_INTERVAL = 2.0
#: Longest the thread listens before it looks at its send queue again. Sends queued while
#: it listens wait at most this long; a busy transport mostly finds a message sooner.
_LISTEN_SLICE = 0.005
#: The listen slice while messages wait to be scheduled: one pass of Thespian's loop.
_SEND_SLICE = 0.001
#: Most messages left in Thespian's own transmit queue at once (see ``_flush``).
_MAX_QUEUED = 32
#: Seconds between checks of the transmits of waiting exchanges for failures.
_TRACK_CHECK_INTERVAL = 0.1
#: Longest the thread sleeps when nothing is awaited and nothing is queued.
_IDLE_SLICE = 0.5

_transports_lock = threading.Lock()


def transport_for(system: AgentSystem) -> AsyncTransport:
    """The one transport of ``system`` (started on first use, stopped at its shutdown)."""
    with _transports_lock:
        transport: AsyncTransport | None = getattr(system, "_aio_transport", None)
        if transport is None or transport.stopped:
            if system.closed:
                raise SystemNotRunning("the agent system is shut down")
            transport = AsyncTransport(system)
            system._aio_transport = transport  # type: ignore[attr-defined]
            system.add_closer(transport.stop)
        return transport


@dataclass(eq=False)
class _Waiter:
    """One task's exchange in flight: what counts as its answer, where to hand it."""

    loop: asyncio.AbstractEventLoop
    step: Exchange
    post: Callable[[_Waiter, tuple[str, WireMessage]], None]
    inbox: asyncio.Queue[tuple[str, WireMessage]] = field(default_factory=asyncio.Queue)
    sent: list[object] = field(default_factory=list)  # every message sent for it (poison check)
    done: bool = False

    def offer(self, message: object) -> bool:
        """Take ``message`` if it answers or streams into this exchange (transport thread).

        A ``PoisonMessage`` of something this waiter sent is its answer too, as the error
        it carries (``is_answer`` raises it), so a call to a dead address fails at once
        instead of waiting for its liveness check.
        """
        if self.done:
            return False
        try:
            answer = any(is_answer(message, sent, self.step.matches) for sent in self.sent)
        except Exception as exc:  # the PoisonMessage of what this waiter sent
            self.done = True
            self._put("error", exc)
            return True
        if answer:
            self.done = True
            self._put("answer", message)
            return True
        progress = self.step.progress
        if progress is not None and progress(message):
            self._put("progress", message)
            return True
        return False

    def fail(self, exc: BaseException) -> None:
        """Fail this exchange with ``exc`` (raised in the waiting task); it takes nothing more."""
        self.done = True
        self._put("error", exc)

    def _put(self, kind: str, value: object) -> None:
        """Hand one item to the task, through the transport's per-loop batch."""
        self.post(self, (kind, value))


def _put_all(items: list[tuple[_Waiter, tuple[str, WireMessage]]]) -> None:
    """Loop side of ``_deliver``: put a batch of items into their waiters' inboxes."""
    for waiter, item in items:
        waiter.inbox.put_nowait(item)


def _failed(track: object, waiter: _Waiter) -> bool:
    """Fail ``waiter`` if its transmit ``track`` failed other than to a dead target."""
    failure = getattr(track, "failure", None)
    if failure is None:
        return False
    if str(failure) != str(SendStatus.DeadTarget):
        waiter.fail(
            GenAgentError(f"could not send {type(waiter.step.message).__name__}: {failure}")
        )
    return True


class AsyncTransport:
    """One thread carrying every asyncio call to one system (see the module docstring)."""

    def __init__(self, system: AgentSystem) -> None:
        self._system = system
        self._simple = system.base == "simpleSystemBase"
        self._lock = threading.Lock()
        self._by_key: dict[str, list[_Waiter]] = {}
        self._unkeyed: list[_Waiter] = []
        self._outbox: queue.SimpleQueue[tuple[ActorAddress, object, _Waiter | None]] = (
            queue.SimpleQueue()
        )
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self.subscriptions = Subscriptions()  # the Watch followers of this endpoint
        self._shared: dict[
            tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Task[WireMessage]
        ] = {}
        self._tracks: list[tuple[object, _Waiter]] = []  # transmits of waiting exchanges
        self._next_track_check = 0.0
        self._batch_lock = threading.Lock()
        self._batches: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, WireMessage]]] = {}
        self._stopping = False
        self._exclusive: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._thread = threading.Thread(
            target=self._run_simple if self._simple else self._run,
            name=f"genagent-aio-{system.admin_port or 'simple'}",
            daemon=True,
        )
        self._thread.start()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    @property
    def thread(self) -> threading.Thread:
        """The transport thread (one per system, however many tasks wait)."""
        return self._thread

    def stop(self) -> None:
        """End the thread; waiting tasks get ``SystemNotRunning``."""
        self._stopping = True
        self._wake.set()
        self._jobs.put(lambda: None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10.0)
        with self._lock:
            waiters = [w for ws in self._by_key.values() for w in ws] + self._unkeyed
            self._by_key.clear()
            self._unkeyed.clear()
        for waiter in waiters:
            waiter.fail(SystemNotRunning("the agent system was shut down"))

    # ------------------------------------------------------------------ plans

    async def run(self, plan: Plan[T]) -> T:
        """Run ``plan`` to its result from the calling task."""
        result: object = None
        async for kind, value in self.run_stream(plan):
            if kind == "result":
                result = value
        return cast(T, result)  # the value ``plan`` returned

    async def run_stream(self, plan: Plan[object]) -> AsyncGenerator[tuple[str, WireMessage], None]:
        """Run ``plan``, yielding ``("progress", message)``\\ s, then ``("result", value)``.

        The same protocol as the sync driver (``calls.run_stream``): answers are sent into
        the plan, failures thrown into it. Exchanges marked ``shared`` (a liveness look-up)
        are asked once per loop and question, however many tasks ask it at once.
        """
        if self._simple:
            async for item in self._run_stream_simple(plan):
                yield item
            return
        try:
            step = next(plan)
            while True:
                try:
                    if step.shared is not None and step.progress is None:
                        reply = await self._shared_exchange(step)
                    else:
                        reply = None
                        async for kind, value in self._exchange(step):
                            if kind == "progress":
                                yield kind, value
                            else:
                                reply = value
                except Exception as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(reply)
        except StopIteration as stop:
            yield "result", stop.value
        finally:
            plan.close()

    async def _shared_exchange(self, step: Exchange) -> WireMessage:
        """Run ``step``, or wait for the same question already asked by another task."""
        loop = asyncio.get_running_loop()
        key = (loop, step.shared)
        running = self._shared.get(key)
        if running is None:
            running = loop.create_task(self._answer(step))
            self._shared[key] = running
            running.add_done_callback(lambda _: self._shared.pop(key, None))
        return await asyncio.shield(running)

    async def _answer(self, step: Exchange) -> WireMessage:
        """The answer of ``step`` alone (the task ``_shared_exchange`` lets other tasks await)."""
        async for kind, value in self._exchange(step):
            if kind == "answer":
                return value
        return None  # pragma: no cover - an exchange ends with its answer or raises

    def send_nowait(self, address: ActorAddress, message: object) -> None:
        """Queue ``message`` for ``address`` without waiting (safe from a cancelled task)."""
        if self._simple:
            self._jobs.put(lambda: self._send_if_running(address, message))
            return
        self._outbox.put((address, message, None))
        self._wake.set()

    def _send_if_running(self, address: ActorAddress, message: object) -> None:
        """Send from the simple-base thread; a system shut down meanwhile has nobody to tell.

        These sends are fire-and-forget (an unsubscribe, an interrupt of a cancelled call),
        queued before a shutdown that the thread reaches first: raising would end the thread
        with an error no caller can receive."""
        with contextlib.suppress(SystemNotRunning):
            self._system.send(address, message)

    # ------------------------------------------------------------------ one exchange

    async def _exchange(self, step: Exchange) -> AsyncGenerator[tuple[str, WireMessage], None]:
        """Run one exchange, one at a time per loop if its answer carries no ref.

        An ``Accepted(None)`` cannot say which of two concurrent halts it answers; holding an
        ``asyncio.Lock`` per loop makes the first such answer that of the one exchange waiting.
        """
        if step.exclusive:
            lock = self._exclusive.setdefault(asyncio.get_running_loop(), asyncio.Lock())
            async with lock:
                async for item in self._exchange_unlocked(step):
                    yield item
        else:
            async for item in self._exchange_unlocked(step):
                yield item

    async def _exchange_unlocked(
        self, step: Exchange
    ) -> AsyncGenerator[tuple[str, WireMessage], None]:
        """Send ``step`` and yield its progress, then its answer; raise its error or timeout.

        The wait is cut into liveness slices: between them ``on_idle`` may find the agent at a
        new address (a restart), and the same messages are sent there under the same ref. The
        waiter is unregistered whatever happens, so a late answer reaches nobody.
        """
        if self._stopping or self._system.closed:
            raise SystemNotRunning("the agent system is shut down")
        waiter = _Waiter(asyncio.get_running_loop(), step, self._post)
        self._register(waiter)
        try:
            self._send(step.address, waiter)
            deadline = None if step.timeout is None else time.monotonic() + step.timeout
            while True:
                wait = _LIVENESS_INTERVAL
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                try:
                    async with asyncio.timeout(wait):
                        kind, value = await waiter.inbox.get()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise AskTimeout(
                            f"no reply to {type(step.message).__name__} within {step.timeout}s"
                        ) from None
                    if step.on_idle is not None:
                        new_address = await self.run(step.on_idle())
                        if new_address is not None:
                            self._send(new_address, waiter)
                    continue
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "answer":
                    return
        finally:
            waiter.done = True
            self._unregister(waiter)

    def _send(self, address: ActorAddress, waiter: _Waiter) -> None:
        """Queue the exchange's messages (``before`` first) for the thread to schedule.

        Each is remembered in ``waiter.sent`` so a ``PoisonMessage`` wrapping any of them is
        recognised as this waiter's failure.
        """
        step = waiter.step
        for message in (*step.before, step.message):
            waiter.sent.append(message)
            self._outbox.put((address, message, waiter))
        self._wake.set()

    def _post(self, waiter: _Waiter, item: tuple[str, WireMessage]) -> None:
        """Queue ``item`` for ``waiter``'s inbox; :meth:`_deliver` hands batches to loops."""
        with self._batch_lock:
            self._batches.setdefault(waiter.loop, []).append((waiter, item))
        if threading.current_thread() is not self._thread:
            self._deliver()

    def _deliver(self) -> None:
        """One ``call_soon_threadsafe`` per loop for everything that arrived since the last.

        Waking a loop costs a write to its self-pipe; under load the thread receives many
        answers per pass, so batching them saves most of those wakes.
        """
        with self._batch_lock:
            batches, self._batches = self._batches, {}
        for loop, items in batches.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_put_all, items)

    def _register(self, waiter: _Waiter) -> None:
        """Make ``waiter`` reachable by its ref (or among the unkeyed) before anything is sent.

        Registered first, so an answer that arrives before ``_send`` returns is not dropped.
        """
        with self._lock:
            key = waiter.step.key
            if key is None:
                self._unkeyed.append(waiter)
            else:
                self._by_key.setdefault(key, []).append(waiter)
        self._wake.set()

    def _unregister(self, waiter: _Waiter) -> None:
        """Forget ``waiter``; a key with no waiter left is dropped so the table does not grow."""
        with self._lock:
            key = waiter.step.key
            if key is None:
                with contextlib.suppress(ValueError):
                    self._unkeyed.remove(waiter)
            else:
                waiters = self._by_key.get(key, [])
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    self._by_key.pop(key, None)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        """Thread body: flush the outbox, listen briefly, dispatch, deliver; until ``stop``.

        The endpoint is created in this thread and used by it alone (Thespian's ``private()``
        contexts are per thread). With nothing awaited, the thread sleeps on ``_wake`` instead
        of polling Thespian; with messages waiting to go out, it listens for one loop pass only,
        so sends are never held behind a listen.
        """
        manager = self._system.asys.private()
        context = manager.__enter__()
        try:
            while not self._stopping:
                self._flush(context)
                with self._lock:
                    waiting = bool(self._by_key or self._unkeyed)
                if not waiting:
                    self._wake.wait(_IDLE_SLICE)
                    self._wake.clear()
                    continue
                message = context.listen(_SEND_SLICE if self._has_outgoing() else _LISTEN_SLICE)
                while message is not None:
                    self._dispatch(message)
                    message = None if self._has_outgoing() else context.listen(0)
                self._deliver()
        finally:
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)

    def _flush(self, context: ActorSystem) -> None:
        """Hand queued messages to Thespian's transmit queue without waiting for them.

        ``context.tell`` would block until each message is acknowledged, one after the
        other; scheduling them lets the next ``listen`` carry them out concurrently, the
        way Thespian's own ``ask`` sends before it receives. Thespian scans its whole
        queue on every schedule (and drops into a transmit-only mode beyond 950 queued),
        so at most :data:`_MAX_QUEUED` wait there; the rest wait in the outbox. A transmit
        that fails for any reason but a dead target fails its waiter (a dead target is the
        liveness check's business, as for the sync API).
        """
        base = getattr(context, "_systemBase", None)
        schedule = getattr(base, "_tx_to_actor", None)
        queue_of = getattr(getattr(base, "transport", None), "_aTB_queuedPendingTransmits", ())
        while schedule is None or len(queue_of) < _MAX_QUEUED:
            try:
                address, message, waiter = self._outbox.get_nowait()
            except queue.Empty:
                break
            try:
                if schedule is None:  # pragma: no cover - another Thespian version
                    context.tell(address, message)
                    continue
                track = schedule(address, message)
            except Exception as exc:
                if waiter is not None:
                    waiter.fail(exc)
                continue
            if waiter is not None:
                self._tracks.append((track, waiter))
        now = time.monotonic()
        if self._tracks and now >= self._next_track_check:  # O(transmits): not every loop
            self._next_track_check = now + _TRACK_CHECK_INTERVAL
            self._tracks = [(t, w) for t, w in self._tracks if not w.done and not _failed(t, w)]

    def _has_outgoing(self) -> bool:
        """Whether tasks queued messages the thread has not handed to Thespian yet."""
        return not self._outbox.empty()

    def _dispatch(self, message: object) -> None:
        """Route an incoming message to its waiter: by ``ref`` first, else the unkeyed ones.

        A ``TurnEvent`` goes to every candidate (several streams may follow one turn); any
        other message to the first waiter that takes it. A message nobody takes is dropped: a
        late answer to a call that gave up, or the echo of a subscription.
        """
        key = getattr(message, "ref", None)
        with self._lock:
            candidates = list(self._by_key.get(key, ())) if isinstance(key, str) else []
            candidates += self._unkeyed
        if isinstance(message, TurnEvent):
            for waiter in candidates:  # every stream and watch of that turn sees it
                waiter.offer(message)
            return
        for waiter in candidates:
            if waiter.offer(message):
                return
        # nobody waits for it: a late answer to a call that gave up, a subscription echo

    # ------------------------------------------------------------------ simpleSystemBase

    def _run_simple(self) -> None:
        """Thread body on ``simpleSystemBase``: run queued jobs (whole plans, sends) in order.

        Actors of that base run only inside the caller's ``ask``/``listen``, so this thread
        drives them through the sync driver, one job at a time.
        """
        while not self._stopping:
            job = self._jobs.get()
            job()

    async def _run_stream_simple(
        self, plan: Plan[object]
    ) -> AsyncGenerator[tuple[str, WireMessage], None]:
        """Run ``plan`` as a job of the thread and relay its items to the awaiting task.

        Cancelling the task sets ``cancelled``: a job not started yet does not run, and one
        running stops relaying at its next progress item (its current exchange still ends).
        """
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, WireMessage]] = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, value: object) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(inbox.put_nowait, (kind, value))

        def job() -> None:
            result: list[object] = []

            def capture() -> Generator[WireMessage, None, None]:
                result.append((yield from calls.run_stream(self._system, plan)))

            if cancelled.is_set():
                plan.close()
                return
            try:
                for message in capture():
                    put("progress", message)
                    if cancelled.is_set():
                        return
            except BaseException as exc:
                put("error", exc)
                return
            put("result", result[0])

        self._jobs.put(job)
        try:
            while True:
                kind, value = await inbox.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "result":
                    return
        finally:
            cancelled.set()
