"""Event, Usage and Response: the data of a turn."""

from __future__ import annotations

import time

from genagent_thespian import Event, EventKind, Response, Usage


def test_event_defaults_and_timestamp() -> None:
    before = time.monotonic()
    event = Event("text")
    assert event.data == {} and before <= event.timestamp <= time.monotonic()


def test_only_result_and_error_are_terminal() -> None:
    assert Event(EventKind.RESULT).terminal and Event(EventKind.ERROR).terminal
    for kind in (
        "text",
        "text_delta",
        "tool_use",
        "tool_result",
        "usage",
        "session_started",
        "custom",
    ):
        assert not Event(kind).terminal


def test_response_text_comes_from_the_result_when_it_is_a_str() -> None:
    events = [Event(EventKind.TEXT, {"text": "draft"}), Event.result("final")]
    assert Response.from_events(events).text == "final"


def test_response_text_falls_back_to_text_events_then_deltas_without_separator() -> None:
    whole = [
        Event(EventKind.TEXT, {"text": "a"}),
        Event(EventKind.TEXT, {"text": "b"}),
        Event.result(None),
    ]
    assert Response.from_events(whole).text == "ab"
    deltas = [Event.text_delta("he"), Event.text_delta("llo"), Event.result(None)]
    assert Response.from_events(deltas).text == "hello"


def test_response_usage_is_the_last_usage_event_or_none() -> None:
    first, last = Usage(1, 1), Usage(5, 7, model="m")
    events = [Event("usage", {"usage": first}), Event("usage", {"usage": last}), Event.result("x")]
    response = Response.from_events(events)
    assert response.usage == last and response.model == "m"
    assert Response.from_events([Event.result("x")]).usage is None


def test_response_carries_session_prompt_ref_and_duration() -> None:
    result = Event.result("x", session_id="s-1", stop_reason="end_turn")
    response = Response.from_events([result], duration_ms=12.5, prompt="p", ref="r")
    assert (response.session_id, response.prompt, response.ref, response.duration_ms) == (
        "s-1",
        "p",
        "r",
        12.5,
    )
    assert response.stop_reason == "end_turn" and response.events == (result,)
    assert Response.from_events([Event.result("x")]).session_id is None


def test_usage_adds_field_by_field_and_keeps_unknown_cost_unknown() -> None:
    total = Usage(1, 2, 3, 4, 5) + Usage(10, 20, 30, 40, 50)
    assert (total.input_tokens, total.output_tokens, total.cache_read_input_tokens) == (11, 22, 33)
    assert (total.cache_creation_input_tokens, total.reasoning_output_tokens) == (44, 55)
    assert total.cost_usd is None
    assert (Usage(cost_usd=0.5) + Usage()).cost_usd == 0.5
    assert Usage(1, 2, 3, 4).total_input_tokens == 8 and Usage(1, 2, 3, 4).total_tokens == 10
