"""The public surface is exactly the intended set, and nothing private leaks through it."""

from __future__ import annotations

import genagent_thespian as g
from genagent_thespian import messages, testing

PUBLIC = {
    # lifecycle and client API
    "start_system", "attach_system", "shutdown_system", "current_system", "AgentSystem",
    "start_agent", "stop", "ask", "tell", "poll", "notify", "interrupt", "cancel", "halt",
    "resume", "status", "whereis", "list_agents", "backend_session", "stream", "watch",
    "sessions", "GovernorStatus",
    # plain Thespian clients
    "use_node_secret", "client_capabilities",
    # multi-host nodes
    "start_node", "list_nodes", "list_fleet", "wait_for_nodes", "NodeInfo", "TransportLimits",
    # behaviour and directives
    "GenAgent", "Prompt", "Halt", "Skip",
    # data
    "Event", "EventKind", "Response", "Usage", "PollResult", "PollState", "AgentStatus",
    "TellCompleted", "DeliveryFailed", "AgentDown", "TurnEvent",
    # backends
    "Backend", "TurnContext",
    # telemetry
    "attach", "detach",
    # errors
    "GenAgentError", "AgentNotFound", "AgentAlreadyExists", "InvalidOption", "InvalidPrompt",
    "InvalidEvent", "AgentStartFailed", "AgentOverloaded", "AskTimeout", "SystemNotRunning",
    "RequestNotFound", "TurnFailed", "TurnInterrupted", "TurnTimeout", "TurnCrashed",
    "TurnSkipped", "TurnHalted", "TurnCancelled", "CallbackError", "BackendError",
    "BackendErrorKind", "AgentStopped", "AgentRestarted", "MessageTooLarge",
    "DuplicateRequest", "UnexpectedMessage",
    "SessionUnavailable",
}  # fmt: skip


def test_the_package_exports_exactly_the_public_names() -> None:
    assert set(g.__all__) == PUBLIC
    assert all(hasattr(g, name) for name in g.__all__)


def test_no_private_name_is_exported() -> None:
    for module in (g, messages, testing):
        assert not [name for name in module.__all__ if name.startswith("_")]


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name for name in g.__all__ if callable(getattr(g, name)) and not getattr(g, name).__doc__
    ]
    assert undocumented == []
