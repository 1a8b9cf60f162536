"""Consensus: several agents vote on one question, round after round, until enough agree.

Topology: N >= 2 :class:`VoterAgent` s (any backends, each with its own options) and a
:class:`ConsensusAgent` that runs the vote. It never prompts a model itself; it tells each
voter the question, parses every answer into a verdict with the ``verdict_parser``, and
tallies the votes against the ``threshold``::

    voting (round 1) -> consensus                      the threshold is met
                     -> voting (round 2, 3...)         it is not: every voter sees the
                                                       others' positions and votes again
                     -> diverged                       still not met after ``rounds``
                     -> failed                         no voter is left to vote

Thresholds: ``"majority"`` (more than half of the votes cast), ``"unanimous"`` (every vote
cast, and at least two), ``("at_least", n)`` (n votes for one verdict). An answer the parser
cannot read is an **abstention**, and so is a failed turn, a voter that exits, or one that
does not answer within ``vote_timeout``: abstentions are recorded but do not count, so
three voters with one abstention reach a majority with two votes out of two. A voter that
was stopped or exited is not asked again; one whose turn failed is (its agent lives on).

Like GenAgent's ensemble strategy it replies with a line: ``CONSENSUS: <verdict> (k of n
votes, round r)`` or ``DIVERGED AFTER <r> ROUNDS: <verdict> k, <verdict> k``.

The ``verdict_parser`` is a module-level function ``text -> (verdict, rationale) | None``
(it runs in the coordinator's process, so it must be importable and pickle). The default,
:func:`parse_verdict`, reads a line ``VERDICT: <word>``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import (
    AgentDown,
    AgentNotFound,
    AgentStopped,
    AgentSystem,
    GenAgent,
    InvalidOption,
    Response,
    TellCompleted,
)

from ._common import wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = [
    "Consensus",
    "ConsensusAgent",
    "ConsensusResult",
    "Vote",
    "VoterAgent",
    "parse_verdict",
    "tally",
]

VerdictParser = Callable[[str], "tuple[str, str] | None"]
Threshold = str | tuple[str, int]

_FINISHED = ("consensus", "diverged", "failed")
_VERDICT_LINE = re.compile(r"^\s*\**\s*verdict\s*\**\s*[:=-]\s*\**\s*([\w-]+)", re.I | re.M)


def parse_verdict(text: str) -> tuple[str, str] | None:
    """Read ``VERDICT: <word>`` (any case, markdown bold allowed) from an answer.

    Returns:
        ``(verdict, rationale)`` with the verdict lower-cased and the rest of the answer as
        the rationale, or ``None`` (an abstention) when no such line is present.
    """
    found = _VERDICT_LINE.search(text)
    if found is None:
        return None
    rationale = (text[: found.start()] + text[found.end() :]).strip()
    return found.group(1).lower(), rationale


def vote_prompt(question: str) -> str:
    """The first round's prompt."""
    return (
        f"{question}\n\nAnswer with a line 'VERDICT: <one word>' followed by your reasoning "
        "in two or three sentences."
    )


def revote_prompt(question: str, own: Vote | None, others: Sequence[Vote]) -> str:
    """A later round's prompt: the voter's own position and every other voter's."""
    mine = (
        f"You answered: {own.verdict} ({own.rationale})"
        if own is not None and own.verdict is not None
        else "You did not give a verdict."
    )
    lines = "\n".join(
        f"- {vote.voter}: {vote.verdict} ({vote.rationale})"
        for vote in others
        if vote.verdict is not None
    )
    return (
        f"{question}\n\n{mine}\nThe others answered:\n{lines or '- nobody gave a verdict'}\n\n"
        "Consider their positions. Answer again with a line 'VERDICT: <one word>' followed "
        "by your reasoning."
    )


@dataclass(frozen=True, slots=True)
class Vote:
    """One voter's answer in one round. ``verdict`` is ``None`` for an abstention."""

    voter: str
    verdict: str | None
    rationale: str
    text: str = ""
    error: str | None = None


