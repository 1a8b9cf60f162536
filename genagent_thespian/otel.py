"""An optional OpenTelemetry bridge: telemetry events become spans and metrics.

Install the extra (``pip install 'genagent-thespian[otel]'``), configure OpenTelemetry as
usual (a ``TracerProvider`` with an exporter, a ``MeterProvider`` with a reader), then::

    from genagent_thespian import otel
    bridge = otel.install()          # the global providers; or install(tracer_provider=...)
    ...
    bridge.uninstall()

Nothing is exported unless *you* configure an exporter: without configuration the global
providers are OpenTelemetry's no-op ones.

**Spans.** One span per turn, from ``turn.start`` to ``turn.stop`` / ``turn.error``, named
``invoke_agent <agent>`` after the GenAI semantic conventions, with ``gen_ai.operation.name``
(``invoke_agent``), ``gen_ai.agent.name``, ``gen_ai.system`` (the backend's name),
``gen_ai.request.model`` / ``gen_ai.response.model`` and ``gen_ai.usage.input_tokens`` /
``gen_ai.usage.output_tokens`` (from ``prompt.stop``'s usage), plus ``genagent.ref``,
``genagent.origin`` and ``genagent.node``. A failed turn has status ``ERROR`` and
``error.type`` set to the failure's reason (``interrupted``, ``timeout``...). Spans carry
the agent process's own start time and the turn's measured duration.

**Metrics.** ``gen_ai.client.operation.duration`` (histogram, seconds, per agent and
outcome), ``gen_ai.client.token.usage`` (counter, tokens, by ``gen_ai.token.type`` =
``input`` / ``output``) and ``genagent.turn.errors`` (counter, by ``error.type``).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from ._api.telemetry import attach, detach
from ._core.errors import GenAgentError, InvalidOption

__all__ = ["OtelBridge", "install"]

_EVENTS = ("turn.start", "turn.stop", "turn.error", "prompt.stop", "prompt.start")
_INSTRUMENTATION = "genagent_thespian"


@dataclass
class _OpenTurn:
    span: Any
    start_ns: int
    backend: str
    attributes: dict[str, Any] = field(default_factory=dict)


class OtelBridge:
    """Turns this process's telemetry into OpenTelemetry spans and metrics.

    Made by :func:`install`; :meth:`uninstall` detaches it (open spans are ended).
    """

    def __init__(
        self, *, tracer_provider: Any = None, meter_provider: Any = None, system: Any = None
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise InvalidOption(
                "the OpenTelemetry bridge needs the otel extra: "
                "pip install 'genagent-thespian[otel]'"
            ) from None
        self._trace = trace
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_INSTRUMENTATION)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(_INSTRUMENTATION)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of agent turns"
        )
        self._tokens = meter.create_counter(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used by turns"
        )
        self._errors = meter.create_counter(
            "genagent.turn.errors", unit="{turn}", description="Failed turns by reason"
        )
        self._system = system
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _OpenTurn] = {}
        self._handler_id = f"genagent-otel-{uuid.uuid4().hex[:8]}"
        self.installed = False

    def install(self) -> OtelBridge:
        """Attach to telemetry (idempotent)."""
        if not self.installed:
            attach(self._handler_id, _EVENTS, self.handle, system=self._system)
            self.installed = True
        return self

    def uninstall(self) -> None:
        """Detach from telemetry and end any span still open (idempotent)."""
        if self.installed:
            with contextlib.suppress(GenAgentError):
                detach(self._handler_id, system=self._system)
            self.installed = False
        with self._lock:
            open_turns, self._open = list(self._open.values()), {}
        for turn in open_turns:
            turn.span.set_attribute("genagent.unfinished", True)
            turn.span.end()

    @property
    def open_spans(self) -> int:
        """How many turns have a span started and not yet ended."""
        with self._lock:
            return len(self._open)

    # ------------------------------------------------------------------ events

    def handle(self, name: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Handle one telemetry event (called by the telemetry bridge)."""
        agent = str(metadata.get("agent"))
        key = (agent, str(metadata.get("ref")))
        if name == "turn.start":
            self._start(key, measurements, metadata)
        elif name == "prompt.stop":
            self._usage(key, metadata.get("usage"))
        elif name in ("turn.stop", "turn.error"):
            self._end(key, name, measurements, metadata)

    def _start(
        self, key: tuple[str, str], measurements: dict[str, Any], metadata: dict[str, Any]
    ) -> None:
        agent = key[0]
        backend = str(metadata.get("backend") or "unknown")
        start_ns = int(float(measurements.get("system_time", 0.0)) * 1e9) or None
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.system": backend,
            "genagent.ref": key[1],
            "genagent.origin": str(metadata.get("origin")),
            "genagent.attempt": int(metadata.get("attempt") or 0),
        }
        if metadata.get("node"):
            attributes["genagent.node"] = str(metadata["node"])
        span = self._tracer.start_span(
            f"invoke_agent {agent}",
            kind=self._trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=start_ns,
        )
        with self._lock:
            self._open[key] = _OpenTurn(span, start_ns or 0, backend, attributes)

    def _usage(self, key: tuple[str, str], usage: Any) -> None:
        if usage is None:
            return
        with self._lock:
            turn = self._open.get(key)
        if turn is None:
            return
        model = getattr(usage, "model", None)
        if model:
            turn.span.set_attribute("gen_ai.request.model", model)
            turn.span.set_attribute("gen_ai.response.model", model)
        input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
        turn.span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        turn.span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        cost = getattr(usage, "cost_usd", None)
        if cost is not None:
            turn.span.set_attribute("genagent.cost_usd", float(cost))
        common = {"gen_ai.agent.name": key[0], "gen_ai.system": turn.backend}
        if model:
            common["gen_ai.response.model"] = model
        self._tokens.add(input_tokens, {**common, "gen_ai.token.type": "input"})
        self._tokens.add(output_tokens, {**common, "gen_ai.token.type": "output"})

    def _end(
        self,
        key: tuple[str, str],
        name: str,
        measurements: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        with self._lock:
            turn = self._open.pop(key, None)
        if turn is None:
            return
        duration_ms = float(measurements.get("duration_ms") or 0.0)
        metric_attributes = {"gen_ai.agent.name": key[0], "gen_ai.system": turn.backend}
        if name == "turn.error":
            reason = str(metadata.get("reason") or "error")
            turn.span.set_attribute("error.type", reason)
            turn.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, reason))
            metric_attributes["error.type"] = reason
            self._errors.add(1, {"gen_ai.agent.name": key[0], "error.type": reason})
        end_ns = turn.start_ns + int(duration_ms * 1e6) if turn.start_ns else None
        turn.span.end(end_time=end_ns)
        self._duration.record(duration_ms / 1000.0, metric_attributes)


def install(
    tracer_provider: Any = None, meter_provider: Any = None, *, system: Any = None
) -> OtelBridge:
    """Start turning telemetry into OpenTelemetry spans and metrics.

    Args:
        tracer_provider: The ``TracerProvider`` to use (default: the global one).
        meter_provider: The ``MeterProvider`` to use (default: the global one).
        system: The agent system whose telemetry to bridge (default: the current one,
            and systems started later).

    Returns:
        The bridge; call ``uninstall()`` on it to stop.

    Raises:
        InvalidOption: the ``otel`` extra is not installed.
    """
    bridge = OtelBridge(
        tracer_provider=tracer_provider, meter_provider=meter_provider, system=system
    )
    return bridge.install()
