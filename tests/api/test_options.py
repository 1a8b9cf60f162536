"""Options are checked: typos are refused with a hint, restart options are validated, and a
stopped agent's name answers ``AgentStopped`` until it is reused."""

from __future__ import annotations

from typing import Any

import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian._core.restart_policy import RestartPolicy


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({"watchdg": 5}, "did you mean 'watchdog'"),
        ({"window": 0}, "did you mean 'restart_window'"),
        ({"max_restart": 2}, "did you mean 'max_restarts'"),
    ],
)
def test_misspelled_framework_options_are_refused_with_a_hint(
    any_agent_system: g.AgentSystem, options: dict[str, Any], hint: str
) -> None:
    with pytest.raises(g.InvalidOption, match=hint):
        g.start_agent(Recorder, name="typo", backend="scripted", **options)
    assert "typo" not in g.list_agents()


@pytest.mark.parametrize(
    "options",
    [{"restart_window": 0}, {"backoff_factor": 0.5}, {"jitter": 2}, {"backoff_initial": -1}],
)
def test_invalid_restart_options_are_refused(
    any_agent_system: g.AgentSystem, options: dict[str, Any]
) -> None:
    with pytest.raises(g.InvalidOption):
        g.start_agent(Recorder, name="bad", backend="scripted", **options)


def test_restart_back_off_options_reach_the_supervisor_policy(
    any_agent_system: g.AgentSystem,
) -> None:
    from genagent_thespian._core.validate import build_spec

    spec = build_spec(
        Recorder,
        name="tuned",
        backend="scripted",
        backoff_initial=0.5,
        backoff_factor=3.0,
        backoff_max=9.0,
        jitter=0.25,
    )
    policy = RestartPolicy.for_spec(spec)
    assert (policy.backoff_initial, policy.backoff_factor) == (0.5, 3.0)
    assert (policy.backoff_max, policy.jitter) == (9.0, 0.25)


def test_options_for_init_agent_still_pass_when_not_close_to_framework_ones(
    any_agent_system: g.AgentSystem,
) -> None:
    g.start_agent(Recorder, name="free", backend="scripted", default="ok", responses=[])
    assert g.ask("free", "hi").text == "ok"


def test_ask_on_a_stopped_agent_says_agent_stopped_until_the_name_is_reused(
    any_agent_system: g.AgentSystem,
) -> None:
    g.start_agent(Recorder, name="gone", backend="scripted", default="ok")
    g.stop("gone")
    with pytest.raises(g.AgentStopped):
        g.ask("gone", "hello?")
    with pytest.raises(g.AgentNotFound):
        g.ask("never-started", "hello?")
    g.start_agent(Recorder, name="gone", backend="scripted", default="again")
    assert g.ask("gone", "hello?").text == "again"