def _check_threshold(threshold: object, voters: int) -> Threshold:
    """Check a threshold at start: ``"majority"``, ``"unanimous"`` or ``("at_least", n)``.

    ``n`` must be reachable with the voters given, or the vote could never reach consensus and would
    always end diverged. A list is accepted for the pair because JSON and TOML give lists.
    """
    if threshold in ("majority", "unanimous"):
        return str(threshold)
    if (
        isinstance(threshold, tuple | list)
        and len(threshold) == 2
        and threshold[0] == "at_least"
        and isinstance(threshold[1], int)
    ):
        if not 1 <= threshold[1] <= voters:
            raise InvalidOption(
                f"threshold ('at_least', {threshold[1]}) needs 1 <= n <= {voters} (the voters)"
            )
        return ("at_least", threshold[1])
    raise InvalidOption(
        f"threshold must be 'majority', 'unanimous' or ('at_least', n), got {threshold!r}"
    )


def tally(votes: Sequence[Vote], threshold: Threshold) -> tuple[str | None, Counter[str]]:
    """Count the votes cast (abstentions left out); return the winning verdict or ``None``."""
    counts = Counter(vote.verdict for vote in votes if vote.verdict is not None)
    if not counts:
        return None, counts
    (top, top_count), *rest = counts.most_common()
    if rest and rest[0][1] == top_count:
        return None, counts  # a tie never wins
    cast = sum(counts.values())
    if isinstance(threshold, tuple):  # ("at_least", n)
        met = top_count >= threshold[1]
    elif threshold == "majority":
        met = top_count * 2 > cast
    else:  # "unanimous"
        met = top_count == cast and cast >= 2
    return (top if met else None), counts


class VoterAgent(GenAgent):
    """A voter: answers what the coordinator tells it; every option goes to the backend."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option goes to the backend."""
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        """Nothing to decide: the coordinator receives the answer as ``TellCompleted``."""
        return None


