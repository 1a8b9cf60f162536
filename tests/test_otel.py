"""The OpenTelemetry bridge: spans per turn and metrics, checked with the SDK's in-memory tools.

Only multiprocTCPBase (``agent_system``): on simpleSystemBase the interrupted 60-second turn
of the first test does not produce its span within the wait (measured; not yet explained).
"""

from __future__ import annotations

from typing import Any

import pytest
from support_operator import Scripted

import genagent_thespian as g
from genagent_thespian._api.system import AgentSystem
from genagent_thespian.testing import wait_until

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from genagent_thespian import otel


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_turns_become_spans_and_metrics(agent_system: AgentSystem) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    bridge = otel.install(
        tracer_provider=tracer_provider, meter_provider=meter_provider, system=agent_system
    )
    try:
        g.start_agent(
            Scripted,
            name="a",
            backend="scripted",
            script=["hello there world", {"slow": "never finished", "seconds": 60}],
        )
        response = g.ask("a", "say hello")
        ref = g.tell("a", "take long")
        wait_until(lambda: g.status("a").state == "processing", timeout=10.0)
        g.interrupt("a", ref)
        wait_until(lambda: len(exporter.get_finished_spans()) == 2, timeout=10.0)
    finally:
        bridge.uninstall()

    ok, failed = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert ok.name == "invoke_agent a"
    assert ok.kind is SpanKind.CLIENT
    assert dict(ok.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "a",
        "gen_ai.provider.name": "scripted",
        "genagent.backend": "scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.response.model": "scripted",
        "gen_ai.usage.input_tokens": 2,
        "gen_ai.usage.output_tokens": 3,
        "genagent.ref": response.ref,
        "genagent.origin": "ask",
        "genagent.attempt": 1,
        "genagent.node": agent_system.node,
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert ok.end_time is not None and ok.start_time is not None
    assert (ok.end_time - ok.start_time) / 1e6 == pytest.approx(response.duration_ms, abs=1.0)

    assert failed.attributes is not None
    assert failed.attributes["genagent.ref"] == ref
    assert failed.attributes["error.type"] == "interrupted"
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert failed.status.status_code is StatusCode.ERROR

    points = _points(reader)
    durations = points["gen_ai.client.operation.duration"]
    assert sum(p.count for p in durations) == 2
    assert {p.attributes.get("error.type") for p in durations} == {None, "interrupted"}
    tokens = {
        p.attributes["gen_ai.token.type"]: (p.count, p.sum)
        for p in points["gen_ai.client.token.usage"]
    }
    assert tokens == {"input": (1, 2), "output": (1, 3)}  # a histogram, as the conventions say
    for point in [*durations, *points["gen_ai.client.token.usage"]]:
        assert point.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert point.attributes["gen_ai.provider.name"] == "scripted"
        assert "gen_ai.system" not in point.attributes  # the deprecated name is gone
    (errors,) = points["genagent.turn.errors"]
    assert (errors.value, errors.attributes["error.type"]) == (1, "interrupted")


def test_uninstall_stops_spans_and_ends_open_ones(agent_system: AgentSystem) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    bridge = otel.install(tracer_provider=tracer_provider, system=agent_system)
    g.start_agent(
        Scripted, name="a", backend="scripted", script=[{"slow": "long", "seconds": 60}, "x"]
    )
    ref = g.tell("a", "long")
    wait_until(lambda: bridge.open_spans == 1, timeout=10.0)
    bridge.uninstall()
    assert bridge.open_spans == 0
    (unfinished,) = exporter.get_finished_spans()
    assert unfinished.attributes is not None
    assert unfinished.attributes["genagent.unfinished"] is True
    g.interrupt("a", ref)
    g.ask("a", "after")
    assert len(exporter.get_finished_spans()) == 1


def test_tool_calls_become_child_spans(agent_system: AgentSystem) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    bridge = otel.install(tracer_provider=tracer_provider, system=agent_system)
    tools = [
        {"name": "Read", "input": {"path": "a.py"}, "output": "print(1)"},
        {"name": "Bash", "input": {"command": "false"}, "output": "exit 1", "error": True},
    ]
    try:
        g.start_agent(
            Scripted, name="a", backend="scripted", script=[{"tools": tools, "text": "checked"}]
        )
        response = g.ask("a", "check a.py")
        wait_until(lambda: len(exporter.get_finished_spans()) == 3, timeout=10.0)
    finally:
        bridge.uninstall()

    assert response.text == "checked"
    spans = {span.name: span for span in exporter.get_finished_spans()}
    turn, read, bash = (
        spans["invoke_agent a"],
        spans["execute_tool Read"],
        spans["execute_tool Bash"],
    )
    for tool, call_id in ((read, "toolu_01"), (bash, "toolu_02")):
        assert tool.kind is SpanKind.INTERNAL
        assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
        assert tool.attributes is not None
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.call.id"] == call_id
        assert None not in (turn.start_time, tool.start_time, tool.end_time, turn.end_time)
        assert turn.start_time <= tool.start_time <= tool.end_time <= turn.end_time  # type: ignore[operator]
    assert read.attributes is not None and bash.attributes is not None
    assert read.attributes["gen_ai.tool.name"] == "Read"
    assert read.status.status_code is StatusCode.UNSET
    assert bash.attributes["error.type"] == "tool_error"
    assert bash.status.status_code is StatusCode.ERROR


def test_backends_map_to_the_conventions_provider_names() -> None:
    assert [otel.provider_name(b) for b in ("claude", "anthropic", "codex", "openai")] == [
        "anthropic",
        "anthropic",
        "openai",
        "openai",
    ]
    assert otel.provider_name("scripted") == "scripted"
