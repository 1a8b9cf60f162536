"""The actor shells: agent, turn worker, supervisor, registry and telemetry hub.

Each actor is a thin Thespian shell around a pure object from ``_core``; one module per role.
How many of each run, and where (every actor is its own process on the multiproc bases)::

    agent.py        AgentActor        one per agent; a child of the supervisor
    worker.py       TurnWorker        at most one per agent; a child of its agent
    supervisor.py   AgentSupervisor   one per system (the leader's, in a convention)
    registry.py     Registry          one per system; name -> address, dead letters
    telemetry.py    TelemetryHub      one per system; plus a bridge thread per user process
    governor.py     SessionGovernorActor  one per node with ``max_live_sessions``
    reaper.py       ProcessReaper     one per system with a store; ends orphans
    directory.py    ServiceDirectory  one per node; where its clients find the services
    keeper.py       NodeKeeper        one per node after a leader failover (re-adoption)
    sweeper.py      NodeSweeper       short-lived; ends a dead agent's leftovers on its node
    hibernation.py  (pure helpers)    when an idle durable agent may hibernate
    unexpected.py   (pure helpers)    the one answer to a message an actor has no use for

Where to change what: a new request an agent accepts is a message in ``messages`` plus an
entry in the ``_HANDLERS`` table of ``agent.py`` (its decision goes in ``_core/machine``);
what happens after an agent dies is ``_core/restart_policy`` (the decision) and
``supervisor.py`` (carrying it out); how a turn reaches a provider is the ``Backend`` seam
(``_core/backend``) and ``worker.py``.

The rules every shell here keeps (``thespian.md`` §7.3): a handler never blocks (Thespian
delivers nothing to an actor inside ``receiveMessage``, not even status or exit requests);
a handler never raises (Thespian re-delivers the message once, which would re-run a turn
or a start, then bounces it as ``PoisonMessage``); every request is answered exactly once;
and ``ChildActorExited`` is handled as possibly duplicated.
"""