class ConsensusAgent(SnapshotAgent):
    """Runs the vote (see the module docstring). It never prompts a model itself."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``voters`` (names), ``threshold``, ``rounds`` (3), ``verdict_parser``,
        ``vote_timeout`` (600 s)."""
        self.voters: list[str] = [str(v) for v in options["voters"]]
        self.threshold = _check_threshold(options.get("threshold", "majority"), len(self.voters))
        self.max_rounds = int(options.get("rounds", 3))
        self.parser: VerdictParser = options.get("verdict_parser") or parse_verdict
        self.vote_timeout = float(options.get("vote_timeout", 600.0))
        self.question = ""
        self.phase = "waiting"
        self.round = 0
        self.rounds: list[list[Vote]] = []
        self.pending: dict[str, str] = {}  # tell ref -> voter
        self.gone: set[str] = set()
        self.verdict: str | None = None
        self.summary: str | None = None
        self.error: str | None = None
        self.deadline: str | None = None
        return {}  # the coordinator's own backend never runs a turn

    def snapshot(self) -> dict[str, Any]:
        """Phase, question, verdict, summary and every round's votes."""
        return {
            "phase": self.phase,
            "question": self.question,
            "round": self.round,
            "verdict": self.verdict,
            "summary": self.summary,
            "error": self.error,
            "rounds": [
                [[v.voter, v.verdict, v.rationale, v.text, v.error] for v in votes]
                for votes in self.rounds
            ],
        }

    def handle_response(self, ref: str, response: Response) -> None:
        """The coordinator runs no turns of its own; nothing to do."""
        return None

    def handle_event(self, event: Any) -> None:
        """``("question", text)`` starts the vote (once)."""
        is_question = isinstance(event, tuple) and len(event) == 2 and event[0] == "question"
        if is_question and self.phase == "waiting":
            self.question = str(event[1])
            for voter in self.voters:
                self.watch_agent(voter)
            self._start_round()

    def handle_info(self, message: Any) -> None:
        """Votes (``TellCompleted``), voters exiting (``AgentDown``), the round's deadline.

        Votes are matched by the ref of the tell that asked for them, so an answer from an
        earlier round (late, after its deadline) is never counted in the current one. A
        voter that failed because it is gone is remembered as gone at once: its
        ``AgentDown`` may only arrive after the next round has asked it again.
        """
        if isinstance(message, TellCompleted) and message.ref in self.pending:
            voter = self.pending.pop(message.ref)
            if message.error is None and message.response is not None:
                self._record(voter, message.response.text)
            else:
                if isinstance(message.error, AgentStopped | AgentNotFound):
                    self.gone.add(voter)  # AgentDown may come after the next round started
                self._abstain(voter, str(message.error))
            self._maybe_close_round()
        elif isinstance(message, AgentDown) and str(message.name) in self.voters:
            voter = str(message.name)
            self.gone.add(voter)
            for ref, who in list(self.pending.items()):
                if who == voter:
                    del self.pending[ref]
                    self._abstain(voter, f"the voter exited ({message.reason})")
            self._maybe_close_round()
        elif message == ("vote_deadline", self.round) and self.pending:
            for voter in self.pending.values():
                self._abstain(voter, f"no answer within {self.vote_timeout}s")
            self.pending.clear()
            self._maybe_close_round()
        elif not isinstance(message, TellCompleted | AgentDown | tuple):
            super().handle_info(message)  # late votes and stale deadlines are dropped

    # ----------------------------------------------------------------- rounds

    def _start_round(self) -> None:
        """Ask every voter still present for its vote; from round two, show each its peers' votes.

        A round has a deadline, so one silent voter cannot hold the vote forever; a voter that
        stopped is left out of later rounds, and with none left the vote fails.
        """
        active = [v for v in self.voters if v not in self.gone]
        if not active:
            self._finish("failed", error="no voter is left")
            return
        previous = self.rounds[-1] if self.rounds else []
        self.round += 1
        self.rounds.append([])
        self.phase = "voting"
        for voter in active:
            if self.round == 1:
                prompt = vote_prompt(self.question)
            else:
                own = next((v for v in previous if v.voter == voter), None)
                others = [v for v in previous if v.voter != voter]
                prompt = revote_prompt(self.question, own, others)
            self.pending[self.tell(voter, prompt)] = voter
        self.deadline = self.send_after(self.vote_timeout, ("vote_deadline", self.round))

    def _record(self, voter: str, text: str) -> None:
        """Parse a voter's answer into a vote; an unparsable answer is an abstention with a reason.

        The answer text is kept either way, so a reader can see what a voter said when no verdict
        could be read from it.
        """
        try:
            parsed = self.parser(text)
        except Exception as exc:  # a parser bug is an abstention, named, not a dead vote
            self.rounds[-1].append(Vote(voter, None, "", text, f"verdict_parser failed: {exc}"))
            return
        if parsed is None:
            self.rounds[-1].append(Vote(voter, None, "", text, "no verdict in the answer"))
        else:
            verdict, rationale = parsed
            self.rounds[-1].append(Vote(voter, str(verdict), str(rationale), text))

    def _abstain(self, voter: str, error: str) -> None:
        """Record ``voter`` as abstaining this round, with the reason (it failed, exited or timed
        out).
        """
        self.rounds[-1].append(Vote(voter, None, "", "", error))

    def _maybe_close_round(self) -> None:
        """Close the round once every vote is in: consensus, divergence, or another round.

        Called after every vote, abstention and deadline, so a round closes as soon as its
        last voter is accounted for; the deadline's timer is cancelled then, and a deadline
        that fires anyway names an older round and is ignored.
        """
        if self.pending or self.phase != "voting":
            return
        if self.deadline is not None:
            self.cancel_timer(self.deadline)
            self.deadline = None
        votes = self.rounds[-1]
        winner, counts = tally(votes, self.threshold)
        cast = sum(counts.values())
        if winner is not None:
            self.verdict = winner
            summary = f"CONSENSUS: {winner} ({counts[winner]} of {cast} votes, round {self.round})"
            self._finish("consensus", summary=summary)
        elif self.round >= self.max_rounds:
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            spread = ", ".join(f"{verdict} {count}" for verdict, count in ranked)
            summary = f"DIVERGED AFTER {self.round} ROUNDS: {spread or 'no votes cast'}"
            self._finish("diverged", summary=summary)
        else:
            self._start_round()

    def _finish(self, phase: str, *, summary: str | None = None, error: str | None = None) -> None:
        """End the vote in ``phase`` (consensus, diverged or failed) with its summary or error."""
        self.phase = phase
        self.summary = summary
        self.error = error


