"""The pattern catalogue: reusable actor graphs built only on the public API.

One module per pattern; each has an agent class and a small facade (start it, feed it,
read its result, stop it) that takes any backend::

    switchboard   Switchboard, SessionAgent        named fleet, non-blocking send/poll/inbox
    research      Research, ResearchAgent          one agent self-chaining through phases
    debate        Debate, DebateAgent              two agents cross-notifying
    pipeline      Pipeline, StageAgent             linear stages, failures name their stage
    supervisor    Supervisor, CoordinatorAgent     dynamic one-shot workers, fan-out/in
    pool          Pool, PoolWorker                 reusable workers, round-robin
    watcher       Watcher, WatcherAgent            event-driven, idle until triggered
    heartbeat     Heartbeat, HeartbeatAgent        timer-driven, ticker tied to the agent
    checkpointer  Checkpointer, CheckpointAgent    human review between steps, by draft id
    retry         RetryRunner, RetryAgent          back-off on a timer, never blocking
    workspace     Workspace, WorkspaceAgent        four lifecycle hooks around a git worktree
    consensus     Consensus, ConsensusAgent        voters, a verdict parser, a threshold, rounds
    demo          run_demo                         a Supervisor fan-out, end to end

See ``docs/patterns/overview.md`` for the choose-your-pattern decision tree.

Types: agent names, events, ``start_agent`` options and published states are ``Any`` (or
``dict[str, Any]``) throughout. They are the boundary with the user: names and events are
whatever picklable terms the caller chose, options go through to the backend unchanged, and
a published state is JSON-like data read by other processes. Everything else is typed.
"""

__all__: list[str] = []
