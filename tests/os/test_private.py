"""Files holding secrets or prompts are 0600 in 0700 folders, under a permissive umask too.

Every test runs under ``umask 022`` (which would give ``0644`` files and ``0755`` folders):
the durable store and its ``-wal``/``-shm``, the node secret, the local node's log and state
file, and Thespian's internal log.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian._api import home
from genagent_thespian._durable.store import SQLiteAgentStore
from genagent_thespian._nodes import node as local_node
from genagent_thespian._os import security as sec
from genagent_thespian._os.private import private_file, private_folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_store_and_its_wal_and_shm_are_private_in_a_private_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "store.sqlite3"
    store = SQLiteAgentStore(path)
    try:
        store.create_agent("k", b"name", b"spec with a prompt and an api key")
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()  # WAL mode, open
        assert {mode(p) for p in (path, wal, shm)} == {0o600}
        assert mode(path.parent) == mode(path.parent.parent) == 0o700
    finally:
        store.close()


def test_existing_store_files_are_narrowed_and_an_open_folder_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    path = folder / "store.sqlite3"
    SQLiteAgentStore(path).close()
    for file in (path, Path(f"{path}-wal")):
        file.touch()
        os.chmod(file, 0o644)
    caplog.set_level(logging.WARNING, logger="genagent_thespian.private")
    store = SQLiteAgentStore(path)
    try:
        assert mode(path) == mode(Path(f"{path}-wal")) == 0o600
    finally:
        store.close()
    assert mode(folder) == 0o755  # the user's folder is theirs: reported, not changed
    assert f"folder {folder} is open to others (mode 0755)" in caplog.text
    SQLiteAgentStore(path).close()  # every agent process opens the store: said once, not each
    assert caplog.text.count(f"folder {folder} is open to others") == 1


_OPEN_STORE_SCRIPT = """
import sys
import genagent_thespian as g
from support_agents import Recorder

with g.start_system(store_path=sys.argv[1], home=sys.argv[2]) as system:
    for name in ("a", "b", "c"):
        g.start_agent(
            Recorder, name=name, backend="scripted", default="ok", durable=True, system=system
        )
        g.ask(name, "hello", system=system)
"""


def test_a_system_reports_an_open_store_folder_once_not_per_agent(tmp_path: Path) -> None:
    """Every agent process opens the store; the warning is said once, by the starter."""
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o755)
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_STORE_SCRIPT, str(folder / "s.sqlite3"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"folder {folder} is open to others") == 1, done.stderr


def test_node_secret_is_private_in_new_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(sec.SECRET_ENV, raising=False)
    path = tmp_path / "a" / "b" / "node.secret"
    sec.load_or_create_secret(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == mode(path.parent.parent) == 0o700


def test_local_node_log_and_state_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(home.STATE_DIR_ENV, str(tmp_path / "state"))
    state = local_node.NodeState(
        port=1,
        pid=os.getpid(),
        system_id="x",
        pgid=None,
        started_at=0.0,
        log=str(tmp_path / "state" / "default" / "node.log"),
    )
    path = local_node.state_path()
    local_node._write_state(path, state)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    log = private_file(local_node.state_dir() / "node.log")  # what start_node opens
    assert mode(log) == 0o600


def test_thespian_log_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "thespian.log"
    monkeypatch.setenv("THESPLOG_FILE", str(log))
    sec._private_thespian_log()
    assert mode(log) == 0o600
    os.chmod(log, 0o644)
    sec._private_thespian_log()
    assert mode(log) == 0o600


def test_private_file_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("someone else's")
    os.chmod(target, 0o644)
    link = tmp_path / "store.sqlite3"
    link.symlink_to(target)
    private_file(link)
    assert mode(target) == 0o644  # not narrowed through the link, not truncated
    assert target.read_text() == "someone else's"
    assert private_folder(tmp_path) == tmp_path


def test_a_running_system_keeps_its_default_store_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real path: the supervisor's process (forked with umask 022) opens the store."""
    # One process holds one node secret: keep this process's while the default home moves
    # (another test may have installed the transport with it already).
    monkeypatch.setenv(sec.SECRET_FILE_ENV, str(sec.secret_file()))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    system = g.start_system(make_default=False)
    try:
        g.start_agent(
            Recorder, name="durable", backend="scripted", default="ok", durable=True, system=system
        )
        assert g.ask("durable", "a prompt", timeout=30, system=system).text == "ok"
        store = Path(system.store_path or "")
        assert store.parent == tmp_path / "xdg" / "genagent-thespian" / "default"
        files = [store, Path(f"{store}-wal"), Path(f"{store}-shm")]
        assert {mode(p) for p in files if p.exists()} == {0o600}
        assert mode(store.parent) == mode(store.parent.parent) == 0o700
    finally:
        g.shutdown_system(system)
