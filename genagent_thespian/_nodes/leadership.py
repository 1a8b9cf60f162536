"""Leader failover: standby leaders, one of which leads at a time, chosen by the store.

A convention started with several leader candidates (``start_node(leaders=[...])``, the same
ordered list on every node) is a Thespian HA convention: every node registers with every
candidate, so each candidate knows the whole membership and can create actors on any node.
Which candidate *runs the services* (registry, supervisor, telemetry hub, node watcher) is
not Thespian's choice but the shared store's: an :class:`Elector` on each candidate claims
the convention's leadership lease (``AgentStore.claim_leadership``) every third of the
lease. Whoever holds it leads; a claim moves the epoch on only when the lease has expired,
so there is one leader at a time and a deposed one's epoch is always the older.

* **Taking the lead.** The elector boots the services on its own node and tells the
  supervisor (:class:`~genagent_thespian._actors.supervisor.Lead`) the services and the
  epoch. The supervisor puts a keeper on every node (``_actors/keeper.py``): each node's
  directory then names the new services (clients follow), and the agents still running
  there are re-adopted with their process and incarnation. Once every node reported, the
  durable agents the store holds that no node reported (they ran on the dead leader's host)
  are restarted by placement; each waits out its old lease as any durable restart does.
* **Standing down.** A leader whose claim fails (another holds the lease) or that cannot
  reach the store while half its lease passes ends its services at once, before its lease
  can expire for a successor (a claim gives up on an unreachable store within 2 s); a new
  leader boots a sixth of a lease after taking the lead, the margin of that stand-down.
  The agents its supervisor started keep running (its exit is not recursive) and the next
  leader re-adopts them; those that lost the store too stand down by their own leases. A
  candidate that stops cleanly also releases the lease, so a standby need not wait for it.

The lease is ``GENAGENT_LEADER_LEASE_SECONDS`` (default 8 s). A leader's death is noticed
when its lease runs out (at most one lease after its last renewal): a standby whose claim
read a lease ending before its next regular claim claims again right at that expiry, takes
over and boots a sixth of a lease after; the census adds
:data:`~genagent_thespian._actors.supervisor.CENSUS_SECONDS` or more.

One failover, as messages (candidates A and B, A leading)::

    Elector A --claim_leadership--> store       (every lease / 3; A renews, epoch e)
    A's host dies; its lease runs out
    Elector B --claim_leadership--> store: held, expires in x < lease / 3
    Elector B, x later --claim_leadership--> store: acquired, epoch e + 1
    Elector B: lease / 6 later, _boot: Registry, TelemetryHub, AgentSupervisor --Boot-->
    AgentSupervisor --Booted--> Elector B: NodeWatcher, Lead(services) --> supervisor,
                                           SetServices --> B's directory
    supervisor --KeepNode--> NodeKeeper on every node --NodeCensus--> supervisor (adopt)
    census over: the stored durable agents nobody reported are restarted
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from .._actors.directory import DIRECTORY_NAME, ServiceDirectory, Services, SetServices
from .._actors.registry import REGISTRY_NAME, Registry
from .._actors.supervisor import SUPERVISOR_NAME, AgentSupervisor, Boot, Booted, Lead
from .._actors.telemetry import TELEMETRY_NAME, TelemetryHub
from .._core.log import get_logger
from .._core.types import ActorAddress
from .._durable.location import open_store
from .._durable.store import AgentStore, StoreError
from .membership import NODES_NAME, ListNodes, NodeWatcher

__all__ = ["LEADER_LEASE_ENV", "Elect", "Elector", "leader_lease_seconds"]

#: Environment variable overriding the convention leader's lease (seconds).
LEADER_LEASE_ENV = "GENAGENT_LEADER_LEASE_SECONDS"
_DEFAULT_LEADER_LEASE = 8.0

_log = get_logger("genagent_thespian.leadership")


def leader_lease_seconds() -> float:
    """How long the leader's lease lasts without renewal (``GENAGENT_LEADER_LEASE_SECONDS``)."""
    try:
        value = float(os.environ.get(LEADER_LEASE_ENV, _DEFAULT_LEADER_LEASE))
    except ValueError:
        return _DEFAULT_LEADER_LEASE
    return value if value > 0 else _DEFAULT_LEADER_LEASE


