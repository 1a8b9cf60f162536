"""``NodeSweeper``: ends a dead agent's leftover processes on the node where it ran.

Pids and process groups mean something only on their own host. When an agent on another
convention node dies, the supervisor (on the leader) cannot signal what it left behind (its
worker, its CLIs' process groups, anything carrying its marker), so it creates a sweeper on
that node (``targetActorRequirements`` naming the node), hands it the leftovers, and the
sweeper ends them there and exits. A node that is gone sweeps nothing, and needs nothing
swept: its processes went with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from thespian.actors import Actor, ActorExitRequest

from .._core.types import ActorAddress, Capabilities
from .._os.processes import AGENT_MARKER, kill_marked, kill_process, kill_process_group

__all__ = ["NodeSweeper", "SweepAgent"]


@dataclass(frozen=True, slots=True)
class SweepAgent:
    """Supervisor -> sweeper: what a dead agent left on the sweeper's node."""

    instance_id: str
    worker_pid: int
    process_groups: tuple[int, ...]


class NodeSweeper(Actor):
    """Created on one node; ends one dead agent's leftovers there, then exits."""

    @staticmethod
    def actorSystemCapabilityCheck(
        capabilities: Capabilities, requirements: Capabilities | None = None
    ) -> bool:
        """Run where the supervisor asked: the node whose capabilities match every key."""
        return all(capabilities.get(key) == value for key, value in (requirements or {}).items())

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """End the leftovers named in ``SweepAgent`` on this node, then exit.

        Process groups first (the CLIs), then the worker, then anything still carrying the
        agent's marker (a process that left its group); each kill tolerates a process already
        gone. The sweeper answers nobody: the supervisor has already handled the exit.
        """
        if isinstance(message, SweepAgent):
            for pgid in message.process_groups:
                kill_process_group(pgid)
            if message.worker_pid:
                kill_process(message.worker_pid)
            if message.instance_id:
                kill_marked(message.instance_id, variable=AGENT_MARKER)
            self.send(self.myAddress, ActorExitRequest())
