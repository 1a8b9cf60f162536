"""The named types of the package's open values, each with the reason it is open.

The rule (checked by ``tests/test_typing.py``): a module of the package does not write ``Any``;
a value whose type the package cannot know is named here, with why. Most names are real types
(``Hashable``, ``object``, a recursive JSON type, Thespian's ``ActorAddress``). The ones that stay
``Any`` are boundaries, each said below: a term the user defines and a subclass narrows (an
override may not narrow ``object``: events, states, a backend's session), the user's options
read by key with the type each option documents, values read back from a pickle, JSON of
another program's protocol, Thespian's untyped internals, database rows, and the two tables
whose entries each take their own types (callbacks, message handlers).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeAlias

# Thespian ships no type information, so mypy sees its classes as ``Any``; naming the real
# class still says what the value is, and becomes checked if Thespian ever ships types.
from thespian.actors import ActorAddress

__all__ = [
    "ActorAddress",
    "AgentName",
    "Callback",
    "Capabilities",
    "ClassSpec",
    "DbRow",
    "Document",
    "EventData",
    "Fields",
    "JsonObject",
    "JsonValue",
    "MessageHandler",
    "Metadata",
    "OptionValue",
    "Options",
    "Pickled",
    "Polled",
    "Sender",
    "Session",
    "ThespianInternal",
    "Unchecked",
    "UserTerm",
    "WireJson",
    "WireMapping",
    "WireMessage",
    "WireValue",
]

#: An agent's name: any hashable, picklable term the user chooses (names key the registry's
#: dict; ``AgentSpec`` is built with ``name=None`` for its defaults).
AgentName: TypeAlias = Hashable

#: Who sent a message: Thespian's address, or ``None`` where a call is made without an actor
#: (the pure machine driven by a test, a message synthesised by the shell itself).
Sender: TypeAlias = "ActorAddress | None"

#: A term the user defines and a subclass of ours narrows: the event of ``handle_event``, the
#: message of ``handle_info``, an implementation's state. ``Any`` because an override that
#: annotates its own type (``def handle_event(self, event: Order)``) must stay a valid override,
#: which it is not against ``object``. The package itself only stores, pickles and passes it.
UserTerm: TypeAlias = Any

#: A backend's own picklable session (``ClaudeSession``, ``CodexSession``...): each backend
#: defines its class and annotates its methods with it, the agent only stores, pickles and
#: hands it back. ``Any`` for the same reason as :data:`UserTerm` (a backend narrows it).
Session: TypeAlias = Any

#: The options a user passes to ``start_agent`` (and on to ``init_agent`` and the backend): each
#: reader takes its key with the type the option documents and validates it where it is read.
Options: TypeAlias = "Mapping[str, OptionValue]"
#: One value of the user's options or settings, before the check of the option that reads it.
OptionValue: TypeAlias = Any

#: A class the user names for an agent (``impl``, a ``GenAgent`` subclass) or its backend (a
#: ``Backend`` subclass or a short name), as ``AgentSpec`` carries it: pickled by name and, in a
#: process that cannot import it, an ``UnimportableClass`` stand-in (``_core/classref.py``).
#: ``Any`` because it is checked where the spec is built (``build_spec``, ``resolve_backend``) and
#: naming the classes here would make ``messages`` import the behaviour that imports it.
ClassSpec: TypeAlias = Any

#: Thespian's capabilities of an actor system (and an actor's requirements): the settings the
#: user configures a node with (``capabilities=``, ``genagent node --label``), handed by Thespian
#: to every actor's ``__init__``; each reader takes its key with the type it documents.
Capabilities: TypeAlias = dict[str, OptionValue]

#: The fields a backend attaches to an ``Event`` (usage, cost, ids, the provider's own keys):
#: the backend's own vocabulary, read by key by code that knows which backend wrote it.
EventData: TypeAlias = Mapping[str, Any]

#: A value read back from a pickle the package wrote earlier, maybe by an older release (a
#: durable record's snapshot, pickled state): its shape is what the writer pickled, and the
#: reader checks the keys and versions it knows.
Pickled: TypeAlias = Any

#: Keyword fields gathered by name and then splatted into the constructor that types them: the
#: fields that rebuild an error (``GenAgentError._fields``, carried through pickle), a worker's
#: turn output built up item by item. The constructor's own signature is the check.
Fields: TypeAlias = dict[str, Any]

#: A message received from the wire as the answer to a question we sent: an exchange matches it
#: with its predicate (``Exchange.matches``) and the plan then reads it as the kind it matched
#: (a predicate cannot narrow a type for its caller), or it is handed to the caller as is.
WireMessage: TypeAlias = Any

#: A field of a message received from another process that is not checked yet: the checker
#: (``check_prompt``, ``check_request_ref``...) takes it as it came, and answers with a typed error.
Unchecked: TypeAlias = Any

#: One of the user's callbacks (``handle_response``, ``handle_event``...) run by the machine with
#: the arguments of that callback; what it returns is the user's, checked by the machine.
Callback: TypeAlias = Callable[..., UserTerm]

#: A handler in an actor's dispatch table, keyed by the exact type of the message it takes
#: (``_HANDLERS``): each handler takes the message type of its own key, which one value type for
#: the whole table cannot say (the table is the type switch).
MessageHandler: TypeAlias = Callable[..., None]

#: A row as the database driver returns it (sqlite3, psycopg): the columns' types are those of
#: the query that read it, which the reader unpacks.
DbRow: TypeAlias = tuple[Any, ...]

#: An object of Thespian's own TCP transport that ``_os/frames.py`` and ``_os/shutdown_guard.py``
#: patch (the transport, an incoming connection, its socket wrapper, the admin and its
#: envelopes): Thespian's private, untyped internals, read through the attributes they have in
#: the pinned release (4.0.1; ``_os/security.py`` checks them at start).
ThespianInternal: TypeAlias = Any

#: A JSON value, as ``json.dumps`` writes it.
JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
#: A JSON object the package builds.
JsonObject: TypeAlias = dict[str, JsonValue]

#: A JSON object of another program's protocol (a CLI's stream, a provider's request or response
#: body, an HTTP body, an MCP request), decoded from it or built to be sent to it:
#: its shape is the other program's, read by key where the reader knows what the key holds
#: and checks it where it matters. ``Any`` values because narrowing every read of a foreign
#: wire format would hide the protocol under casts.
WireJson: TypeAlias = dict[str, Any]
#: Any JSON value decoded with ``json.loads`` from another program, as :data:`WireJson`.
WireValue: TypeAlias = Any
#: A read-only view of a :data:`WireJson` object (a parsed line handed to a translator).
WireMapping: TypeAlias = Mapping[str, Any]

#: A JSON document the command line or the console builds from the runtime's dataclasses
#: (``dataclasses.asdict``, whose result typeshed types as ``dict[str, Any]``) and then reads
#: back by field name to render it (``top``'s rows, the console's transcripts).
Document: TypeAlias = dict[str, Any]

#: What a polled condition returns (``testing.wait_until``), whose first truthy value is handed
#: back. ``Any`` because a TypeVar would type ``lambda: done and result`` as ``bool | Result``
#: at every call site, though only the truthy side is ever returned.
Polled: TypeAlias = Any

#: Telemetry metadata and other key/value context (log fields, status fields): values are
#: only formatted, compared or passed on.
Metadata: TypeAlias = dict[str, object]