@dataclass(frozen=True, slots=True)
class Elect:
    """Node starter -> elector: take part in the election of ``convention``'s leader.

    ``holder`` names this run of the node, not only its address: a candidate restarted on
    the same address is a new holder, so it never renews its predecessor's lease as its
    own: it waits for that lease to expire and leads under a new epoch.
    """

    store_path: str
    convention: str
    holder: str  # this node's identity in the store: "<address>:<port>/<system id>"
    node: str
    lease: float
    address: tuple[str, int]  # this node's convention address
    leaders: tuple[tuple[str, int], ...]  # every candidate, in the configured order


#: Wakeup payload: time to claim (or renew) the lead.
_CLAIM = "claim"
#: Wakeup payload: the leader's lease, as the last lost claim read it, has just run out.
_CLAIM_AT_EXPIRY = "claim at expiry"
#: Seconds after the read expiry that a standby claims (the lease is by the store's clock).
_EXPIRY_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class _BootDue:
    """Wakeup: the margin before booting the services under ``epoch`` is over."""

    epoch: int


class Elector(Actor):
    """On each leader candidate: claims the lead, boots or ends the services (module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._elect: Elect | None = None
        self._store: AgentStore | None = None
        self._epoch = 0  # the epoch this node leads under (0: it does not lead)
        self._renewed = 0.0  # monotonic time of the last successful claim while leading
        self._services: dict[str, ActorAddress] = {}

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Claim on ``Elect`` and on every claim tick; boot, lead, or leave. Never raises.

        A boot deadline carries the epoch it was set for: if the lead was lost and won again
        meanwhile, the stale one does nothing and the newer one boots.
        """
        try:
            if isinstance(message, Elect):
                if self._elect is None:
                    self._elect = message
                    self._claim()
            elif isinstance(message, WakeupMessage) and message.payload == _CLAIM:
                self._claim()
            elif isinstance(message, WakeupMessage) and message.payload == _CLAIM_AT_EXPIRY:
                self._claim(rearm=False)
            elif isinstance(message, WakeupMessage) and isinstance(message.payload, _BootDue):
                if message.payload.epoch == self._epoch:
                    self._boot()
            elif isinstance(message, Booted):
                self._lead_booted()
            elif isinstance(message, ActorExitRequest):
                self._leave()
        except Exception:
            _log.exception("the leader election failed handling %s", type(message).__name__)

    def _claim(self, *, rearm: bool = True) -> None:
        """Claim (or renew) the lease and act on the answer; the next claim is armed first.

        Armed first so that a claim that raises or blocks on the store never ends the election.
        A lost claim, a lapsed lead (a new epoch for the same holder: the lease ran out between
        two renewals) or a store silent for half a lease make a leader stand down; a won claim
        with a new epoch makes this node lead.

        A standby whose lost claim read a lease ending before its next claim also claims
        right when it ends (``rearm=False``: that extra claim arms no chain of its own). A
        live leader renews every third of its lease, so this happens only once it missed a
        renewal, and a dead leader is replaced when its lease runs out instead of up to a
        third of a lease later.
        """
        elect = self._elect
        assert elect is not None
        if rearm:
            self.wakeupAfter(elect.lease / 3, payload=_CLAIM)
        try:
            if self._store is None:
                self._store = open_store(elect.store_path)
            claim = self._store.claim_leadership(elect.convention, elect.holder, elect.lease)
        except StoreError as exc:
            # Half a lease without renewal: stand down now. A claim may block for the store
            # client's 2 s timeout, so this happens before the lease can expire (for leases
            # of 4 s and more), and the successor boots a sixth of a lease after it.
            if self._epoch and time.monotonic() - self._renewed > elect.lease / 2:
                self._stand_down(f"the store is unreachable ({exc})")
            return
        if not claim.acquired:
            if self._epoch:
                self._stand_down(f"{claim.holder} leads now (epoch {claim.epoch})")
            elif claim.expires_in < elect.lease / 3:
                self.wakeupAfter(max(claim.expires_in, 0.0) + _EXPIRY_MARGIN, _CLAIM_AT_EXPIRY)
            return
        self._renewed = time.monotonic()
        if claim.epoch != self._epoch:
            if self._epoch:
                self._stand_down("the lead lapsed")
            self._take_lead(claim.epoch)

    def _leave(self) -> None:
        """The node stops: end the services and let a standby take over without waiting."""
        leading = bool(self._epoch)
        self._stand_down("the node is shutting down")
        if self._store is None or self._elect is None:
            return
        try:
            if leading:
                self._store.release_leadership(self._elect.convention, self._elect.holder)
        except StoreError:
            _log.warning("could not release the lead; a standby takes over when it expires")
        finally:
            self._store.close()

    def _take_lead(self, epoch: int) -> None:
        """Lead under ``epoch``: boot the services now, or after a sixth of a lease when a
        previous leader may still be standing down (the margin its stand-down takes)."""
        elect = self._elect
        assert elect is not None
        _log.warning("node %s takes the convention's lead (epoch %d)", elect.node, epoch)
        self._epoch = epoch
        if epoch > 1:
            self.wakeupAfter(elect.lease / 6, payload=_BootDue(epoch))
        else:
            self._boot()

    def _boot(self) -> None:
        """Create this node's services under their global names and boot the supervisor.

        The services are created by name on this node, so every client of this node and the
        directory find them; ``Booted`` from the supervisor continues in ``_lead_booted``.
        """
        elect = self._elect
        assert elect is not None
        self._services = {
            "registry": self.createActor(Registry, globalName=REGISTRY_NAME),
            "telemetry": self.createActor(TelemetryHub, globalName=TELEMETRY_NAME),
            "supervisor": self.createActor(AgentSupervisor, globalName=SUPERVISOR_NAME),
        }
        boot = Boot(
            self._services["registry"], self._services["telemetry"], elect.node, elect.store_path
        )
        self.send(self._services["supervisor"], boot)

    def _lead_booted(self) -> None:
        """The services run: start the node watcher and announce the lead.

        Only once per lead, and only while still leading (the lead may have been lost while the
        supervisor booted). The supervisor hears ``Lead`` before the watcher reports any node,
        so it places agents and starts its census as the leader. The leader list puts this
        node first: keepers hand it to every member, which then registers here at once.
        """
        elect = self._elect
        if elect is None or not self._epoch or "watcher" in self._services:
            return
        watcher = self.createActor(NodeWatcher, globalName=NODES_NAME)
        self._services["watcher"] = watcher
        services = Services(
            self._services["registry"],
            self._services["telemetry"],
            self._services["supervisor"],
            watcher,
            elect.node,
            self._epoch,
        )
        # The supervisor learns it leads before the watcher's first membership news.
        leaders = (elect.address, *(c for c in elect.leaders if c != elect.address))
        self.send(services.supervisor, Lead(services, leaders))
        self.send(watcher, ListNodes())
        directory = self.createActor(ServiceDirectory, globalName=DIRECTORY_NAME)
        self.send(directory, SetServices(services))

    def _stand_down(self, why: str) -> None:
        """Stop leading: end the services this node runs, leaving the agents running.

        Idempotent (a node that does not lead has nothing to end). Sends are best-effort: a
        service that is gone already needs no exit request.
        """
        if not self._epoch:
            return
        _log.warning("this node no longer leads the convention: %s", why)
        self._epoch = 0
        services, self._services = self._services, {}
        for role, address in services.items():
            # Not recursive for the supervisor: the agents it started keep running (on every
            # node) and the next leader re-adopts them; agents that lost the store as well
            # stand down by their own leases.
            with contextlib.suppress(Exception):
                self.send(address, ActorExitRequest(recursive=role != "supervisor"))
