"""A store written before the move to role folders still loads (``_durable/pickling.py``).

``tests/data/pre_move_store.pickle`` was made by the flat layout (0.1.0.dev0, commit c69296c):
a durable agent's state blob (machine snapshot with an in-flight ask, a queued tell and a
queued ask; a scripted session) and two tell results, pickled under module paths such as
``genagent_thespian._machine`` that no longer exist.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from support_agents import Minimal

from genagent_thespian._core.errors import AgentStopped, TurnTimeout
from genagent_thespian._core.machine import MachineSnapshot, Origin, Request
from genagent_thespian._core.turn import Response
from genagent_thespian._durable import pickling
from genagent_thespian._durable.record import AgentRecord, answer_stored_callers
from genagent_thespian._durable.store import SQLiteAgentStore, agent_key
from genagent_thespian.messages import AgentSpec, Failure, PollState
from genagent_thespian.testing import ScriptedBackend, ScriptedSession

OLD = Path(__file__).resolve().parents[1] / "data" / "pre_move_store.pickle"
NAME = "old-agent"


def old_blobs() -> dict[str, Any]:
    blobs: dict[str, Any] = pickle.loads(OLD.read_bytes())  # the outer dict holds only bytes
    return blobs


def test_the_fixture_really_names_the_old_modules() -> None:
    blobs = old_blobs()
    assert b"genagent_thespian._machine" in blobs["state"]
    assert b"genagent_thespian._scripted" in blobs["state"]
    with pytest.raises(ModuleNotFoundError, match=r"genagent_thespian\._"):
        pickle.loads(blobs["state"])


def test_every_moved_module_maps_to_an_importable_module() -> None:
    import importlib

    for old, new in pickling.MOVED_MODULES.items():
        assert old != new
        importlib.import_module(new)


def test_old_blobs_load_as_the_current_classes() -> None:
    blobs = old_blobs()
    state = pickling.loads(blobs["state"])
    assert isinstance(state["session"], ScriptedSession)
    assert state["session"].history == ("first prompt",)
    machine = state["machine"]
    request, prompt = machine["in_flight"]
    assert isinstance(request, Request)
    assert request.origin is Origin.ASK
    assert (request.ref, prompt) == ("ref-ask", "first prompt")
    assert [(r.ref, r.origin) for r in machine["mailbox"]] == [
        ("ref-tell", Origin.TELL),
        ("ref-queued", Origin.ASK),
    ]
    done, late = (pickling.loads(b) for b in blobs["results"])
    assert done.state is PollState.COMPLETED
    assert isinstance(done.response, Response)
    assert done.response.text == "done"
    assert late.state is PollState.FAILED
    assert isinstance(late.error, TurnTimeout)
    assert late.error.agent == NAME


def _old_store(path: Path) -> AgentSpec:
    """A real SQLite store holding the pre-move record of ``NAME``."""
    spec = AgentSpec(name=NAME, impl=Minimal, backend=ScriptedBackend, durable=True)
    blobs = old_blobs()
    store = SQLiteAgentStore(str(path))
    try:
        key = agent_key(NAME)
        store.create_agent(key, pickle.dumps(NAME), pickle.dumps(spec))
        store.save_state(key, blobs["state"])
        for ref, blob in zip(("ref-done", "ref-late"), blobs["results"], strict=True):
            store.put_result(key, ref, blob, max_results=10)
    finally:
        store.close()
    return spec


def test_a_restarted_agent_resumes_from_a_pre_move_record(tmp_path: Path) -> None:
    spec = _old_store(tmp_path / "store.db")
    record = AgentRecord.open(str(tmp_path / "store.db"), spec)
    try:
        restored = record.begin()
    finally:
        record.close()
    assert restored is not None
    assert restored.incarnation == 1
    assert restored.impl_state == {"count": 1}
    assert isinstance(restored.session, ScriptedSession)
    assert [r.ref for r in restored.results] == ["ref-done", "ref-late"]
    assert isinstance(restored.machine, MachineSnapshot)
    assert [r.ref for r in restored.machine.mailbox] == ["ref-tell", "ref-queued"]
    assert restored.machine.in_flight is not None
    assert restored.machine.in_flight[0].ref == "ref-ask"
    assert restored.machine.delayed == ()


def test_the_supervisor_answers_the_callers_of_a_pre_move_record(tmp_path: Path) -> None:
    spec = _old_store(tmp_path / "store.db")
    sent: list[tuple[Any, Any]] = []
    answered = answer_stored_callers(
        str(tmp_path / "store.db"), spec, "gave up", lambda to, msg: sent.append((to, msg))
    )
    assert answered == 2
    assert sorted(to for to, _ in sent) == ["caller-1", "caller-2"]
    for _, message in sent:
        assert isinstance(message, Failure)
        assert isinstance(message.error, AgentStopped)
