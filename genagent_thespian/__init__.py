"""genagent-thespian: OTP-style supervision for long-running LLM agents on Thespian.

This module only re-exports the public API; the implementation lives in private folders,
one per role (the full tree, and the path of one prompt through it, are in
``docs/architecture.md``)::

    _core/      pure logic: agent state machine, restart policy, deadlines, turn data,
                errors, the GenAgent behaviour, the Backend seam, internal protocol
    _actors/    thin Thespian shells: agent, turn worker, supervisor, registry, telemetry
    _durable/   the agent store (SQLite, memory) and one agent's durable record
    _os/        processes (find, end), /proc facts, transport security
    _nodes/     the local node the CLI attaches to; multi-host conventions
    _api/       AgentSystem and the client functions (ask, tell, start_agent...)
    cli/        the ``genagent`` command, ``top`` and the web console
    testing/    the shipped test kit: scripted backend, fake LLM server, chaos, conformance
    messages    the public actor protocol;  otel: the OpenTelemetry bridge

A prompt: ``ask`` (``_api/client``) -> ``Prompt`` to ``AgentActor`` (``_actors/agent``) ->
``AgentMachine.ask`` (``_core/machine``) -> ``TurnWorker`` (``_actors/worker``) runs the
``Backend`` -> events back to the machine -> ``GenAgent.handle_response`` -> ``Response``
to the caller.

Where to change what:

* what an agent does with a prompt, a result, a failure, a notification: the machine
  (``_core/machine``), then the shell that carries out its effects (``_actors/agent``);
* how a turn reaches a provider: a backend (``backends/``) behind ``_core/backend``, run
  by ``_actors/worker``;
* what happens when an agent dies: ``_core/restart_policy`` decides,
  ``_actors/supervisor`` carries it out;
* what survives a restart: ``_durable/record`` (what and when), ``_durable/store`` (how);
* how a caller waits, resends, follows a restart: ``_api/calls`` (once, for both APIs);
* the wire: the public messages in ``messages``, the internal ones in ``_core/protocol``.

Each role folder's own docstring lists its modules.
"""

# The one copy of the version: setup.cfg reads it (``attr:``), ``genagent --version`` prints it.
__version__ = "0.1.0.dev0"

from ._api.client import (
    ask,
    attach_system,
    backend_session,
    cancel,
    current_system,
    halt,
    interrupt,
    list_agents,
    notify,
    poll,
    resume,
    sessions,
    shutdown_system,
    start_agent,
    start_system,
    status,
    stop,
    stream,
    tell,
    watch,
    whereis,
)
from ._api.raw import client_capabilities, use_node_secret
from ._api.system import AgentSystem
from ._api.telemetry import attach, detach
from ._core.backend import Backend, TurnContext
from ._core.behaviour import GenAgent
from ._core.errors import (
    AgentAlreadyExists,
    AgentNotFound,
    AgentOverloaded,
    AgentRestarted,
    AgentStartFailed,
    AgentStopped,
    AskTimeout,
    BackendError,
    BackendErrorKind,
    CallbackError,
    DuplicateRequest,
    GenAgentError,
    InvalidEvent,
    InvalidOption,
    InvalidPrompt,
    MessageTooLarge,
    RequestNotFound,
    SessionUnavailable,
    SystemNotRunning,
    TurnCancelled,
    TurnCrashed,
    TurnFailed,
    TurnHalted,
    TurnInterrupted,
    TurnSkipped,
    TurnTimeout,
    UnexpectedMessage,
)
from ._core.governor import GovernorStatus
from ._core.turn import Event, EventKind, Response, Usage
from ._nodes.convention import NodeInfo, list_fleet, list_nodes, start_node, wait_for_nodes
from ._os.frames import TransportLimits
from .messages import (
    AgentDown,
    AgentStatus,
    DeliveryFailed,
    Halt,
    PollResult,
    PollState,
    Prompt,
    Skip,
    TellCompleted,
    TurnEvent,
)

__all__ = [
    "AgentAlreadyExists",
    "AgentDown",
    "AgentNotFound",
    "AgentOverloaded",
    "AgentRestarted",
    "AgentStartFailed",
    "AgentStatus",
    "AgentStopped",
    "AgentSystem",
    "AskTimeout",
    "Backend",
    "BackendError",
    "BackendErrorKind",
    "CallbackError",
    "DeliveryFailed",
    "DuplicateRequest",
    "Event",
    "EventKind",
    "GenAgent",
    "GenAgentError",
    "GovernorStatus",
    "Halt",
    "InvalidEvent",
    "InvalidOption",
    "InvalidPrompt",
    "MessageTooLarge",
    "NodeInfo",
    "PollResult",
    "PollState",
    "Prompt",
    "RequestNotFound",
    "Response",
    "SessionUnavailable",
    "Skip",
    "SystemNotRunning",
    "TellCompleted",
    "TransportLimits",
    "TurnCancelled",
    "TurnContext",
    "TurnCrashed",
    "TurnEvent",
    "TurnFailed",
    "TurnHalted",
    "TurnInterrupted",
    "TurnSkipped",
    "TurnTimeout",
    "UnexpectedMessage",
    "Usage",
    "ask",
    "attach",
    "attach_system",
    "backend_session",
    "cancel",
    "client_capabilities",
    "current_system",
    "detach",
    "halt",
    "interrupt",
    "list_agents",
    "list_fleet",
    "list_nodes",
    "notify",
    "poll",
    "resume",
    "sessions",
    "shutdown_system",
    "start_agent",
    "start_node",
    "start_system",
    "status",
    "stop",
    "stream",
    "tell",
    "use_node_secret",
    "wait_for_nodes",
    "watch",
    "whereis",
]
