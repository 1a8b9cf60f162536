"""A durable agent's secrets never reach the store; a resumed agent gets them back by name.

Unit tests of the redaction, then the real path: a durable ``openai`` agent (the real SDK
against our FakeLLMServer) whose ``api_key`` option is in no byte of the SQLite store, yet
which keeps authenticating after its process is killed (the supervisor's in-memory spec)
and after a whole new system resumes it from the store (a ``secret_resolver``).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends._http import Secret
from support_agents import Passthrough

import genagent_thespian as g
from genagent_thespian._core.validate import build_spec
from genagent_thespian._durable.redaction import (
    Redacted,
    dumps_redacted,
    is_secret_name,
    lookup_for,
    redact,
    restore,
)
from genagent_thespian.testing import FakeLLMServer, Text, system_processes, wait_until

KEY = "sk-live-0123456789abcdef-do-not-store"
RESOLVED_KEY = "sk-from-the-vault-fedcba9876543210"


def vault(agent: Any, option: str) -> str | None:
    """The user's resolver: a module-level function, so it pickles by reference."""
    return RESOLVED_KEY if (agent, option) == ("durable-openai", "api_key") else None


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    base_url: str
    api_key: Secret | None
    max_tokens: int
    env: dict[str, str]


class Opaque:
    """Not a dataclass, not a container: only the pickler can find the secret inside."""

    def __init__(self, secret: Secret) -> None:
        self.secret = secret


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("ANTHROPIC_API_KEY", True),
        ("access_token", True),
        ("client_secret", True),
        ("db-password", True),
        ("key", True),
        ("credentials", True),
        ("max_tokens", False),
        ("keys", False),
        ("token_budget", False),
        ("model", False),
        (3, False),
    ],
)
def test_secret_names(name: Any, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_options_and_sessions_are_redacted_and_restored_by_name() -> None:
    options = (
        ("api_key", KEY),
        ("max_tokens", 100),
        ("backend_options", {"env": {"OPENAI_API_KEY": KEY, "HOME": "/h"}, "model": "m"}),
    )
    session = Session("http://x", Secret(KEY), 100, {"GITHUB_TOKEN": KEY, "LANG": "C"})
    stored = dumps_redacted({"options": options, "session": session, "opaque": Opaque(Secret(KEY))})
    assert KEY.encode() not in stored
    loaded = pickle.loads(stored)
    assert loaded["options"][0] == ("api_key", Redacted("api_key"))
    assert loaded["options"][1] == ("max_tokens", 100)
    assert loaded["options"][2][1]["env"] == {
        "OPENAI_API_KEY": Redacted("OPENAI_API_KEY"),
        "HOME": "/h",
    }
    assert loaded["session"].api_key == Redacted("api_key", Secret)
    assert loaded["session"].max_tokens == 100
    assert isinstance(loaded["opaque"].secret, Redacted)

    lookup = lookup_for({"api_key": "new-key", "env": {"GITHUB_TOKEN": "gh"}}, None, "a")
    back = restore(loaded["session"], lookup)
    assert back.api_key == Secret("new-key")  # re-wrapped in the backend's Secret
    assert back.env == {"GITHUB_TOKEN": "gh", "LANG": "C"}
    assert restore(loaded["session"], lambda name: None).api_key is None  # env fallback
    assert redact(session) is not session and session.api_key == Secret(KEY)  # a copy


def test_resolver_is_asked_when_the_live_options_lack_the_secret() -> None:
    asked: list[tuple[Any, str]] = []

    def resolver(agent: Any, option: str) -> str:
        asked.append((agent, option))
        return "resolved"

    lookup = lookup_for({"model": "m"}, resolver, "agent-x")
    assert restore(Redacted("api_key", Secret), lookup) == Secret("resolved")
    assert asked == [("agent-x", "api_key")]
    assert lookup_for({"api_key": "live"}, resolver, "agent-x")("api_key") == "live"


def test_secret_resolver_must_be_an_importable_function(tmp_path: Path) -> None:
    with pytest.raises(g.InvalidOption, match="secret_resolver must be a function"):
        build_spec(Passthrough, name="n", backend="scripted", secret_resolver="vault")
    with pytest.raises(g.InvalidOption, match="secret_resolver"):
        build_spec(Passthrough, name="n", backend="scripted", secret_resolver=lambda a, o: o)


# -- the real path -------------------------------------------------------------------------------


def _store_bytes(store: Path) -> bytes:
    return b"".join(path.read_bytes() for path in (store, Path(f"{store}-wal")) if path.exists())


@pytest.fixture
def server() -> Any:
    with FakeLLMServer() as fake:
        yield fake


def test_durable_agent_secret_is_never_stored_and_comes_back_on_restart(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    store = tmp_path / "store.sqlite3"
    options = {"api_key": KEY, "base_url": server.openai_base_url, "model": "gpt-x"}
    server.script(Text("one"), Text("two"), Text("three"))
    name = "durable-openai"
    system = g.start_system(store_path=str(store), make_default=False)
    try:
        g.start_agent(
            Passthrough,
            name=name,
            backend="openai",
            durable=True,
            restart="permanent",
            backend_options=options,
            system=system,
        )
        assert g.ask(name, "first", timeout=60, system=system).text == "one"
        assert server.model_requests[-1].auth_fingerprint == FakeLLMServer.fingerprint(KEY)
        assert KEY.encode() not in _store_bytes(store)

        # The process dies: the supervisor restarts it from its in-memory spec.
        old_pid = g.status(name, system=system).pid
        os.kill(old_pid, signal.SIGKILL)
        wait_until(
            lambda: _pid(name, system) not in (None, old_pid),
            timeout=30,
            message="the durable agent was not restarted",
        )
        assert g.ask(name, "second", timeout=60, system=system).text == "two"
        assert server.model_requests[-1].auth_fingerprint == FakeLLMServer.fingerprint(KEY)
        assert KEY.encode() not in _store_bytes(store)
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived")

    # A new system on the same store resumes the agent; the key comes from the resolver.
    assert KEY.encode() not in _store_bytes(store)
    later = g.start_system(store_path=str(store), make_default=False)
    try:
        g.start_agent(
            Passthrough,
            name=name,
            backend="openai",
            durable=True,
            backend_options={"base_url": server.openai_base_url, "model": "gpt-x"},
            secret_resolver=vault,
            system=later,
        )
        assert g.ask(name, "third", timeout=60, system=later).text == "three"
        assert server.model_requests[-1].auth_fingerprint == FakeLLMServer.fingerprint(RESOLVED_KEY)
        assert server.model_requests[-1].body.get("previous_response_id")  # it resumed
        assert RESOLVED_KEY.encode() not in _store_bytes(store)
    finally:
        g.shutdown_system(later)
        wait_until(lambda: not system_processes(later), message="processes survived")


def _pid(name: str, system: g.AgentSystem) -> int | None:
    try:
        return g.status(name, system=system).pid
    except g.GenAgentError:
        return None
