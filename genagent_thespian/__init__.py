"""genagent-thespian: OTP-style supervision for long-running LLM agents on Thespian.

This module only re-exports the public API; the implementation lives in private modules.
"""

from ._backend import Backend, TurnContext
from ._errors import (
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
    GenAgentError,
    InvalidEvent,
    InvalidOption,
    InvalidPrompt,
    RequestNotFound,
    SystemNotRunning,
    TurnCancelled,
    TurnCrashed,
    TurnFailed,
    TurnHalted,
    TurnInterrupted,
    TurnSkipped,
    TurnTimeout,
)
from ._types import Event, EventKind, Response, Usage
from .messages import Halt, Prompt, Skip

__all__ = [
    "AgentAlreadyExists",
    "AgentNotFound",
    "AgentOverloaded",
    "AgentRestarted",
    "AgentStartFailed",
    "AgentStopped",
    "AskTimeout",
    "Backend",
    "BackendError",
    "BackendErrorKind",
    "CallbackError",
    "Event",
    "EventKind",
    "GenAgentError",
    "Halt",
    "InvalidEvent",
    "InvalidOption",
    "InvalidPrompt",
    "Prompt",
    "RequestNotFound",
    "Response",
    "Skip",
    "SystemNotRunning",
    "TurnCancelled",
    "TurnContext",
    "TurnCrashed",
    "TurnFailed",
    "TurnHalted",
    "TurnInterrupted",
    "TurnSkipped",
    "TurnTimeout",
    "Usage",
]
