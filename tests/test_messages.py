"""Every protocol message and every error pickles round-trip (the multiprocess bases pickle all)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest

import genagent_thespian as g
from genagent_thespian import messages
from genagent_thespian._core import errors as _errors
from genagent_thespian._core import protocol as _protocol
from genagent_thespian._core.turn import Event, Response, Usage


def _sample(cls: type[Any]) -> Any:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        ):
            continue
        values[field.name] = _value_for(field.name)
    return cls(**values)


def _value_for(name: str) -> object:
    samples = {
        "spec": messages.AgentSpec(name="n", impl=g.GenAgent, backend="scripted"),
        "error": g.BackendError("x", kind="overloaded", agent="n", ref="r"),
        "event": Event.text_delta("hi"),
        "state": messages.PollState.PENDING,
        "events": (),
        "names": frozenset({"prompt.stop"}),
    }
    return samples.get(name, f"value-of-{name}")


MESSAGE_CLASSES = [
    cls
    for module in (messages, _protocol)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__
]


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_every_message_pickles_round_trip(cls: type[Any]) -> None:
    message = _sample(cls)
    assert pickle.loads(pickle.dumps(message)) == message


def test_message_class_names_are_unique_across_the_package() -> None:
    names = [cls.__name__ for cls in MESSAGE_CLASSES]
    assert len(names) == len(set(names))


ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(_errors, inspect.isclass)
    if issubclass(cls, _errors.GenAgentError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_context(cls: type[g.GenAgentError]) -> None:
    error = cls("what happened", agent=("team", 1), ref="abc")
    copy = pickle.loads(pickle.dumps(error))
    assert copy == error and type(copy) is cls
    assert (copy.agent, copy.ref, copy.message) == (("team", 1), "abc", "what happened")
    assert "agent=('team', 1)" in str(copy) and "ref=abc" in str(copy)


def test_errors_subclass_the_matching_builtins() -> None:
    assert issubclass(g.AgentNotFound, LookupError)
    assert issubclass(g.TurnTimeout, TimeoutError) and issubclass(g.AskTimeout, TimeoutError)
    assert issubclass(g.InvalidOption, ValueError) and issubclass(g.InvalidPrompt, TypeError)
    assert all(issubclass(cls, g.GenAgentError) for cls in ERROR_CLASSES)


def test_backend_error_keeps_its_fields_through_pickle() -> None:
    error = g.BackendError("slow down", kind="rate_limited", retry_after=3.0, status_code=429)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.retryable, copy.retry_after, copy.status_code) == (
        "rate_limited",
        True,
        3.0,
        429,
    )
    assert not g.BackendError("no", kind="authentication").retryable


def test_turn_data_pickles() -> None:
    usage = Usage(input_tokens=3, output_tokens=4, cost_usd=0.01)
    response = Response.from_events(
        [Event.text_delta("a"), Event("usage", {"usage": usage}), Event.result("a")]
    )
    assert pickle.loads(pickle.dumps(response)) == response
