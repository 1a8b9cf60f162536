"""An optional OpenTelemetry bridge: telemetry events become spans and metrics.

Install the extra (``pip install 'genagent-thespian[otel]'``), configure OpenTelemetry as
usual (a ``TracerProvider`` with an exporter, a ``MeterProvider`` with a reader), then::

    from genagent_thespian import otel
    bridge = otel.install()          # the global providers; or install(tracer_provider=...)
    ...
    bridge.uninstall()

Nothing is exported unless *you* configure an exporter: without configuration the global
providers are OpenTelemetry's no-op ones.

The names follow the current OpenTelemetry GenAI semantic conventions.

**Spans.** One span per turn, from ``turn.start`` to ``turn.stop`` / ``turn.error``, named
``invoke_agent <agent>``, with ``gen_ai.operation.name`` (``invoke_agent``),
``gen_ai.agent.name``, ``gen_ai.provider.name`` (``anthropic`` for the claude CLI and the
Anthropic SDK, ``openai`` for codex and the OpenAI SDK, the backend's name otherwise),
``gen_ai.request.model`` / ``gen_ai.response.model`` and ``gen_ai.usage.input_tokens`` /
``gen_ai.usage.output_tokens`` (from ``prompt.stop``'s usage), plus ``genagent.backend``,
``genagent.ref``, ``genagent.origin``, ``genagent.attempt`` and ``genagent.node``. A failed
turn has status ``ERROR`` and ``error.type`` set to the failure's reason (``interrupted``,
``timeout``...). Spans carry the agent process's own start time and the turn's measured
duration.

Each tool call the backend reports (a ``tool_use`` event) is a child span ``execute_tool
<tool>`` (kind ``INTERNAL``) with ``gen_ai.operation.name`` (``execute_tool``),
``gen_ai.tool.name`` and ``gen_ai.tool.call.id``, ended by the matching ``tool_result``
(``error.type`` = ``tool_error`` when the tool failed) or, if none comes, with its turn.

**Metrics.** ``gen_ai.client.operation.duration`` (histogram, seconds, by
``gen_ai.operation.name``, ``gen_ai.provider.name``, agent and ``error.type``),
``gen_ai.client.token.usage`` (histogram, tokens, by ``gen_ai.token.type`` = ``input`` /
``output``), both with the conventions' bucket boundaries, and ``genagent.turn.errors``
(counter, by ``error.type``).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ._api.telemetry import attach, detach
from ._core.errors import GenAgentError, InvalidOption
from ._core.types import Metadata

if TYPE_CHECKING:  # the optional ``otel`` extra, imported where it is used
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from ._api.system import AgentSystem

__all__ = ["OtelBridge", "install", "provider_name"]

_EVENTS = ("turn.start", "turn.stop", "turn.error", "prompt.stop", "prompt.start", "turn.event")
_INSTRUMENTATION = "genagent_thespian"

# Backends name their program; the conventions name the provider behind it.
_PROVIDERS = {
    "claude": "anthropic",
    "anthropic": "anthropic",
    "codex": "openai",
    "openai": "openai",
}

# The bucket boundaries the GenAI conventions advise for these two histograms.
_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 s .. 81.92 s
_TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1 .. 67,108,864 tokens


def provider_name(backend: str) -> str:
    """Return the ``gen_ai.provider.name`` for a backend's name (``claude`` -> ``anthropic``)."""
    return _PROVIDERS.get(backend, backend)


@dataclass
class _OpenTurn:
    """A turn whose span is open: keyed by ``(agent, ref)`` until its ``turn.stop``/``turn.error``.

    Kept in the bridge, not in the span, because the events of one turn arrive as separate
    telemetry calls (usage, tool events, the end) and must find the same span.
    """

    span: Span
    start_ns: int
    backend: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    tools: dict[str, Span] = field(default_factory=dict)  # open tool spans by tool call id
    last_tool_ns: int = 0  # the turn's span never ends before its last tool event


