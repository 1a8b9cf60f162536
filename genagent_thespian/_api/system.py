"""``AgentSystem``: one Thespian actor system with the framework's services booted in it.

Starting a system ("application boot") creates, once per actor system, the
:class:`~genagent_thespian._actors.registry.Registry`, the
:class:`~genagent_thespian._actors.supervisor.AgentSupervisor` and the
:class:`~genagent_thespian._actors.telemetry.TelemetryHub` as named actors; attaching to a running
system finds the same three. The default base is ``multiprocTCPBase`` on loopback with a
free admin port; ``simpleSystemBase`` runs everything in the calling process for fast
tests of the logic.

Client calls are safe from several threads: each thread talks through its own Thespian
``private()`` endpoint (``simpleSystemBase`` serializes calls with a lock instead, since its
actors only run inside the caller's ``ask``). Replies are matched by request ref, so a late
reply to an abandoned call can never be mistaken for the answer to the next one.

A started system belongs to the process that started it and never outlives it
(``ownership.py``: at exit, on SIGTERM/SIGHUP, and through the supervisor's owner check
when the process is SIGKILLed); use it as a context manager to end it where you choose.

``shutdown()`` stops every agent in order (each caller gets an answer), shuts Thespian
down, and then makes sure nothing is left: every process of the system shares the admin's
process group, and every process it started carries the system's id in its environment
(``GENAGENT_SYSTEM_ID``), so stragglers and orphaned CLI process groups are found and
killed.

What one boot creates, and who talks to whom afterwards::

    user's process                       actor system (one process each, multiproc)
      AgentSystem.start ----Boot-------> AgentSupervisor --createActor--> AgentActor ...
        |                  <--Booted--   (Registry, TelemetryHub, governor, reaper)
        | per thread: private() endpoint
        |   WhereIs -> Registry -> Located (address cached per name)
        |   Prompt / Status / ... -> AgentActor -> Response / Failure
        |   StartAgent / StopAgent -> AgentSupervisor
      shutdown: StopAll -> Stopped(None), asys.shutdown(), sweep the group and marker

Failure modes a caller meets here: the system is gone (``SystemNotRunning``), the call
found no answer in time (``AskTimeout``), the system shut down under a waiting call
(``AgentStopped``); a ``PoisonMessage`` of what was sent becomes the typed error of the
call, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from thespian.actors import ActorSystem, ActorSystemFailure, PoisonMessage

from .._actors.directory import (
    DIRECTORY_NAME,
    NoServices,
    ServiceDirectory,
    Services,
    SetServices,
    WhereAreServices,
)
from .._actors.registry import REGISTRY_NAME, Registry
from .._actors.supervisor import SUPERVISOR_NAME, AgentSupervisor, Boot, Booted, StopAll
from .._actors.telemetry import TELEMETRY_NAME, TelemetryBridge, TelemetryHub, wanted_names
from .._core.errors import AgentStopped, GenAgentError, SystemNotRunning
from .._core.log import get_logger
from .._core.types import ActorAddress, AgentName, Capabilities, Sender, WireMessage
from .._durable.location import is_postgres_url, open_store
from .._durable.store import end_recorded_processes
from .._os.frames import TransportLimits
from .._os.ports import claim_port, free_port
from .._os.private import private_folder
from .._os.processes import SYSTEM_MARKER, kill_marked, kill_process_group, owner_identity
from .._os.security import check_capabilities, harden_transport
from ..messages import Stopped
from . import ownership
from .home import DEFAULT_NODE, HomeLock, node_home, store_in

__all__ = ["SUPPORTED_BASES", "AgentSystem", "Subscriptions", "free_port", "is_answer"]

SUPPORTED_BASES = ("multiprocTCPBase", "simpleSystemBase")

_log = get_logger("genagent_thespian.system")

#: Seconds between liveness checks while a caller waits for a reply.
_LIVENESS_INTERVAL = 2.0
#: Seconds ``shutdown`` lets calls under way take the answers the stopping agents sent them.
_DRAIN_SECONDS = 10.0
#: Seconds a node's service directory has to answer.
_DIRECTORY_TIMEOUT = 10.0
#: Messages kept for other waiting calls on the same thread before the oldest is dropped.
_STASH_LIMIT = 256


class Subscriptions:
    """How many streams and watches of one endpoint follow each agent.

    An agent keeps one ``Watch`` subscription per endpoint address, however many of the
    endpoint's streams asked for it; the endpoint may only unsubscribe when its last one
    ends, or it would cut the others off.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[AgentName, int] = {}

    def add(self, name: AgentName) -> None:
        """Count one more follower of agent ``name``."""
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def remove(self, name: AgentName) -> bool:
        """Count one follower less; return whether it was the last (then unsubscribe)."""
        with self._lock:
            left = self._counts.get(name, 0) - 1
            if left > 0:
                self._counts[name] = left
                return False
            self._counts.pop(name, None)
            return True


