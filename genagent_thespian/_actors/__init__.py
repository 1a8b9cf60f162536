"""The actor shells: agent, turn worker, supervisor, registry and telemetry hub.

Each actor is a thin Thespian shell around a pure object from ``_core``; one module per role.
"""