class OtelBridge:
    """Turns this process's telemetry into OpenTelemetry spans and metrics.

    Made by :func:`install`; :meth:`uninstall` detaches it (open spans are ended).
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        system: AgentSystem | None = None,
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
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of agent turns",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used by turns",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
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
            for tool in turn.tools.values():
                tool.set_attribute("genagent.unfinished", True)
                tool.end()
            turn.span.set_attribute("genagent.unfinished", True)
            turn.span.end()

    @property
    def open_spans(self) -> int:
        """How many turns have a span started and not yet ended."""
        with self._lock:
            return len(self._open)

    # ------------------------------------------------------------------ events

    def handle(self, name: str, measurements: dict[str, float], metadata: Metadata) -> None:
        """Handle one telemetry event (called by the telemetry bridge)."""
        agent = str(metadata.get("agent"))
        key = (agent, str(metadata.get("ref")))
        if name == "turn.start":
            self._start(key, measurements, metadata)
        elif name == "prompt.stop":
            self._usage(key, metadata.get("usage"))
        elif name == "turn.event":
            self._tool_event(key, measurements, metadata.get("event"))
        elif name in ("turn.stop", "turn.error"):
            self._end(key, name, measurements, metadata)

    def _start(
        self, key: tuple[str, str], measurements: dict[str, float], metadata: Metadata
    ) -> None:
        """Open the turn's ``invoke_agent`` span at the time the agent process stamped.

        The agent's wall-clock stamp is used, not the time the event reached this process:
        telemetry is batched and relayed, and the span must show when the turn really began.
        """
        agent = key[0]
        backend = str(metadata.get("backend") or "unknown")
        start_ns = int(float(measurements.get("system_time", 0.0)) * 1e9) or None
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.provider.name": provider_name(backend),
            "genagent.backend": backend,
            "genagent.ref": key[1],
            "genagent.origin": str(metadata.get("origin")),
            "genagent.attempt": int(cast(int, metadata.get("attempt") or 0)),
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

    def _usage(self, key: tuple[str, str], usage: object) -> None:
        """Put the turn's model and token counts on its span and record the token histogram.

        ``prompt.stop`` carries the usage and precedes ``turn.stop``, so the span is still open;
        a usage for a turn this bridge never saw start (attached mid-turn) is dropped.
        """
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
        common = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": key[0],
            "gen_ai.provider.name": provider_name(turn.backend),
        }
        if model:
            common["gen_ai.response.model"] = model
        self._tokens.record(input_tokens, {**common, "gen_ai.token.type": "input"})
        self._tokens.record(output_tokens, {**common, "gen_ai.token.type": "output"})

    def _tool_event(
        self, key: tuple[str, str], measurements: dict[str, float], event: object
    ) -> None:
        """Open an ``execute_tool`` child span at ``tool_use``; end it at the matching result.

        Results are matched by ``tool_use_id``; a call without an id gets a made-up one, so two
        anonymous calls never share a span. The latest tool time is kept so that the turn's
        span never ends before its children.
        """
        kind = getattr(event, "kind", None)
        if kind not in ("tool_use", "tool_result"):
            return
        data = getattr(event, "data", None) or {}
        with self._lock:
            turn = self._open.get(key)
        if turn is None:
            return
        at_ns = int(float(measurements.get("system_time") or 0.0) * 1e9) or None
        turn.last_tool_ns = max(turn.last_tool_ns, at_ns or 0)
        if kind == "tool_use":
            call_id = str(data.get("id") or f"call-{len(turn.tools) + 1}")
            tool_name = str(data.get("name") or "tool")
            attributes: dict[str, str] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool_name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.provider.name": provider_name(turn.backend),
            }
            if data.get("kind"):
                attributes["genagent.tool.kind"] = str(data["kind"])
            turn.tools[call_id] = self._tracer.start_span(
                f"execute_tool {tool_name}",
                context=self._trace.set_span_in_context(turn.span),
                kind=self._trace.SpanKind.INTERNAL,
                attributes=attributes,
                start_time=at_ns,
            )
            return
        tool = turn.tools.pop(str(data.get("tool_use_id")), None)
        if tool is None:
            return
        if data.get("exit_code") is not None:
            tool.set_attribute("genagent.tool.exit_code", int(data["exit_code"]))
        if data.get("is_error"):
            tool.set_attribute("error.type", "tool_error")
            tool.set_status(self._trace.Status(self._trace.StatusCode.ERROR, "tool_error"))
        tool.end(end_time=at_ns)

    def _end(
        self,
        key: tuple[str, str],
        name: str,
        measurements: dict[str, float],
        metadata: Metadata,
    ) -> None:
        """Close the turn's span (and any tool span left open) and record duration and errors.

        The end time is the start plus the duration the worker measured, so the span shows the
        backend call, not the relay; a failed turn gets status ``ERROR`` and its reason as
        ``error.type`` on the span and on both metrics.
        """
        with self._lock:
            turn = self._open.pop(key, None)
        if turn is None:
            return
        duration_ms = float(measurements.get("duration_ms") or 0.0)
        end_ns = turn.start_ns + int(duration_ms * 1e6) if turn.start_ns else None
        if end_ns is not None:
            # The duration is the backend call's; events are stamped by the agent a little
            # later, so a span ending at start + duration could end before its children.
            end_ns = max(end_ns, turn.last_tool_ns)
        for tool in turn.tools.values():  # no tool_result came: the tool ends with its turn
            tool.set_attribute("genagent.unfinished", True)
            tool.end(end_time=end_ns)
        metric_attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": key[0],
            "gen_ai.provider.name": provider_name(turn.backend),
        }
        if name == "turn.error":
            reason = str(metadata.get("reason") or "error")
            turn.span.set_attribute("error.type", reason)
            turn.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, reason))
            metric_attributes["error.type"] = reason
            self._errors.add(1, {"gen_ai.agent.name": key[0], "error.type": reason})
        turn.span.end(end_time=end_ns)
        self._duration.record(duration_ms / 1000.0, metric_attributes)


def install(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    *,
    system: AgentSystem | None = None,
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