class _Endpoint:
    """One thread's conversation with the actor system.

    ``stash`` keeps, bounded, the messages this thread received while waiting for another
    answer (a late reply, an event of a stream it is not reading now), so the call they
    belong to still finds them; ``subscriptions`` counts the thread's streams per agent.
    """

    def __init__(self, context: ActorSystem, closer: Callable[[], None]) -> None:
        self.context = context
        self.close = closer
        self.stash: deque[object] = deque(maxlen=_STASH_LIMIT)
        self.subscriptions = Subscriptions()


class AgentSystem:
    """A running actor system with the framework booted in it.

    Make one with :meth:`start` or :meth:`attach`.
    """

    def __init__(
        self,
        asys: ActorSystem,
        *,
        base: str,
        admin_port: int | None,
        owned: bool,
        system_id: str,
        store_path: str | None = None,
        services: tuple[ActorAddress, ActorAddress, ActorAddress] | None = None,
        node: str | None = None,
        owner: tuple[int, float] | None = None,
        node_watcher: Sender = None,
    ) -> None:
        """Boot the framework in ``asys`` (or, with ``services``, use another node's).

        ``services`` is ``(registry, telemetry, supervisor)`` of a convention leader: a
        member node (``genagent_thespian._nodes.convention``) boots nothing of its own, its clients
        talk to the leader's services, and its shutdown stops no agent. A system this object
        owns publishes the services it uses in its node's directory
        (``_actors/directory.py``), where :meth:`attach` finds them.
        """
        self.asys = asys
        self.store_path = store_path
        self.base = base
        self.admin_port = admin_port
        self.owned = owned
        self.system_id = system_id
        self.node = node or (
            f"{socket.gethostname()}:{admin_port}" if admin_port else socket.gethostname()
        )
        self.leads_agents = services is None
        self._directory: Sender = None
        self._lock = threading.RLock()
        self._local = threading.local()
        self._endpoints: list[_Endpoint] = []
        self._addresses: dict[AgentName, ActorAddress] = {}
        self._incarnations: dict[AgentName, int] = {}
        self._closed = False
        self._active = 0  # exchanges under way; shutdown lets them finish before closing
        self._drained = threading.Condition(self._lock)
        self._closers: list[Callable[[], None]] = []
        self._simple_subscriptions = Subscriptions()
        self.pgid: int | None = None
        self.supervisor_pid: int | None = None  # the parent of every agent process
        self.home: Path | None = None  # the node's home folder (a started system only)
        self._home_lock: HomeLock | None = None
        self.telemetry_bridge: TelemetryBridge | None = None
        #: The convention's node watcher, when this system belongs to a convention.
        self.node_watcher = node_watcher
        if services is not None:
            self.registry, self.telemetry, self.supervisor = services
        else:
            self._boot(store_path, owner)
        if owned:
            self.publish_services()
        if wanted_names() != frozenset():
            self.sync_telemetry()

    def _boot(self, store_path: str | None, owner: tuple[int, float] | None) -> None:
        """Create (or find) this system's registry, hub and supervisor, and boot them.

        Global names make this idempotent: a client attaching to a running system gets the
        same three actors, and its ``Boot`` changes nothing. The answer carries the pid and
        process group that the final sweep of ``shutdown`` uses.
        """
        self.registry = self.asys.createActor(Registry, globalName=REGISTRY_NAME)
        self.telemetry = self.asys.createActor(TelemetryHub, globalName=TELEMETRY_NAME)
        self.supervisor = self.asys.createActor(AgentSupervisor, globalName=SUPERVISOR_NAME)
        booted = self.exchange(
            self.supervisor,
            Boot(self.registry, self.telemetry, self.node, store_path, owner=owner),
            lambda m: isinstance(m, Booted),
            timeout=30.0,
        )
        if self.base != "simpleSystemBase":
            self.pgid = booted.pgid
            self.supervisor_pid = booted.pid

    def publish_services(self) -> None:
        """Tell this node's directory the services (and node watcher) its clients must use."""
        directory = self.asys.createActor(ServiceDirectory, globalName=DIRECTORY_NAME)
        services = Services(
            self.registry, self.telemetry, self.supervisor, self.node_watcher, self.node
        )
        self.exchange(
            directory,
            SetServices(services),
            lambda m: isinstance(m, Services),
            timeout=_DIRECTORY_TIMEOUT,
        )

    @property
    def directory(self) -> Sender:
        """The address of this node's service directory (``_actors/directory.py``).

        Looked up on first use, which may be the liveness check of a call whose node is
        stopping: Thespian then refuses the look-up with ``ActorSystemFailure``, which is
        raised as ``SystemNotRunning`` so the caller meets the typed error of a gone node.

        Raises:
            SystemNotRunning: the node's admin no longer answers.
        """
        with self._lock:
            if self._directory is None:
                try:
                    self._directory = self.asys.createActor(
                        ServiceDirectory, globalName=DIRECTORY_NAME
                    )
                except ActorSystemFailure as exc:
                    raise SystemNotRunning(
                        f"the node on port {self.admin_port} does not answer: {exc}"
                    ) from None
            return self._directory

    def adopt_services(self, services: object) -> bool:
        """Use the services the node's directory names now; return whether they moved.

        After a leader failover (``_nodes/leadership.py``) the directory names the new
        leader's services; a call whose service stopped answering asks the directory
        (``_api/calls.py``) and goes on with the new one.
        """
        if not isinstance(services, Services) or services.registry == self.registry:
            return False
        _log.warning(
            "the convention's services moved to %s (epoch %d)", services.node, services.epoch
        )
        self.registry, self.telemetry = services.registry, services.telemetry
        self.supervisor, self.node_watcher = services.supervisor, services.watcher
        return True

    def sync_telemetry(self) -> None:
        """Subscribe this process's attached telemetry handlers to this system's hub.

        The bridge (and its thread) is created only once a handler wants something, so a
        process that never attaches one pays nothing for telemetry.
        """
        wanted = wanted_names()
        if self.telemetry_bridge is None:
            if wanted == frozenset():
                return
            self.telemetry_bridge = TelemetryBridge(self)
        self.telemetry_bridge.sync(wanted)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        *,
        base: str = "multiprocTCPBase",
        admin_port: int | None = None,
        capabilities: Capabilities | None = None,
        log_config: dict[str, object] | None = None,
        bind_host: str = "127.0.0.1",
        advertise_host: str | None = None,
        secret_path: str | os.PathLike[str] | None = None,
        store_path: str | os.PathLike[str] | None = None,
        transport_limits: TransportLimits | None = None,
        node_name: str = DEFAULT_NODE,
        home: str | os.PathLike[str] | None = None,
    ) -> AgentSystem:
        """Start a new actor system (not the process-wide Thespian singleton) and boot it.

        On ``multiprocTCPBase`` the transport is hardened first (``_os/security.py``): every
        listener binds to ``bind_host`` (loopback unless configured) and every frame is
        authenticated with the node secret before anything is unpickled.

        Args:
            base: ``"multiprocTCPBase"`` (default) or ``"simpleSystemBase"``.
            admin_port: The admin's TCP port; when ``None``, a free one from below the
                kernel's ephemeral range (which the kernel never hands out on its own).
            capabilities: Extra Thespian capabilities (placement labels...).
            log_config: A ``logging.config.dictConfig`` dict for actor processes, or
                ``None`` to leave logging alone (never ``False``: Thespian 4.0.1 breaks).
            bind_host: Address to listen on; anything but loopback must be explicit.
            advertise_host: Address peers use, required when ``bind_host`` is ``0.0.0.0``.
            secret_path: The node secret file (default: ``GENAGENT_SECRET``,
                ``GENAGENT_SECRET_FILE`` or ``node.secret`` in the default node's home,
                created mode 0600 on first use; every node of this user shares it).
            store_path: The store of durable agents (default: ``agents.sqlite3`` in the
                node's home). Processes a previous run recorded there that are still alive
                are ended now.
            transport_limits: Frame size and connection limits of the hardened transport.
            node_name: The node's name; it picks the home folder
                (``$XDG_STATE_HOME/genagent-thespian/<name>/``, see ``_api/home.py``).
            home: The home folder itself, instead of the one ``node_name`` picks.

        Raises:
            InvalidOption: an unsupported base, a bad node name, a home that another
                running system holds (the error names its pid), or an ``admin_port`` another
                program keeps (named when this user may see it).
        """
        if base not in SUPPORTED_BASES:
            from .._core.errors import InvalidOption

            raise InvalidOption(
                f"unsupported system base {base!r}; use one of {SUPPORTED_BASES} "
                "(the Queue and UDP bases lose or stall messages under load)"
            )
        caps = dict(capabilities or {})
        system_id = uuid.uuid4().hex
        home_folder = Path(home) if home is not None else node_home(node_name)
        lock = HomeLock(home_folder)
        lock.acquire()
        try:
            system = cls._start_locked(
                base,
                admin_port,
                caps,
                log_config,
                bind_host,
                advertise_host,
                secret_path,
                os.fspath(store_path) if store_path else store_in(home_folder),
                system_id,
                transport_limits,
            )
        except BaseException:
            lock.release()
            raise
        system.home = home_folder
        system._home_lock = lock
        ownership.adopt(system)
        return system

    @classmethod
    def _start_locked(
        cls,
        base: str,
        admin_port: int | None,
        caps: Capabilities,
        log_config: dict[str, object] | None,
        bind_host: str,
        advertise_host: str | None,
        secret_path: str | os.PathLike[str] | None,
        store: str,
        system_id: str,
        transport_limits: TransportLimits | None,
    ) -> AgentSystem:
        """Start Thespian and boot the services, holding the home folder's lock.

        Transport security is set up before Thespian starts (the admin reads it at start), the
        processes a previous run of the same store left alive are ended first (they would
        otherwise fight the new run for its durable agents), and every process Thespian forks
        inherits the system's marker. A boot that fails shuts the new system down again.
        """
        if base == "multiprocTCPBase":
            security = harden_transport(
                bind_host=bind_host,
                advertise_host=advertise_host,
                secret_path=secret_path,
                limits=transport_limits,
            )
            check_capabilities(caps, security)
        _end_previous_run(store)
        if not is_postgres_url(store):
            # Made private (or warned about, if others can enter it) once, here: every
            # process of the system is forked from this one and knows it was said.
            private_folder(Path(store).parent)
        if base == "multiprocTCPBase":
            # Picked or checked last, right before the admin binds it (``_os/ports.py``).
            admin_port = int(caps.setdefault("Admin Port", admin_port or free_port(bind_host)))
            claim_port(admin_port, bind_host)
        with _marker_env(system_id):
            asys = ActorSystem(base, capabilities=caps, logDefs=log_config, transientUnique=True)
        try:
            return cls(
                asys,
                base=base,
                admin_port=admin_port,
                owned=True,
                system_id=system_id,
                store_path=store,
                owner=owner_identity() if base == "multiprocTCPBase" else None,
            )
        except BaseException:
            asys.shutdown()
            raise

    @classmethod
    def attach(
        cls,
        admin_port: int,
        *,
        capabilities: Capabilities | None = None,
        bind_host: str = "127.0.0.1",
        secret_path: str | os.PathLike[str] | None = None,
        transport_limits: TransportLimits | None = None,
    ) -> AgentSystem:
        """Attach to a running ``multiprocTCPBase`` system on ``admin_port`` (this host).

        ``bind_host``, the secret and ``transport_limits`` should match the node's (see
        :meth:`start`). The client uses the services the node's directory names (on a
        convention member: the leader's); it starts none of its own, except on a node that
        keeps no directory.
        """
        caps = dict(capabilities or {})
        caps["Admin Port"] = admin_port
        harden_transport(bind_host=bind_host, secret_path=secret_path, limits=transport_limits)
        if not _listening(bind_host, admin_port):
            # Thespian would start a new, unowned system on that port instead of failing.
            raise SystemNotRunning(f"no genagent node listens on {bind_host}:{admin_port}")
        asys = ActorSystem("multiprocTCPBase", capabilities=caps, transientUnique=True)
        try:
            services = _ask_directory(asys)
        except BaseException:
            asys.shutdown()
            raise
        if services is None:
            return cls(
                asys, base="multiprocTCPBase", admin_port=admin_port, owned=False, system_id=""
            )
        return cls(
            asys,
            base="multiprocTCPBase",
            admin_port=admin_port,
            owned=False,
            system_id="",
            services=(services.registry, services.telemetry, services.supervisor),
            node=services.node,
            node_watcher=services.watcher,
        )

    def shutdown(self, *, timeout: float = 30.0) -> None:
        """Stop every agent in order, shut the actor system down, and leave no process behind.

        Only a system this object started is shut down; an attached one is just detached.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True  # new calls are refused from now on; calls under way go on
        steps = _Steps()
        if self.telemetry_bridge is not None:
            self.telemetry_bridge.stop()
        try:
            if self.owned and self.leads_agents:
                # Every agent answers its active and queued callers (AgentStopped) before it
                # exits, and this exchange ends only once all of them have.
                try:
                    _drain(
                        self._tracked_exchange(
                            self.supervisor,
                            StopAll("shutdown"),
                            lambda m: isinstance(m, Stopped),
                            timeout,
                            None,
                        )
                    )
                except GenAgentError as error:
                    _log.warning(
                        "not every agent stopped in order; ending the actor system anyway: %s",
                        error,
                    )
                steps.done("agents")
            self._wait_for_callers(_DRAIN_SECONDS)
            steps.done("callers")
        finally:
            for closer in self._closers:
                with contextlib.suppress(Exception):
                    closer()
            self._close_endpoints()
            if self.owned:
                self.asys.shutdown()
                steps.done("actor system")
                self._sweep()
                if self._home_lock is not None:
                    self._home_lock.release()
                ownership.release(self)
            steps.report(self.admin_port)

    def add_closer(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` at :meth:`shutdown`, once agents are stopped (the asyncio transport)."""
        with self._lock:
            self._closers.append(closer)

    def _sweep(self) -> None:
        """Kill whatever of this system survived ``shutdown`` (orphans, CLI groups)."""
        if self.pgid is not None:
            kill_process_group(self.pgid)
        kill_marked(self.system_id, variable=SYSTEM_MARKER)

    def __enter__(self) -> AgentSystem:
        """Use the system as a context manager: it is shut down at the end of the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Shut down whether or not the block raised; the exception (if any) propagates."""
        self.shutdown()

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closed

    # ------------------------------------------------------------------ exchanges

    def exchange(
        self,
        address: ActorAddress,
        message: object,
        matches: Callable[[object], bool],
        *,
        timeout: float | None,
        on_idle: Callable[[], Sender] | None = None,
    ) -> WireMessage:
        """Send ``message`` to ``address`` and return the first reply for which ``matches``.

        While waiting, ``on_idle`` runs every couple of seconds; it may raise to give up,
        or return a new address to send ``message`` to again (a restarted durable agent,
        which drops a ref it already holds).

        Replies that do not match are kept for other calls waiting on this thread (a
        liveness check inside a long ask) and dropped after :data:`_STASH_LIMIT`.

        Raises:
            AskTimeout: ``timeout`` seconds passed without a matching reply.
            GenAgentError: the message could not be delivered (``PoisonMessage``).
        """
        return _drain(
            self.exchange_stream(address, message, matches, timeout=timeout, on_idle=on_idle)
        )

    def exchange_stream(
        self,
        address: ActorAddress,
        message: object,
        matches: Callable[[object], bool],
        *,
        timeout: float | None,
        on_idle: Callable[[], Sender] | None = None,
        before: tuple[object, ...] = (),
        progress: Callable[[object], bool] | None = None,
    ) -> Generator[WireMessage, None, WireMessage]:
        """:meth:`exchange`, yielding the replies for which ``progress`` holds as they come.

        ``before`` are sent (without waiting) ahead of ``message``, on every (re)send.
        """
        if self._closed:
            raise SystemNotRunning("the agent system is shut down")
        return (
            yield from self._tracked_exchange(
                address, message, matches, timeout, on_idle, before, progress
            )
        )

    def _tracked_exchange(
        self,
        address: ActorAddress,
        message: object,
        matches: Callable[[object], bool],
        timeout: float | None,
        on_idle: Callable[[], Sender] | None,
        before: tuple[object, ...] = (),
        progress: Callable[[object], bool] | None = None,
    ) -> Generator[WireMessage, None, WireMessage]:
        """Run one exchange, counted so that ``shutdown`` can let it finish first.

        A call still waiting when the system shuts down ends with ``AgentStopped``, never
        with whatever Thespian raises once its endpoints are closed under it.
        """
        if self.base == "simpleSystemBase":
            with self._lock:
                return (
                    yield from self._exchange(
                        self.asys,
                        None,
                        address,
                        message,
                        matches,
                        timeout,
                        on_idle,
                        before,
                        progress,
                    )
                )
        with self._lock:
            self._active += 1
        try:
            endpoint = self._endpoint()
            return (
                yield from self._exchange(
                    endpoint.context,
                    endpoint,
                    address,
                    message,
                    matches,
                    timeout,
                    on_idle,
                    before,
                    progress,
                )
            )
        except GenAgentError:
            raise
        except Exception as exc:
            if not self._closed:
                raise
            raise AgentStopped(
                f"the agent system shut down while {type(message).__name__} waited"
            ) from exc
        finally:
            with self._lock:
                self._active -= 1
                self._drained.notify_all()

    def _wait_for_callers(self, timeout: float) -> None:
        """Give calls under way ``timeout`` seconds to take the answers shutdown sent them."""
        with self._lock:
            self._drained.wait_for(lambda: self._active == 0, timeout)

    def _exchange(
        self,
        context: ActorSystem,
        endpoint: _Endpoint | None,
        address: ActorAddress,
        message: object,
        matches: Callable[[object], bool],
        timeout: float | None,
        on_idle: Callable[[], Sender] | None,
        before: tuple[object, ...],
        progress: Callable[[object], bool] | None,
    ) -> Generator[WireMessage, None, WireMessage]:
        """Send ``message`` and wait for its answer, yielding progress; the sync driver's core.

        The wait is cut into ``_LIVENESS_INTERVAL`` slices. A message that is neither the
        answer nor progress is stashed on the endpoint, not dropped: it may answer another
        call of the same thread made earlier (a stream that was abandoned, a late reply). When
        a slice passes in silence, ``on_idle`` may find the agent at a new address (restarted,
        woken, moved) and the message is sent again there under the same ref, which agents
        deduplicate. The generator's return value is the answer.
        """
        from .._core.errors import AskTimeout

        deadline = None if timeout is None else time.monotonic() + timeout

        def wait_slice() -> float:
            if deadline is None:
                return _LIVENESS_INTERVAL
            return max(0.0, min(_LIVENESS_INTERVAL, deadline - time.monotonic()))

        def send(target: ActorAddress) -> WireMessage:
            for first in before:
                context.tell(target, first)
            return context.ask(target, message, wait_slice())

        stash = endpoint.stash if endpoint is not None else _simple_stash
        message_is_call = not isinstance(message, StopAll)
        reply = send(address)
        while True:
            if reply is not None:
                if is_answer(reply, message, matches):
                    return reply
                if progress is not None and progress(reply):
                    yield reply
                else:
                    stash.append(reply)
            for kept in list(stash):
                if is_answer(kept, message, matches):
                    stash.remove(kept)
                    return kept
                if progress is not None and progress(kept):
                    stash.remove(kept)
                    yield kept
            if reply is None:
                if self._closed and message_is_call:
                    raise AgentStopped(
                        f"the agent system shut down while {type(message).__name__} waited"
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise AskTimeout(f"no reply to {type(message).__name__} within {timeout}s")
                if on_idle is not None:
                    new_address = on_idle()
                    if new_address is not None:
                        reply = send(new_address)
                        continue
            reply = context.listen(wait_slice())

    def subscriptions(self) -> Subscriptions:
        """The ``Watch`` followers of the calling thread's endpoint."""
        if self.base == "simpleSystemBase":
            return self._simple_subscriptions
        return self._endpoint().subscriptions

    def send(self, address: ActorAddress, message: object) -> None:
        """Send ``message`` to ``address`` from this thread's endpoint, without waiting."""
        if self._closed:
            raise SystemNotRunning("the agent system is shut down")
        if self.base == "simpleSystemBase":
            with self._lock:
                self.asys.tell(address, message)
            return
        self._endpoint().context.tell(address, message)

    def _endpoint(self) -> _Endpoint:
        """The calling thread's own ``private()`` endpoint, created on its first call.

        Thespian's external endpoints are not thread-safe; one per thread is what the multiproc
        bases support (``thespian.md`` §7.3). Each is remembered so ``shutdown`` closes them.
        """
        endpoint: _Endpoint | None = getattr(self._local, "endpoint", None)
        if endpoint is None:
            manager = self.asys.private()
            context = manager.__enter__()

            def close() -> None:
                with contextlib.suppress(Exception):
                    manager.__exit__(None, None, None)

            endpoint = _Endpoint(context, close)
            self._local.endpoint = endpoint
            with self._lock:
                self._endpoints.append(endpoint)
        return endpoint

    def _close_endpoints(self) -> None:
        """Close every thread's endpoint (at shutdown); a failing close is ignored."""
        with self._lock:
            endpoints, self._endpoints = self._endpoints, []
        for endpoint in endpoints:
            endpoint.close()

    # ------------------------------------------------------------------ names

    def cached_incarnation(self, name: AgentName) -> int | None:
        """The incarnation of agent ``name`` last looked up (``None`` if not known)."""
        with self._lock:
            return self._incarnations.get(name)

    def cached_address(self, name: AgentName) -> Sender:
        """The last known address of agent ``name`` (``None`` if not looked up yet)."""
        with self._lock:
            return self._addresses.get(name)

    def remember(
        self, name: AgentName, address: ActorAddress, incarnation: int | None = None
    ) -> None:
        """Cache (or, with ``None``, forget) agent ``name``'s address and incarnation.

        The incarnation tells a call waiting on a cached address whether the agent it
        sent to is still the one that runs (ports are reused, addresses may repeat).
        """
        with self._lock:
            if address is None:
                self._addresses.pop(name, None)
                self._incarnations.pop(name, None)
            else:
                self._addresses[name] = address
                if incarnation is None:
                    self._incarnations.pop(name, None)
                else:
                    self._incarnations[name] = incarnation


_simple_stash: deque[object] = deque(maxlen=_STASH_LIMIT)


def _drain(steps: Generator[WireMessage, None, WireMessage]) -> WireMessage:
    """Run an exchange to its answer, dropping the progress messages it yields on the way."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def _ask_directory(asys: ActorSystem) -> Services | None:
    """The services a node's directory names, or ``None`` for a node that keeps none."""
    directory = asys.createActor(ServiceDirectory, globalName=DIRECTORY_NAME)
    with asys.private() as context:
        deadline = time.monotonic() + _DIRECTORY_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            reply = context.ask(directory, WhereAreServices(), left)
            if isinstance(reply, Services):
                return reply
            if isinstance(reply, NoServices):
                return None
    raise SystemNotRunning(
        f"the node's service directory did not answer within {_DIRECTORY_TIMEOUT}s"
    )


def is_answer(reply: object, message: object, matches: Callable[[object], bool]) -> bool:
    """Whether ``reply`` answers ``message``; raise if it reports ``message`` undeliverable.

    Raises:
        GenAgentError: ``reply`` is the ``PoisonMessage`` of ``message``.
    """
    if isinstance(reply, PoisonMessage) and reply.poisonMessage == message:
        raise GenAgentError(f"{type(message).__name__} could not be delivered: {reply.details}")
    return matches(reply)


class _Steps:
    """How long each step of a shutdown took, logged when the whole took longer than usual.

    A node whose ``genagent node stop`` had to wait says in its log which step held it.
    """

    SLOW = 10.0

    def __init__(self) -> None:
        self._started = self._last = time.monotonic()
        self._took: list[str] = []

    def done(self, step: str) -> None:
        """Record that ``step`` ended now."""
        now = time.monotonic()
        self._took.append(f"{step} {now - self._last:.1f}s")
        self._last = now

    def report(self, admin_port: int | None) -> None:
        """Log the steps as a warning if the shutdown took longer than :attr:`SLOW` seconds."""
        total = time.monotonic() - self._started
        if total > self.SLOW:
            _log.warning(
                "shutdown took %.1fs (%s)", total, ", ".join(self._took), admin_port=admin_port
            )


def _listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


def _end_previous_run(store_path: str) -> None:
    """End processes a previous run of this node recorded and left running.

    A run that was SIGKILLed (or whose host rebooted mid-shutdown) may have left CLI
    processes working on the agents' sessions; the new run's agents resume those sessions,
    and two provider processes on one session would corrupt its transcript.
    """
    if not (is_postgres_url(store_path) or os.path.exists(store_path)):
        return
    store = open_store(store_path)
    try:
        ended = end_recorded_processes(store)
        if ended:
            _log.warning("ended %d process(es) left running by a previous run", len(ended))
    finally:
        store.close()


@contextlib.contextmanager
def _marker_env(system_id: str) -> Iterator[None]:
    """Set ``GENAGENT_SYSTEM_ID`` while the admin is forked, so every process inherits it.

    Only while forking: a program the user's script starts later must not inherit the
    marker, or the system's final sweep (which kills every process carrying it) would
    kill that program too.
    """
    previous = os.environ.get(SYSTEM_MARKER)
    os.environ[SYSTEM_MARKER] = system_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(SYSTEM_MARKER, None)
        else:
            os.environ[SYSTEM_MARKER] = previous
