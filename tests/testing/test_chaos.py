"""Tests of the chaos test kit, on plain subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from genagent_thespian._core.errors import AgentNotFound, InvalidOption
from genagent_thespian._durable.store import SQLiteAgentStore, StoreCorrupted, agent_key
from genagent_thespian.testing._chaos import (
    ChaosKill,
    ChaosMonkey,
    children_of,
    corrupt_file,
    corrupt_store,
    descendants_of,
    kill_process,
    kill_process_group,
    process_alive,
    process_group_members,
    wait_for_exit,
)

SLEEP = "import time; time.sleep(600)"
TREE = """
    import subprocess, sys, time
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            for _ in range(2)]
    print(" ".join(str(k.pid) for k in kids), flush=True)
    time.sleep(600)
"""


class Processes:
    """Starts children for a test and guarantees none outlives it."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.extra: list[int] = []

    def spawn(self, code: str = SLEEP, **popen: object) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            text=True,
            **popen,
        )
        self.started.append(proc)
        return proc

    def tree(self, **popen: object) -> tuple[subprocess.Popen[str], list[int]]:
        parent = self.spawn(TREE, **popen)
        assert parent.stdout is not None
        kids = [int(p) for p in parent.stdout.readline().split()]
        self.extra.extend(kids)
        return parent, kids

    def cleanup(self) -> None:
        for pid in self.extra:
            if process_alive(pid):
                kill_process(pid)
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
        for pid in self.extra:
            assert wait_for_exit(pid, 30)
        assert not any(process_alive(p.pid) for p in self.started)


@pytest.fixture
def procs() -> Iterator[Processes]:
    made = Processes()
    try:
        yield made
    finally:
        made.cleanup()


# --- process facts --------------------------------------------------------------------------


def test_process_alive(procs: Processes) -> None:
    assert process_alive(os.getpid())
    assert not process_alive(0)
    assert not process_alive(-5)
    proc = procs.spawn()
    assert process_alive(proc.pid)
    proc.kill()
    # Killed but not yet reaped: a zombie is not alive.
    assert wait_for_exit(proc.pid, 30)
    assert not process_alive(proc.pid)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # wait_for_exit left the status to its owner
    assert not process_alive(proc.pid)


def test_wait_for_exit_respects_its_deadline(procs: Processes) -> None:
    proc = procs.spawn()
    assert wait_for_exit(proc.pid, 0.2) is False
    assert process_alive(proc.pid)
    threading.Timer(0.1, proc.terminate).start()
    assert wait_for_exit(proc.pid, 30) is True


def test_wait_for_a_process_that_does_not_exist_returns_at_once(procs: Processes) -> None:
    proc = procs.spawn()
    proc.kill()
    proc.wait(timeout=30)
    assert wait_for_exit(proc.pid, 0) is True


def test_children_descendants_and_group_members(procs: Processes) -> None:
    parent, kids = procs.tree(start_new_session=True)
    assert children_of(parent.pid) == sorted(kids)
    assert descendants_of(parent.pid) == sorted(kids)
    assert parent.pid in children_of(os.getpid())
    assert set(descendants_of(os.getpid())) >= {parent.pid, *kids}
    assert process_group_members(parent.pid) == sorted([parent.pid, *kids])


def test_kill_process(procs: Processes) -> None:
    proc = procs.spawn()
    assert kill_process(proc.pid, signal.SIGTERM) is True
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert kill_process(proc.pid) is False


@pytest.mark.parametrize("pid", [0, -1, True, "12"])
def test_kill_process_rejects_bad_pids(pid: object) -> None:
    with pytest.raises(InvalidOption):
        kill_process(pid)  # type: ignore[arg-type]


def test_kill_process_refuses_to_kill_the_caller() -> None:
    with pytest.raises(InvalidOption, match="calling process"):
        kill_process(os.getpid())


