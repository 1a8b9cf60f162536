"""Workspace: all four lifecycle hooks around a real git worktree, one commit per turn.

Topology: one :class:`WorkspaceAgent` and a git worktree on branch ``agent/<session_id>``:

* ``pre_run`` creates the worktree (in the repository given, or in a fresh one);
* ``pre_turn`` rewrites each prompt with the topic and what was written so far;
* ``post_turn`` writes the turn's paragraph to ``paragraph_<n>.md`` and commits it;
* ``post_run`` (once, when the work halts) records the branch's log.

Corrected behaviour (gen_agent #245):

* **git failures are reported**, never ignored: a failing ``pre_run`` makes
  ``start_agent`` raise :class:`WorkspaceGitError` with git's message; a failing commit makes the
  turn's caller get a ``CallbackError``, records the error, and halts the run at the next
  turn (``phase == "failed"``);
* the worktree lives in a fresh private directory (random name, mode 0700), never a
  reused path; the
  ``session_id`` is validated before it reaches a path or a branch name;
* git runs with no global or system configuration, no prompts, and a timeout;
* the worktree's path is known in ``init_agent``, **before** the backend session starts, so
  a tool-using backend can work inside it: ``cwd_option="cwd"`` passes it as ``cwd``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, GenAgentError, Halt, Prompt, Response, Skip

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["Workspace", "WorkspaceAgent", "WorkspaceGitError", "WorkspaceResult", "run_git"]

_OWN_OPTIONS = frozenset(
    {
        "topic",
        "num_turns",
        "session_id",
        "repo",
        "base_dir",
        "git_timeout",
        "cwd_option",
    }
)
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FINISHED = ("finished", "failed")


class WorkspaceGitError(GenAgentError):
    """A git command failed (the message has the command, exit code and git's output)."""

    reason_kind = "git_failed"


def run_git(args: Sequence[str], *, cwd: str, timeout: float = 30.0) -> str:
    """Run ``git args`` in ``cwd`` with no user/system config; return stdout.

    Raises:
        WorkspaceGitError: git exited non-zero, could not run, or timed out.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": cwd,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    command = [
        "git",
        "-c",
        "user.name=genagent",
        "-c",
        "user.email=genagent@localhost",
        "-c",
        "commit.gpgsign=false",
        *args,
    ]
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkspaceGitError(f"git {' '.join(args)} could not run: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-500:]
        raise WorkspaceGitError(f"git {' '.join(args)} exited {done.returncode}: {output}")
    return done.stdout


def paragraph_context(turn: int, total: int, paragraphs: list[str]) -> str:
    """What the next prompt says about the work so far."""
    if not paragraphs:
        return f"This is paragraph 1 of {total}."
    written = "\n\n".join(paragraphs)
    return f"So far:\n\n{written}\n\nNow write paragraph {turn} of {total}. Do not repeat content."


class WorkspaceAgent(SnapshotAgent):
    """Writes ``num_turns`` paragraphs, committing each to its own worktree branch."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``topic``, ``session_id`` (required), ``num_turns`` (3), ``repo`` (an
        existing repository; default a fresh one), ``base_dir``, ``git_timeout`` (30 s),
        ``cwd_option`` (backend option that receives the worktree path); the rest go to
        the backend."""
        session_id = options.get("session_id")
        if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
            raise g.InvalidOption(
                "session_id must be 1-64 letters, digits, '.', '_' or '-' "
                f"(starting with a letter or digit), got {session_id!r:.80}"
            )
        self.session_id = session_id
        self.topic = str(options.get("topic", ""))
        self.num_turns = int(options.get("num_turns", 3))
        self.git_timeout = float(options.get("git_timeout", 30.0))
        # A fresh, unguessable directory: its path is fixed here, before the backend session
        # starts (so cwd_option works), and pre_run creates it (nothing to leak if the start
        # fails before pre_run).
        parent = options.get("base_dir") or tempfile.gettempdir()
        self.base_dir = os.path.join(os.fspath(parent), f"genagent-workspace-{uuid.uuid4().hex}")
        given = options.get("repo")
        self.own_repo = given is None
        self.repo = os.path.join(self.base_dir, "repo") if given is None else os.fspath(given)
        self.workspace = os.path.join(self.base_dir, "worktree")
        self.branch = f"agent/{session_id}"
        self.phase = "starting"
        self.turn = 0
        self.paragraphs: list[str] = []
        self.commits: list[dict[str, Any]] = []
        self.prompts: list[dict[str, str]] = []
        self.error: str | None = None
        self.log: list[str] = []
        self.post_run_calls = 0
        forwarded = backend_options(options, _OWN_OPTIONS)
        cwd_option = options.get("cwd_option")
        if cwd_option:
            forwarded[str(cwd_option)] = self.workspace
        return forwarded

    def snapshot(self) -> dict[str, Any]:
        """Paths, branch, phase, commits, paragraphs, rewritten prompts, log, error."""
        return {
            "phase": self.phase,
            "workspace": self.workspace,
            "repo": self.repo,
            "branch": self.branch,
            "turn": self.turn,
            "paragraphs": self.paragraphs,
            "commits": self.commits,
            "prompts": self.prompts,
            "log": self.log,
            "error": self.error,
            "post_run_calls": self.post_run_calls,
        }

    def _git(self, *args: str, cwd: str | None = None) -> str:
        """Run git in the workspace (or ``cwd``), bounded by ``git_timeout``."""
        return run_git(args, cwd=cwd or self.workspace, timeout=self.git_timeout)

    # ----------------------------------------------------------------- hooks

    def pre_run(self) -> None:
        """Create the worktree on ``agent/<session_id>`` (and a repository when none given)."""
        os.makedirs(self.base_dir, mode=0o700)
        try:
            if self.own_repo:
                os.makedirs(self.repo)
                run_git(["init", "-q", "-b", "main"], cwd=self.repo, timeout=self.git_timeout)
                self._git("commit", "-q", "--allow-empty", "-m", "init", cwd=self.repo)
            self._git("worktree", "add", "-q", "-b", self.branch, self.workspace, cwd=self.repo)
        except WorkspaceGitError:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            raise
        self.phase = "running"

    def pre_turn(self, prompt: str) -> str | Skip | Halt:
        """Rewrite the prompt with the topic and the paragraphs so far; halt after a git error."""
        if self.phase == "failed":
            return Halt()
        if self.turn >= self.num_turns:
            return Skip()
        context = paragraph_context(self.turn + 1, self.num_turns, self.paragraphs)
        rewritten = f"Topic: {self.topic}\n\n{context}"
        self.prompts.append({"original": prompt, "sent": rewritten})
        return rewritten

    def handle_response(self, ref: str, response: Response) -> Prompt | Halt:
        """Keep the paragraph; ask for the next one or finish."""
        self.paragraphs.append(response.text.strip())
        self.turn += 1
        if self.turn >= self.num_turns:
            self.phase = "finished"
            return Halt()
        return Prompt("next paragraph")

    def handle_error(self, ref: str, error: Exception) -> Halt:
        """A failed turn fails the run."""
        self.phase = "failed"
        self.error = str(error)
        return Halt()

    def post_turn(self, ref: str, outcome: Response | Exception) -> None:
        """Commit the turn's paragraph; a git failure fails the run and reaches the caller."""
        if not isinstance(outcome, Response) or len(self.paragraphs) != self.turn:
            return
        filename = f"paragraph_{self.turn}.md"
        try:
            with open(os.path.join(self.workspace, filename), "w", encoding="utf-8") as file:
                file.write(self.paragraphs[-1] + "\n")
            self._git("add", filename)
            self._git("commit", "-q", "-m", f"turn {self.turn}: paragraph {self.turn}")
            sha = self._git("rev-parse", "--short", "HEAD").strip()
        except (OSError, WorkspaceGitError) as exc:
            self.phase = "failed"
            self.error = str(exc)
            raise
        self.commits.append({"turn": self.turn, "sha": sha, "filename": filename})

    def post_run(self) -> None:
        """Record the branch's log (once per halt)."""
        self.post_run_calls += 1
        try:
            self.log = self._git("log", "--oneline").splitlines()
        except WorkspaceGitError as exc:
            self.error = self.error or str(exc)


