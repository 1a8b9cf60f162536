"""Shared test configuration: the package's own pytest fixtures (agent_system, any_agent_system)."""

pytest_plugins = ["genagent_thespian.testing"]