def test_kill_process_group_kills_every_member(procs: Processes) -> None:
    parent, kids = procs.tree(start_new_session=True)
    assert kill_process_group(parent.pid) is True
    for pid in [parent.pid, *kids]:
        assert wait_for_exit(pid, 30)
    assert process_group_members(parent.pid) == []


def test_kill_process_group_of_an_empty_group(procs: Processes) -> None:
    lone = procs.spawn(start_new_session=True)
    lone.kill()
    lone.wait(timeout=30)  # reaped: the group has no process left, not even a zombie
    assert kill_process_group(lone.pid) is False


def test_kill_process_group_refuses_the_callers_group() -> None:
    with pytest.raises(InvalidOption, match="own process group"):
        kill_process_group(os.getpgrp())
    with pytest.raises(InvalidOption):
        kill_process_group(1)


# --- damaging stores and files --------------------------------------------------------------


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "agents.db"
    with SQLiteAgentStore(path) as store:
        for name in ("a", "b"):
            key = agent_key(name)
            store.create_agent(key, name.encode(), b"spec")
            store.save_state(key, b"state")
            store.put_result(key, "r0", b"result", max_results=5)
    return path


@pytest.mark.parametrize("part", ["state", "spec", "name", "results"])
def test_corrupt_store_damages_one_agent(store_path: Path, part: str) -> None:
    corrupt_store(store_path, name="a", part=part)
    with SQLiteAgentStore(store_path) as store:
        with pytest.raises(StoreCorrupted):
            store.load(agent_key("a"))
        intact = store.load(agent_key("b"))
        assert intact is not None and intact.state_blob == b"state"


def test_corrupt_store_without_an_agent_damages_the_file(store_path: Path) -> None:
    corrupt_store(store_path)
    with pytest.raises(StoreCorrupted):
        SQLiteAgentStore(store_path)


def test_corrupt_store_damages_the_file_even_while_a_store_has_it_open(
    store_path: Path,
) -> None:
    with SQLiteAgentStore(store_path) as live:
        live.save_state(agent_key("a"), b"newer")  # now in the write-ahead log
        assert Path(f"{store_path}-wal").stat().st_size > 0
        corrupt_store(store_path)
        with pytest.raises(StoreCorrupted):
            SQLiteAgentStore(store_path)
        with pytest.raises(StoreCorrupted):
            live.load(agent_key("a"))


def test_corrupt_store_reports_what_it_cannot_damage(store_path: Path) -> None:
    with pytest.raises(AgentNotFound):
        corrupt_store(store_path, name="nobody")
    with SQLiteAgentStore(store_path) as store:
        store.create_agent(agent_key("fresh"), b"fresh", b"spec")
    with pytest.raises(AgentNotFound, match="state"):
        corrupt_store(store_path, name="fresh", part="state")  # no snapshot yet
    with pytest.raises(InvalidOption, match="'mailbox'"):
        corrupt_store(store_path, name="a", part="mailbox")  # the mailbox is in the state
    with pytest.raises(InvalidOption, match="'everything'"):
        corrupt_store(store_path, name="a", part="everything")
    with pytest.raises(InvalidOption):
        corrupt_store(store_path, agent_key("a"), name="a")


