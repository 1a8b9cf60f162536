"""Benchmark 6, streaming: delay from a backend emitting a text delta to a subscriber.

A :class:`~bench._actors.StampingBackend` turn emits ``deltas`` text deltas ``pause``
seconds apart, each stamped with ``time.time()`` as it is yielded in the worker's turn
thread. Two kinds of subscriber receive them in this process, one after the other (when
both listen at once, they compete for this process and the agent's sends, and each looks
worse than it is alone):

* a ``messages.Watch`` subscription: a thread with its own ``private()`` context that
  receives ``TurnEvent`` messages straight from the agent (worker -> agent -> subscriber);
* a telemetry handler for ``turn.event`` (worker -> agent -> telemetry hub -> this
  process's telemetry thread -> handler).

The delay is the receive time minus the stamp (one clock: same machine). The floor is the
raw one-way message latency: a raw actor stamps ``time.time()`` into a message it sends to
the caller, which computes the same difference. Raw samples are taken in blocks between the
turns.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import genagent_thespian as g
from genagent_thespian import EventKind
from genagent_thespian.messages import Accepted, TurnEvent, Watch

from ._actors import BenchAgent, Forwarder, Stamper, StampingBackend, ThreadedStreamer
from ._common import Figure, RawSystem, Result, agent_system, summarize, wait_for

__all__ = ["run"]

_PAUSE = 0.005


def _sizes(quick: bool) -> tuple[int, int]:
    """(turns, deltas per turn)."""
    return (2, 10) if quick else (10, 50)


class _Watcher:
    """A ``Watch`` subscriber on its own thread and ``private()`` context."""

    def __init__(self, system: Any, address: Any) -> None:
        self.delays: list[float] = []
        self._system = system
        self._address = address
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError(f"the Watch subscription was not accepted: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        try:
            with self._system.asys.private() as context:
                reply = context.ask(self._address, Watch(), 10.0)
                if not isinstance(reply, Accepted):
                    raise RuntimeError(f"Watch answered with {reply!r:.80}")
                self._ready.set()
                while not self._stop.is_set():
                    message = context.listen(0.05)
                    received = time.time()
                    if (
                        isinstance(message, TurnEvent)
                        and message.event.kind == EventKind.TEXT_DELTA
                        and "sent" in message.event.data
                    ):
                        self.delays.append(received - message.event.data["sent"])
                context.tell(self._address, Watch(active=False))
        except BaseException as exc:
            self._error = exc
            self._ready.set()


def _design_floor(
    raw: RawSystem, context: Any, stamper: Any, turns: int, deltas: int
) -> list[float]:
    """Stream ``turns x deltas`` stamps through raw actors; return the delays."""
    streamer = raw.create(ThreadedStreamer)
    forwarder = raw.create(Forwarder)
    delays: list[float] = []
    with raw.asys.private() as subscriber:
        if subscriber.ask(forwarder, ("subscribe",), 10.0) != ("subscribed",):
            raise RuntimeError("the forwarder did not accept the subscription")
        for _ in range(turns):
            context.tell(streamer, ("stream", deltas, _PAUSE, forwarder))
            for _ in range(deltas):
                message = subscriber.listen(10.0)
                received = time.time()
                if not (isinstance(message, tuple) and message[:1] == ("stamped",)):
                    raise RuntimeError(f"the subscriber got {message!r:.80}")
                delays.append(received - message[1])
    return delays


def run(quick: bool = False) -> Result:
    """Measure the streaming delay against the raw one-way message latency."""
    turns, deltas = _sizes(quick)
    expected = turns * deltas
    raw_delays: list[float] = []
    telemetry_delays: list[float] = []
    lock = threading.Lock()

    def on_event(name: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        received = time.time()
        event = metadata.get("event")
        if event is not None and event.kind == EventKind.TEXT_DELTA and "sent" in event.data:
            with lock:
                telemetry_delays.append(received - event.data["sent"])

    with RawSystem("multiprocTCPBase") as raw, agent_system("multiprocTCPBase") as system:
        stamper = raw.create(Stamper)
        g.start_agent(
            BenchAgent,
            name="streamer",
            backend=StampingBackend,
            deltas=deltas,
            pause=_PAUSE,
            worker_idle_timeout=600.0,
            system=system,
        )
        g.ask("streamer", "warm", timeout=30.0, system=system)
        address = g.whereis("streamer", system=system)
        with raw.asys.private() as context:
            for _ in range(5):
                context.ask(stamper, ("stamp",), 10.0)

            def turns_with_raw_blocks() -> None:
                for _ in range(turns):
                    for _ in range(deltas):
                        reply = context.ask(stamper, ("stamp",), 10.0)
                        raw_delays.append(time.time() - reply[1])
                    g.ask("streamer", "stream", timeout=60.0, system=system)

            # Phase 1: the Watch subscriber alone.
            with _Watcher(system, address) as watcher:
                turns_with_raw_blocks()
                wait_for(
                    lambda: len(watcher.delays) >= expected,
                    timeout=10.0,
                    what=f"{expected} deltas at the Watch subscriber",
                )
                watch_delays = list(watcher.delays)
            # Phase 2: the design floor, raw actors on the same path as a delta.
            design_delays = _design_floor(raw, context, stamper, turns, deltas)
            # Phase 3: the telemetry handler alone.
            handler_id = f"bench-streaming-{id(raw_delays)}"
            g.attach(handler_id, ["turn.event"], on_event, system=system)
            try:
                turns_with_raw_blocks()
                wait_for(
                    lambda: len(telemetry_delays) >= expected,
                    timeout=10.0,
                    what=f"{expected} deltas at the telemetry handler",
                )
            finally:
                g.detach(handler_id, system=system)

    raw_summary = summarize(raw_delays)
    design_summary = summarize(design_delays)
    watch_summary = summarize(watch_delays)
    telemetry_summary = summarize(telemetry_delays)
    result = Result("streaming")
    result.details = {
        "turns": turns,
        "deltas_per_turn": deltas,
        "pause_s": _PAUSE,
        "raw_one_way": raw_summary,
        "design_floor": design_summary,
        "watch": watch_summary,
        "telemetry": telemetry_summary,
        "watch_delays_ms": [round(delay * 1000.0, 2) for delay in watch_delays],
        "telemetry_delays_ms": [round(delay * 1000.0, 2) for delay in telemetry_delays],
    }
    for key, label, summary in (
        ("watch", "delta -> Watch subscriber", watch_summary),
        ("telemetry", "delta -> turn.event telemetry handler", telemetry_summary),
    ):
        for quantile in ("p50", "p99"):
            result.add(
                Figure(
                    key=f"{key}_{quantile}",
                    label=f"{label} {quantile}",
                    unit="ms",
                    value=summary[f"{quantile}_ms"],
                    floor=raw_summary[f"{quantile}_ms"],
                    floor_label=f"raw one-way message {quantile}",
                    samples=int(summary["samples"]),
                )
            )
    result.add(
        Figure(
            key="design_floor_p50",
            label="design floor p50: raw thread -> pipe -> actor -> forwarder -> subscriber",
            unit="ms",
            value=design_summary["p50_ms"],
            floor=raw_summary["p50_ms"],
            floor_label="raw one-way message p50",
            samples=int(design_summary["samples"]),
        )
    )
    result.add(
        Figure(
            key="watch_vs_design_p50",
            label="delta -> Watch subscriber p50 against the design floor",
            unit="ms",
            value=watch_summary["p50_ms"],
            floor=design_summary["p50_ms"],
            floor_label="design floor p50",
            samples=int(watch_summary["samples"]),
        )
    )
    result.notes.append(
        f"{turns} turns of {deltas} deltas, {_PAUSE * 1000:.0f} ms apart, per subscriber: "
        "first with only the Watch subscription, then the raw design floor, then with only "
        "the telemetry handler; "
        "raw samples in blocks between the turns."
    )
    return result