@dataclass(frozen=True, slots=True)
class WorkspaceResult:
    """How the work ended (``phase`` finished or failed), with the worktree's facts."""

    phase: str
    workspace: str
    branch: str
    commits: list[dict[str, Any]]
    log: list[str]
    paragraphs: list[str]
    error: str | None
    post_run_calls: int


class Workspace:
    """Start a workspace run, read its result, stop it, remove the worktree.

    Example:
        >>> run = Workspace.start("tide pools", backend="claude", session_id="s1",
        ...                       cwd_option="cwd")                  # doctest: +SKIP
        >>> run.result(timeout=900).commits
        >>> run.stop(); run.cleanup()
    """

    def __init__(self, name: Any, states: PatternStates, system: AgentSystem | None) -> None:
        """A handle on a workspace agent; the last published state seen is kept as its facts."""
        self.name = name
        self._states = states
        self._system = system
        self._facts: dict[str, Any] = {}
        self.ref = ""  # the ref of the kick-off tell (poll it for the first turn's outcome)

    @classmethod
    def start(
        cls,
        topic: str,
        *,
        backend: Any,
        session_id: str,
        name: Any = "workspace",
        num_turns: int = 3,
        repo: str | os.PathLike[str] | None = None,
        impl: type[WorkspaceAgent] = WorkspaceAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Workspace:
        """Start the agent (creating the worktree) and its first turn.

        Raises:
            InvalidOption: A bad ``session_id``.
            WorkspaceGitError: git failed (with git's message).
        """
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                topic=topic,
                session_id=session_id,
                num_turns=num_turns,
                repo=None if repo is None else os.fspath(repo),
                system=system,
                **options,
            )
            run = cls(name, states, system)
            run.ref = g.tell(name, "begin", system=system)
        except BaseException:
            states.close()
            raise
        return run

    def state(self) -> dict[str, Any]:
        """The agent's latest published state."""
        state = self._states.read(self.name)
        if state:
            self._facts = state
        return state or {}

    def result(self, *, timeout: float | None = None) -> WorkspaceResult:
        """Wait until the work finished or failed and post_run ran."""
        state = wait_for(
            lambda: (s := self.state()).get("phase") in _FINISHED and s["post_run_calls"] and s,
            timeout=timeout,
            what="the workspace run to finish",
            agent=self.name,
        )
        return WorkspaceResult(
            phase=state["phase"],
            workspace=state["workspace"],
            branch=state["branch"],
            commits=state["commits"],
            log=state["log"],
            paragraphs=state["paragraphs"],
            error=state["error"],
            post_run_calls=state["post_run_calls"],
        )

    def stop(self) -> None:
        """Stop the agent (the worktree stays for inspection until :meth:`cleanup`)."""
        self.state()
        try:
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()

    def cleanup(self) -> None:
        """Remove the worktree (and its branch's checkout directory)."""
        facts = self._facts
        if not facts:
            return
        workspace, repo = facts["workspace"], facts["repo"]
        if os.path.isdir(repo):
            try:
                run_git(["worktree", "remove", "--force", workspace], cwd=repo)
            except WorkspaceGitError:
                run_git(["worktree", "prune"], cwd=repo)
        shutil.rmtree(os.path.dirname(workspace), ignore_errors=True)
