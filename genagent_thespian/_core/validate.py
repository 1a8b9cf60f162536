"""Checks of what users pass in, each made in one place: agent start settings and prompts.

``start_agent`` validates in the caller's process so a bad argument fails where it was
written, with the argument named; an agent that starts another agent from a callback
(``GenAgent.start_agent``) runs the same checks in its own process. Both build the one
:class:`~genagent_thespian.messages.AgentSpec`, whose field defaults are the framework's
defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import pickle
from typing import cast

from ..messages import AgentSpec
from .backend import resolve_backend
from .behaviour import GenAgent
from .errors import InvalidOption, InvalidPrompt
from .restart_policy import RestartPolicy, RestartType
from .types import AgentName, ClassSpec, Options, OptionValue

__all__ = [
    "DEFAULT_HIBERNATE_AFTER",
    "DEFAULT_WATCHDOG",
    "RESTART_TYPES",
    "SPEC_DEFAULTS",
    "build_spec",
    "check_prompt",
    "check_request_ref",
]

#: The framework's default for every agent setting: ``AgentSpec``'s field defaults, the one
#: place they are written, read through one instance so signatures (``start_agent``, the
#: ``genagent`` command) and the machine's limits can name them with their types.
SPEC_DEFAULTS = AgentSpec(name=None, impl=None, backend=None)

#: ``AgentSpec.watchdog``'s default as a number, for the waits the watchdog bounds when an
#: agent has none of its own (a turn waiting for a live session).
DEFAULT_WATCHDOG = cast(float, SPEC_DEFAULTS.watchdog)

#: The restart types an agent may have, as ``AgentSpec.restart`` spells them.
RESTART_TYPES = tuple(kind.value for kind in RestartType)
#: Idle seconds before a durable agent hibernates when ``hibernate_after`` is not given:
#: long enough that an agent in a conversation never sleeps between two turns, short
#: enough that a fleet of mostly idle agents holds few processes (docs/supervision.md).
DEFAULT_HIBERNATE_AFTER = 300.0
#: What an agent does when its provider session cannot be resumed (``on_session_lost``).
SESSION_LOST_POLICIES = ("fail", "fresh")
#: Where an agent's turns run (``AgentSpec.turn_worker``): a worker process, a thread of the
#: agent's process (``_actors/turn_thread.py``), or what the backend suits (``auto``).
TURN_WORKERS = ("auto", "process", "thread")


def build_spec(
    impl: ClassSpec,
    *,
    name: AgentName,
    backend: ClassSpec,
    options: Options | None = None,
    require_importable: bool = True,
    **settings: OptionValue,
) -> AgentSpec:
    """Validate ``start_agent``'s arguments and return the ``AgentSpec``.

    ``settings`` are the framework's own options (``watchdog``, ``max_queued``, ``restart``...);
    those not given take ``AgentSpec``'s defaults, the one place they are defined.

    Why each check is made here rather than where the value is used:

    * a class defined in ``__main__`` cannot be loaded by an actor process (Thespian
      imports actor code by module name), and the failure there would be a bare
      ``InvalidActorSpecification`` in another process;
    * the name must hash (it keys the registry and the supervisor's tables) and pickle (it
      travels in every message and, for a durable agent, into the store's key);
    * the backend is resolved now, so a missing extra fails with its install hint here;
    * the restart policy is built once and thrown away: it checks its own window and
      back-off, and a bad one would otherwise fail only at the first crash, when the
      supervisor needs it.

    Raises:
        InvalidOption: with the offending argument named in the message.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(AgentSpec)}
    unknown_settings = set(settings) - set(defaults) - {"placement"}
    if unknown_settings:
        raise InvalidOption(f"unknown setting(s) {sorted(unknown_settings)}", agent=name)
    merged = {**defaults, **{k: v for k, v in settings.items() if k != "placement"}}
    watchdog = merged["watchdog"]
    max_tell_results, max_queued = merged["max_tell_results"], merged["max_queued"]
    max_queued_bytes, max_restarts = merged["max_queued_bytes"], merged["max_restarts"]
    worker_idle_timeout, restart = merged["worker_idle_timeout"], merged["restart"]
    restart_window, durable = merged["restart_window"], merged["durable"]
    on_session_lost, prewarm = merged["on_session_lost"], merged["prewarm"]
    turn_worker = merged["turn_worker"]
    secret_resolver = merged["secret_resolver"]
    hibernate_after = _hibernate_seconds(merged["hibernate_after"], bool(durable), name)
    placement = settings.get("placement")
    if not (isinstance(impl, type) and issubclass(impl, GenAgent)):
        raise InvalidOption(f"impl must be a GenAgent subclass, got {impl!r:.80}", agent=name)
    if require_importable and impl.__module__ == "__main__":
        raise InvalidOption(
            f"{impl.__qualname__} is defined in __main__; agent classes must live in an "
            "importable module so actor processes can load them",
            agent=name,
        )
    _check_picklable(impl, "impl", name)
    try:
        hash(name)
    except TypeError:
        raise InvalidOption(f"name must be hashable, got {type(name).__name__}") from None
    if name is None:
        raise InvalidOption("name is required")
    _check_picklable(name, "name", name)
    resolve_backend(backend)
    if watchdog is not None:
        _check_positive("watchdog", watchdog, name)
    for field_name, value in (
        ("max_tell_results", max_tell_results),
        ("max_queued", max_queued),
        ("max_queued_bytes", max_queued_bytes),
        ("max_restarts", max_restarts),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidOption(f"{field_name} must be an int >= 0, got {value!r}", agent=name)
    if (
        isinstance(worker_idle_timeout, bool)
        or not isinstance(worker_idle_timeout, int | float)
        or worker_idle_timeout < 0
    ):
        raise InvalidOption(
            f"worker_idle_timeout must be >= 0 seconds, got {worker_idle_timeout!r}", agent=name
        )
    _check_positive("restart_window", restart_window, name)
    if restart not in RESTART_TYPES:
        raise InvalidOption(f"restart must be one of {RESTART_TYPES}, got {restart!r}", agent=name)
    if on_session_lost not in SESSION_LOST_POLICIES:
        raise InvalidOption(
            f"on_session_lost must be one of {SESSION_LOST_POLICIES}, got {on_session_lost!r}",
            agent=name,
        )
    if turn_worker not in TURN_WORKERS:
        raise InvalidOption(
            f"turn_worker must be one of {TURN_WORKERS}, got {turn_worker!r:.80}", agent=name
        )
    if not isinstance(prewarm, bool):
        raise InvalidOption(f"prewarm must be True or False, got {prewarm!r:.80}", agent=name)
    if secret_resolver is not None:
        if not callable(secret_resolver):
            raise InvalidOption(
                f"secret_resolver must be a function, got {secret_resolver!r:.80}", agent=name
            )
        if require_importable and getattr(secret_resolver, "__module__", None) == "__main__":
            raise InvalidOption(
                "secret_resolver is defined in __main__; it must live in an importable module",
                agent=name,
            )
        _check_picklable(secret_resolver, "secret_resolver", name)
    options = dict(options or {})
    _check_options(impl, options, name)
    _check_picklable(options, "options", name)
    placement_items = tuple(sorted((placement or {}).items()))
    backoff = {k: merged[k] for k in ("backoff_initial", "backoff_factor", "backoff_max", "jitter")}
    try:  # the policy checks its own options (window, back-off, jitter) as documented
        RestartPolicy(restart=restart, max_restarts=max_restarts, window=restart_window, **backoff)
    except InvalidOption as exc:
        raise InvalidOption(str(exc), agent=name) from None
    spec = AgentSpec(
        name=name,
        impl=impl,
        backend=backend,
        options=tuple(options.items()),
        watchdog=float(watchdog) if watchdog is not None else None,
        max_tell_results=max_tell_results,
        max_queued=max_queued,
        max_queued_bytes=max_queued_bytes,
        worker_idle_timeout=float(worker_idle_timeout),
        restart=restart,
        max_restarts=max_restarts,
        restart_window=float(restart_window),
        durable=bool(durable),
        placement=placement_items,
        on_session_lost=on_session_lost,
        secret_resolver=secret_resolver,
        hibernate_after=hibernate_after,
        prewarm=prewarm,
        turn_worker=turn_worker,
    )
    return dataclasses.replace(spec, **backoff)


def _hibernate_seconds(value: OptionValue, durable: bool, name: AgentName) -> float:
    """Resolve ``hibernate_after``: ``None`` takes the default for the agent's durability.

    Only a durable agent can hibernate: its record is what it wakes from, so asking a plain
    agent to hibernate is refused rather than ignored.
    """
    if value is None:
        return DEFAULT_HIBERNATE_AFTER if durable else 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidOption(
            f"hibernate_after must be >= 0 seconds (0: never), got {value!r}", agent=name
        )
    if value > 0 and not durable:
        raise InvalidOption(
            "hibernate_after needs durable=True: a hibernated agent wakes from its record",
            agent=name,
        )
    return float(value)


#: ``start_agent``'s own keyword arguments, for "did you mean" hints on misspelled options.
_FRAMEWORK_OPTIONS = (
    *(f.name for f in dataclasses.fields(AgentSpec) if f.name not in ("options", "impl")),
    "timeout",
    "system",
)
#: How alike (difflib ratio) an option must be to a known one to be taken for its typo:
#: ``watchdg`` is (0.93), ``backend_options`` or ``system_prompt`` are not.
_TYPO_SIMILARITY = 0.85
#: Names the documentation uses for an option that ``start_agent`` spells otherwise.
_DOCUMENTED_ALIASES = {"window": ["restart_window"]}


def _check_options(impl: type, options: Options, name: AgentName) -> None:
    """Refuse options nobody will read: undeclared ones, or misspelled framework options."""
    accepted = getattr(impl, "accepted_options", None)
    for option in sorted(options):
        if accepted is not None and option in accepted:
            continue
        close = _DOCUMENTED_ALIASES.get(option) or difflib.get_close_matches(
            option, [*_FRAMEWORK_OPTIONS, *(accepted or ())], n=1, cutoff=_TYPO_SIMILARITY
        )
        if accepted is None and not close:
            continue  # an option for init_agent, which the class does not declare
        hint = f"; did you mean {close[0]!r}?" if close else ""
        declared = (
            f"{impl.__qualname__} accepts {sorted(accepted)}"
            if accepted is not None
            else f"set {impl.__qualname__}.accepted_options to pass it to init_agent"
        )
        raise InvalidOption(f"unknown option {option!r}{hint} ({declared})", agent=name)


def check_prompt(text: object, *, agent: AgentName, ref: str | None = None) -> str:
    """Return ``text`` if it is a valid prompt (a non-empty ``str``), else raise.

    Checked by the client before sending, by the ``genagent`` command, and by the agent for
    prompts sent with raw Thespian (which no client checked).

    Raises:
        InvalidPrompt: naming what was given instead.
    """
    if isinstance(text, str) and text:
        return text
    got = "an empty str" if isinstance(text, str) else type(text).__name__
    raise InvalidPrompt(f"a prompt must be a non-empty str, got {got}", agent=agent, ref=ref)


def check_request_ref(ref: object, *, agent: AgentName) -> str:
    """Return ``ref`` if it can name a request (a non-empty ``str``), else raise.

    A ref names one request: a missing or shared one would make every later request a
    duplicate of the first. ``Prompt`` and ``Tell`` make a fresh one when it is left out;
    only raw Thespian code can send a bad one.

    Raises:
        InvalidPrompt: naming what was given instead.
    """
    if isinstance(ref, str) and ref:
        return ref
    raise InvalidPrompt(
        f"a request ref must be a non-empty str (leave it out), got {ref!r:.40}", agent=agent
    )


def _check_positive(field_name: str, value: object, name: AgentName) -> None:
    """Refuse a duration that is not a finite number of seconds above zero (``bool`` included)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidOption(
            f"{field_name} must be a positive number of seconds, got {value!r}", agent=name
        )


def _check_picklable(value: object, field_name: str, name: AgentName) -> None:
    """Refuse a value that does not pickle now, at the caller, with the field's name.

    Actor messages are pickled on the multiprocess bases; without this check the failure would
    surface later, in another process, without saying which field was at fault.
    """
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise InvalidOption(
            f"{field_name} cannot be pickled ({type(exc).__name__}); actor messages must pickle",
            agent=name if field_name != "name" else None,
        ) from None
