"""Where the CLI backends find a session's files and where a restored file goes (no CLI run).

The move itself, with the real claude CLI, is in ``test_cli_sessions.py``.
"""

from __future__ import annotations

from pathlib import Path

from genagent_thespian.backends.claude import ClaudeBackend, ClaudeSession
from genagent_thespian.backends.codex import CodexBackend, CodexSession

THREAD = "019a0000-aaaa-7bbb-8ccc-000000000001"
SESSION = "2b4c7f7e-0d1c-4f55-9a51-6a8f0b5d9e01"


def _codex(home: Path) -> CodexSession:
    return CodexSession(
        cwd="/work",
        binary="/bin/true",
        options={"env": {"CODEX_HOME": str(home)}},
        thread_id=THREAD,
    )


def test_codex_files_are_the_threads_rollout_named_relative_to_codex_home(tmp_path: Path) -> None:
    old_home, new_home = tmp_path / "a" / ".codex", tmp_path / "b" / ".codex"
    rollout = old_home / "sessions/2026/12/02" / f"rollout-2026-12-02T10-00-00-{THREAD}.jsonl"
    rollout.parent.mkdir(parents=True)
    rollout.write_text("{}\n")
    (rollout.parent / "rollout-2026-12-02T10-00-00-someone-else.jsonl").write_text("{}\n")
    backend = CodexBackend()
    files = backend.session_files(_codex(old_home))
    name = f"sessions/2026/12/02/rollout-2026-12-02T10-00-00-{THREAD}.jsonl"
    assert files == {name: rollout}
    assert backend.session_file_path(_codex(new_home), name) == (new_home / name).resolve()
    assert backend.session_file_path(_codex(new_home), "../escape.jsonl") is None
    assert backend.session_files(CodexSession(cwd="/", binary="/bin/true")) == {}  # no thread


def test_claude_files_are_the_transcript_under_the_config_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    session = ClaudeSession(
        session_id=SESSION, cwd="/work", binary="/bin/true", options={"env": {"HOME": str(home)}}
    )
    transcript = home / ".claude/projects/-work" / f"{SESSION}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("{}\n")
    backend = ClaudeBackend()
    assert backend.session_files(session) == {f"projects/-work/{SESSION}.jsonl": transcript}
    elsewhere = ClaudeSession(
        session_id=SESSION,
        cwd="/work",
        binary="/bin/true",
        options={"env": {"CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}},
    )
    target = backend.session_file_path(elsewhere, f"projects/-work/{SESSION}.jsonl")
    assert target == (tmp_path / "cfg/projects/-work" / f"{SESSION}.jsonl").resolve()
    assert backend.session_file_path(elsewhere, "/etc/passwd") is None