@dataclass(frozen=True, slots=True)
class ConsensusResult:
    """How a vote ended: ``phase`` ``consensus``, ``diverged`` or ``failed``."""

    phase: str
    verdict: str | None
    summary: str | None
    rounds: list[list[Vote]]
    error: str | None

    @property
    def ok(self) -> bool:
        """Whether the voters reached consensus."""
        return self.phase == "consensus"


class Consensus:
    """Start a vote, wait for its result, stop its agents.

    Example:
        >>> vote = Consensus.start(  # doctest: +SKIP
        ...     "Should we ship on Friday?", voters=3, backend="claude", threshold="majority"
        ... )
        >>> print(vote.result(timeout=900).summary)
        >>> vote.stop()
    """

    def __init__(
        self, name: str, voters: list[str], states: PatternStates, system: AgentSystem | None
    ) -> None:
        """A handle on a running vote; the state is read from the published agent state, not kept
        here.
        """
        self.name = name
        self.voters = voters
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        question: str,
        *,
        backend: Any,
        voters: int | Sequence[Mapping[str, Any]] = 3,
        threshold: Threshold = "majority",
        rounds: int = 3,
        verdict_parser: VerdictParser | None = None,
        vote_timeout: float = 600.0,
        name: str = "consensus",
        voter_impl: type[GenAgent] = VoterAgent,
        impl: type[ConsensusAgent] = ConsensusAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Consensus:
        """Start the voters and the coordinator, then put the question.

        Args:
            question: What the voters decide.
            backend: The voters' backend (a voter's own options may name another).
            voters: How many voters share ``options``, or one options mapping per voter
                (merged over ``options``; ``{"backend": "codex"}`` changes that voter's).
            threshold: ``"majority"``, ``"unanimous"`` or ``("at_least", n)``.
            rounds: At most this many rounds (>= 1).
            verdict_parser: ``text -> (verdict, rationale) | None``, a module-level
                function (default :func:`parse_verdict`).
            vote_timeout: Seconds a voter has per round before it counts as abstaining.
            options: The voters' backend options.

        Raises:
            InvalidOption: fewer than two voters, a bad threshold or round count.
        """
        per_voter = [{}] * voters if isinstance(voters, int) else [dict(v) for v in voters]
        if len(per_voter) < 2:
            raise InvalidOption(f"a consensus needs at least 2 voters, got {len(per_voter)}")
        checked = _check_threshold(threshold, len(per_voter))
        if not isinstance(rounds, int) or rounds < 1:
            raise InvalidOption(f"rounds must be an int >= 1, got {rounds!r}")
        names = [f"{name}-v{index}" for index in range(len(per_voter))]
        states = PatternStates(system)
        vote = cls(name, names, states, system)
        try:
            for voter, own in zip(names, per_voter, strict=True):
                merged = {**options, **own}
                voter_backend = merged.pop("backend", backend)
                g.start_agent(
                    voter_impl, name=voter, backend=voter_backend, system=system, **merged
                )
            g.start_agent(
                impl,
                name=name,
                backend="scripted",  # the coordinator never prompts; it needs no provider
                voters=names,
                threshold=checked,
                rounds=rounds,
                verdict_parser=verdict_parser,
                vote_timeout=vote_timeout,
                system=system,
            )
            g.notify(name, ("question", question), system=system)
        except BaseException:
            vote.stop()
            raise
        return vote

    def state(self) -> dict[str, Any]:
        """The coordinator's latest published state."""
        return self._states.read(self.name) or {}

    def result(self, *, timeout: float | None = None) -> ConsensusResult:
        """Wait until the vote reached consensus, diverged or failed, and return it."""
        state = wait_for(
            lambda: (s := self.state()).get("phase") in _FINISHED and s,
            timeout=timeout,
            what="the vote to finish",
            agent=self.name,
        )
        return ConsensusResult(
            phase=state["phase"],
            verdict=state["verdict"],
            summary=state["summary"],
            rounds=[[Vote(*vote) for vote in votes] for votes in state["rounds"]],
            error=state["error"],
        )

    def stop(self) -> None:
        """Stop the coordinator and every voter still running; delete the vote's state."""
        try:
            for agent in (self.name, *self.voters):
                try:
                    g.stop(agent, system=self._system)
                except g.AgentNotFound:
                    continue
        finally:
            self._states.close()
