"""The pure core: the agent's state machine, restart policy, deadlines and the data they use.

Nothing here starts an actor, a process or a thread: every module can be driven and tested
without an actor system. The actor shells in ``_actors`` translate Thespian messages into
calls on these objects::

    machine.py         AgentMachine: mailbox, turn slot, self-chain, halts, results (the agent)
    restart_policy.py  RestartPolicy: restart types, intensity, back-off (the supervisor)
    governor.py        SessionGovernor: at most N live provider sessions per node, fairly
    placement.py       which convention node runs an agent
    deadlines.py       named, cancellable timers over Thespian's uncancellable wakeups
    behaviour.py       GenAgent: the callbacks a user overrides
    backend.py         Backend: the seam a provider plugs into; the built-in backends' names
    turn.py            Event, Usage, Response: the data of a turn
    errors.py          the one error tree
    protocol.py        the framework's internal messages
    validate.py        checks of user input, each in one place; the framework's defaults
    classref.py        agent classes travel by name, with a clear error when unimportable
    log.py             the library's loggers (structlog over ``logging``, configuring nothing)

Imports point inward: ``_core`` imports nothing from ``_actors``, ``_api``, ``_durable``,
``_nodes``, ``cli`` or ``testing`` (a test walks the imports and fails on a cycle).
"""
