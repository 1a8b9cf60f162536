"""The ``GenAgent`` behaviour: the class users subclass to give an agent its meaning.

The framework owns the mechanics of turns (mailbox, watchdog, interrupts, crashes,
restarts, telemetry); a ``GenAgent`` subclass owns what turns mean. Its state lives on the
instance. Callbacks return *directives* instead of new state:

* ``None``: nothing more to do (go idle and take the next queued work);
* ``Prompt(text)``: run ``text`` next, ahead of the mailbox (a self-chain);
* ``Halt()``: go idle and freeze the mailbox until ``resume``.

``pre_turn`` returns the prompt to send (a ``str``, possibly rewritten), ``Skip()`` or
``Halt()``.

Order of one turn::

    pre_turn -> backend turn (handle_stream_event per event)
             -> handle_response | handle_error -> post_turn
             -> [post_run, on a transition to halted]
             -> buffered notifications (handle_event / handle_info, in arrival order)
             -> reply to the caller -> next work (self-chain first, then the mailbox)

A callback that raises or returns a malformed value never kills the agent: the failure is
logged with the agent's name, counted, and returned to the waiting caller as a
:class:`~genagent_thespian.CallbackError`.

Inside callbacks, the agent can act on other agents without blocking, through methods of
this class (``notify``, ``tell``, ``send_after``, ``start_agent``, ``stop_agent``); their
outcomes come back as messages to :meth:`GenAgent.handle_info`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .types import AgentName, ClassSpec, Options, OptionValue, UserTerm

if TYPE_CHECKING:
    from ..messages import Halt, Prompt, Skip
    from .turn import Event, Response

__all__ = ["GenAgent"]


class AgentContext(Protocol):
    """What a running agent lends its implementation: the calls behind ``self.tell`` & co.

    The agent actor (``_actors/agent.py``) provides it. It is a protocol here so that the core
    does not import the actor shell, and an implementation can be driven without one.
    Names, events and messages are the user's own picklable terms (``_core/types.py``).
    """

    name: AgentName

    def notify(self, name: AgentName, event: object) -> None: ...
    def tell(self, name: AgentName, prompt: str) -> str: ...
    def send_after(self, seconds: float, message: object) -> str: ...
    def cancel_timer(self, timer_id: str) -> bool: ...
    def start_agent(
        self, impl: type[GenAgent], *, name: AgentName, backend: ClassSpec, **options: OptionValue
    ) -> None: ...
    def stop_agent(self, name: AgentName) -> None: ...
    def watch_agent(self, name: AgentName) -> None: ...
    def log_unexpected_info(self, message: object) -> None: ...


class GenAgent:
    """Base class of agent implementations. Override ``init_agent`` and ``handle_response``.

    Example:
        >>> class Echo(GenAgent):
        ...     def init_agent(self, options):
        ...         self.replies = []
        ...         return {}
        ...     def handle_response(self, ref, response):
        ...         self.replies.append(response.text)
    """

    # The framework sets this before init_agent; see _AgentContext in _actors/agent.py.
    _genagent_context: AgentContext | None = None

    # ------------------------------------------------------------------ callbacks

    def init_agent(self, options: Options) -> Options | None:
        """Set up the instance's state and return the backend's session options.

        Args:
            options: The keyword options given to ``start_agent`` other than the
                framework's own (name, backend, watchdog, limits, restart...).

        Returns:
            The options for ``backend.start_session`` (``None`` means none). Raising
            makes ``start_agent`` fail with ``AgentStartFailed``.
        """
        return {}

    def handle_response(self, ref: str, response: Response) -> Prompt | Halt | None:
        """Decide what follows a successful turn. Must be overridden."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle_response")

    def handle_error(self, ref: str, error: Exception) -> Prompt | Halt | None:
        """Decide what follows a failed turn. Return ``Prompt(text)`` to retry.

        For an ask or tell, a returned ``Prompt`` retries under the same ref: the caller keeps
        waiting and receives the final outcome. After an interrupt or a restart the caller
        has its error already and the prompt runs as an independent follow-up.
        """
        return None

    def handle_event(self, event: UserTerm) -> Prompt | Halt | None:
        """Handle an event delivered by ``notify``. Buffered while a turn runs."""
        return None

    def handle_info(self, message: object) -> Prompt | Halt | None:
        """Handle any other message: timers from ``send_after``, completions, agent exits.

        The default logs unexpected messages at warning level and ignores them.
        """
        context = self._genagent_context
        if context is not None:
            context.log_unexpected_info(message)
        return None

    def handle_stream_event(self, event: Event) -> None:
        """Observe each event of the running turn as it arrives (terminal one included)."""
        return None

    def terminate_agent(self, reason: str) -> None:
        """Clean up when the agent stops (``"stop"``, ``"shutdown"``, ``"pre_run_failed"``...)."""
        return None

    # ------------------------------------------------------------------ lifecycle hooks

    def pre_run(self) -> None:
        """Run once after ``init_agent``, before the first turn. Raising stops the agent."""
        return None

    def pre_turn(self, prompt: str) -> str | Skip | Halt:
        """Return the prompt to send (possibly rewritten), ``Skip()`` or ``Halt()``."""
        return prompt

    def post_turn(self, ref: str, outcome: Response | Exception) -> None:
        """Run after each turn's decision, before the transition. Cannot change it."""
        return None

    def post_run(self) -> None:
        """Run once per transition to halted (completion actions: open a PR, summarize)."""
        return None

    def agent_state(self) -> UserTerm:
        """Return what ``status(name).agent_state`` shows of this agent (default ``None``).

        Override it to publish a small, picklable view of the state to clients (dashboards,
        pattern facades). Nothing is shown by default, so no secret leaks through status.
        """
        return None

    # ------------------------------------------------------------------ durability

    def snapshot_state(self) -> dict[str, UserTerm]:
        """Return the instance's state to persist (durable agents), as picklable data.

        The default takes every public and private attribute the implementation set;
        override it to leave out live resources (open files, clients) or to shrink it.
        """
        return {k: v for k, v in vars(self).items() if not k.startswith("_genagent")}

    def restore_state(self, state: dict[str, UserTerm]) -> None:
        """Load what :meth:`snapshot_state` returned, after a restart.

        Called instead of ``init_agent`` and ``pre_run`` when a durable agent is restarted
        by its supervisor (or started again while its record is still in the store).
        """
        vars(self).update(state)

    # ------------------------------------------------------------------ acting from callbacks

    @property
    def name(self) -> AgentName:
        """The agent's registered name (inside callbacks)."""
        return self._context().name

    def notify(self, name: AgentName, event: object) -> None:
        """Deliver ``event`` to agent ``name``'s ``handle_event`` without waiting.

        A name that does not resolve comes back as ``DeliveryFailed`` to ``handle_info``.
        """
        self._context().notify(name, event)

    def tell(self, name: AgentName, prompt: str) -> str:
        """Queue ``prompt`` at agent ``name``; its outcome arrives as ``TellCompleted``.

        Returns:
            The request ref, which ``TellCompleted.ref`` carries.
        """
        return str(self._context().tell(name, prompt))

    def send_after(self, seconds: float, message: object) -> str:
        """Deliver ``message`` to this agent's ``handle_info`` after ``seconds``.

        Timers are tied to the agent's lifetime. Returns a timer id for ``cancel_timer``.
        """
        return str(self._context().send_after(seconds, message))

    def cancel_timer(self, timer_id: str) -> bool:
        """Cancel a ``send_after`` timer. Returns whether it was still pending."""
        return bool(self._context().cancel_timer(timer_id))

    def start_agent(
        self, impl: type[GenAgent], *, name: AgentName, backend: ClassSpec, **options: OptionValue
    ) -> None:
        """Start another agent; ``AgentStarted`` or a ``Failure`` follows in ``handle_info``."""
        self._context().start_agent(impl, name=name, backend=backend, **options)

    def stop_agent(self, name: AgentName) -> None:
        """Stop another agent; ``Stopped`` (or a ``Failure``) follows in ``handle_info``."""
        self._context().stop_agent(name)

    def watch_agent(self, name: AgentName) -> None:
        """Receive ``AgentDown`` in ``handle_info`` when agent ``name`` exits or is unknown."""
        self._context().watch_agent(name)

    def _context(self) -> AgentContext:
        """The running agent's context; outside a running agent's callbacks, a clear error.

        Without it, calling ``self.tell`` outside a running agent (in ``__init__``, or on an
        implementation a test built alone) would fail with an ``AttributeError`` on ``None``
        that says nothing about the cause.
        """
        context = self._genagent_context
        if context is None:
            raise RuntimeError(
                "agent operations are only available inside callbacks of a running agent"
            )
        return context
