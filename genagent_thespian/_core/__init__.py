"""The pure core: the agent's state machine, restart policy, deadlines and the data they use.

Nothing here starts an actor, a process or a thread: every module can be driven and tested
without an actor system. The actor shells in ``_actors`` translate Thespian messages into
calls on these objects.
"""