def test_corrupt_file_changes_every_byte_of_the_range(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    original = b'{"type":"user","message":"hello"}\n' * 10
    path.write_bytes(original)
    replaced = corrupt_file(path, offset=5, length=20, seed=3)
    damaged = path.read_bytes()
    assert replaced == original[5:25]
    assert damaged[:5] == original[:5]
    assert damaged[25:] == original[25:]
    assert all(a != b for a, b in zip(damaged[5:25], original[5:25], strict=True))
    with pytest.raises(InvalidOption):
        corrupt_file(path, offset=len(original), length=1)


# --- the monkey -----------------------------------------------------------------------------


def test_monkey_kills_live_candidates_and_stops_by_itself(procs: Processes) -> None:
    victims = [procs.spawn() for _ in range(6)]

    def live() -> list[int]:
        return [p.pid for p in victims if process_alive(p.pid)]

    def not_yet_killed() -> list[int]:
        # A killed process may take a moment to die; never choose it twice.
        return [pid for pid in live() if pid not in monkey.killed_pids]

    monkey = ChaosMonkey(not_yet_killed, interval=0.05, duration=30.0, max_kills=4, seed=11)
    with monkey:
        assert monkey.wait(timeout=30)
    assert not monkey.running
    kills = monkey.kills
    assert len(kills) == 4
    assert len(set(monkey.killed_pids)) == 4
    for kill in kills:
        assert isinstance(kill, ChaosKill)
        assert kill.delivered
        assert kill.signal == signal.SIGKILL
        assert wait_for_exit(kill.pid, 30)
    assert [k.at for k in kills] == sorted(k.at for k in kills)
    assert len(live()) == 2
    assert monkey.errors == []


def test_monkey_is_bounded_in_time_when_there_is_nothing_to_kill() -> None:
    monkey = ChaosMonkey(list, interval=0.02, duration=0.3)
    monkey.start()
    assert monkey.wait(timeout=30)
    assert monkey.kills == []
    # Ticks fall at start + k * interval up to the deadline; a starved thread may run fewer.
    assert monkey.ticks <= 15


def test_monkey_choices_are_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[int]:
        chosen: list[int] = []

        def fake_kill(pid: int, sig: int) -> bool:
            chosen.append(pid)
            return True

        monkey = ChaosMonkey(
            lambda: [9001, 9002, 9003, 9004, 9005],
            interval=0.01,
            duration=30.0,
            max_kills=8,
            seed=seed,
            kill=fake_kill,
        )
        with monkey:
            assert monkey.wait(timeout=30)
        assert monkey.killed_pids == chosen
        return chosen

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_monkey_never_targets_its_own_process() -> None:
    monkey = ChaosMonkey(lambda: [os.getpid()], interval=0.01, duration=0.2, kill=lambda p, s: True)
    with monkey:
        assert monkey.wait(timeout=30)
    assert monkey.kills == []


def test_monkey_collects_errors_and_carries_on() -> None:
    calls = iter(range(1000))

    def flaky() -> list[int]:
        if next(calls) % 2 == 0:
            raise RuntimeError("candidate lookup failed")
        return [4242]

    monkey = ChaosMonkey(
        flaky, interval=0.01, duration=30.0, max_kills=3, kill=lambda pid, sig: False
    )
    with monkey:
        assert monkey.wait(timeout=30)
    assert [k.delivered for k in monkey.kills] == [False, False, False]
    assert len(monkey.errors) >= 3
    assert all(isinstance(e, RuntimeError) for e in monkey.errors)


def test_monkey_stop_ends_it_early() -> None:
    monkey = ChaosMonkey(lambda: [], interval=0.01, duration=600.0)
    monkey.start()
    monkey.stop(timeout=30)
    assert not monkey.running
    assert monkey.wait(timeout=0)


@pytest.mark.parametrize(
    "options",
    [
        {"interval": 0},
        {"duration": -1},
        {"interval": "fast"},
        {"max_kills": 0},
        {"max_kills": 1.5},
    ],
)
def test_monkey_rejects_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(InvalidOption):
        ChaosMonkey(list, **options)  # type: ignore[arg-type]


def test_monkey_can_kill_whole_groups(procs: Processes) -> None:
    parent, kids = procs.tree(start_new_session=True)
    monkey = ChaosMonkey(
        lambda: [parent.pid] if process_group_members(parent.pid) else [],
        interval=0.02,
        duration=30.0,
        max_kills=1,
        kill=kill_process_group,
    )
    with monkey:
        assert monkey.wait(timeout=30)
    for pid in [parent.pid, *kids]:
        assert wait_for_exit(pid, 30)
