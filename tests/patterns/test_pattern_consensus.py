"""Acceptance tests of the Consensus pattern (GenAgent ensemble's strategy), scripted, on
both system bases."""

from __future__ import annotations

from pathlib import Path

import pytest
from genagent_thespian.patterns.consensus import Consensus, Vote, parse_verdict, tally

import genagent_thespian as g
from genagent_thespian.testing import Exit, Fail, Gate, Slow, wait_until

pytestmark = pytest.mark.usefixtures("any_agent_system")


def yes(why: str = "it is ready") -> str:
    return f"VERDICT: yes\n{why}"


def no(why: str = "it is not") -> str:
    return f"VERDICT: no\n{why}"


def votes(*verdicts: str | None) -> list[Vote]:
    return [Vote(f"v{i}", v, "") for i, v in enumerate(verdicts)]


# ------------------------------------------------------------------ pure parts


def test_the_default_parser_reads_a_verdict_line_and_keeps_the_rest() -> None:
    assert parse_verdict("Ship it.\n**Verdict:** YES\nTests pass.") == (
        "yes",
        "Ship it.\n\nTests pass.",
    )
    assert parse_verdict("I think we should, but who knows.") is None


@pytest.mark.parametrize(
    ("cast", "threshold", "winner"),
    [
        (("yes", "yes", "no"), "majority", "yes"),
        (("yes", "no"), "majority", None),  # a tie never wins
        (("yes", "yes", None), "unanimous", "yes"),  # the abstention does not count
        (("yes", None, None), "unanimous", None),  # one vote is not unanimity
        (("yes", "yes", "no"), "unanimous", None),
        (("yes", "yes", "no", "no", "maybe"), ("at_least", 2), None),  # tie at the top
        (("yes", "yes", "no", "maybe"), ("at_least", 2), "yes"),
        ((None, None, None), "majority", None),
    ],
)
def test_tally(cast: tuple[str | None, ...], threshold: object, winner: str | None) -> None:
    assert tally(votes(*cast), threshold)[0] == winner  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("voters", "threshold", "message"),
    [
        (1, "majority", "at least 2 voters"),
        (3, "most", "threshold must be"),
        (3, ("at_least", 4), "1 <= n <= 3"),
    ],
)
def test_bad_configurations_are_refused_before_any_agent_starts(
    voters: int, threshold: object, message: str
) -> None:
    with pytest.raises(g.InvalidOption, match=message):
        Consensus.start("q", backend="scripted", voters=voters, threshold=threshold)  # type: ignore[arg-type]
    assert g.list_agents() == []


# ------------------------------------------------------------------ on a real system


def test_a_majority_in_the_first_round() -> None:
    vote = Consensus.start(
        "Ship on Friday?",
        backend="scripted",
        voters=[{"script": [yes()]}, {"script": [yes()]}, {"script": [no()]}],
    )
    result = vote.result(timeout=30)
    assert result.ok and result.verdict == "yes"
    assert result.summary == "CONSENSUS: yes (2 of 3 votes, round 1)"
    assert len(result.rounds) == 1
    assert sorted((v.voter, v.verdict) for v in result.rounds[0]) == [
        ("consensus-v0", "yes"), ("consensus-v1", "yes"), ("consensus-v2", "no"),
    ]  # fmt: skip
    assert "Ship on Friday?" in g.backend_session("consensus-v0").history[0]
    vote.stop()
    assert g.list_agents() == []


def test_later_rounds_show_each_voter_the_others_positions_until_they_agree() -> None:
    vote = Consensus.start(
        "Rewrite in Rust?",
        backend="scripted",
        threshold="unanimous",
        voters=[
            {"script": [yes("speed"), yes("speed")]},
            {"script": [no("cost"), yes("fair point on speed")]},
        ],
    )
    result = vote.result(timeout=30)
    assert result.summary == "CONSENSUS: yes (2 of 2 votes, round 2)"
    second_prompt = g.backend_session("consensus-v1").history[1]
    assert "You answered: no (cost)" in second_prompt
    assert "consensus-v0: yes (speed)" in second_prompt
    assert "consensus-v1: no" not in second_prompt  # its own position is not an "other"
    vote.stop()


def test_no_agreement_within_the_rounds_diverges() -> None:
    vote = Consensus.start(
        "Tabs?",
        backend="scripted",
        rounds=2,
        voters=[{"default": yes()}, {"default": no()}],
    )
    result = vote.result(timeout=30)
    assert result.phase == "diverged" and result.verdict is None
    assert (
        result.summary == "DIVERGED AFTER 2 ROUNDS: no 1, yes 1"
    )  # most votes first, then by name
    assert len(result.rounds) == 2
    vote.stop()


def test_abstentions_do_not_count() -> None:
    vote = Consensus.start(
        "Merge?",
        backend="scripted",
        threshold="majority",
        voters=[
            {"script": [yes()]},
            {"script": ["I would rather not say."]},  # unreadable: abstains
            {"script": [Fail("server_error", "provider down")]},  # failed: abstains
        ],
    )
    result = vote.result(timeout=30)
    assert result.summary == "CONSENSUS: yes (1 of 1 votes, round 1)"
    errors = {v.voter: v.error for v in result.rounds[0]}
    assert errors["consensus-v1"] == "no verdict in the answer"
    assert "provider down" in (errors["consensus-v2"] or "")
    vote.stop()


def test_a_crashed_turn_abstains_and_the_voter_is_asked_again() -> None:
    vote = Consensus.start(
        "Deploy?",
        backend="scripted",
        threshold=("at_least", 2),
        voters=[
            {"script": [yes(), yes()]},
            {"script": [no(), no()]},
            {"script": [Exit(1), yes("after the restart")]},  # the worker process dies
        ],
    )
    result = vote.result(timeout=30)
    assert result.summary == "CONSENSUS: yes (2 of 3 votes, round 2)"
    first = {v.voter: v for v in result.rounds[0]}
    assert first["consensus-v2"].verdict is None and first["consensus-v2"].error
    vote.stop()


def test_a_stopped_voter_abstains_and_is_not_asked_again(tmp_path: Path) -> None:
    gate = str(tmp_path / "never")
    vote = Consensus.start(
        "Deploy?",
        backend="scripted",
        threshold="unanimous",
        voters=[
            {"script": [yes(), yes()]},
            {"script": [no(), yes()]},
            {"script": [Gate(gate, yes())]},  # never opened: this voter hangs
        ],
    )
    wait_until(lambda: g.status("consensus-v2").state == "processing", timeout=10)
    g.stop("consensus-v2")
    result = vote.result(timeout=30)
    assert result.summary == "CONSENSUS: yes (2 of 2 votes, round 2)"
    first = {v.voter: v for v in result.rounds[0]}
    assert first["consensus-v2"].verdict is None and first["consensus-v2"].error
    assert [v.voter for v in result.rounds[1]].count("consensus-v2") == 0
    vote.stop()


def test_a_voter_too_slow_for_the_deadline_abstains() -> None:
    vote = Consensus.start(
        "Now?",
        backend="scripted",
        vote_timeout=1.0,
        rounds=1,
        voters=[
            {"script": [yes()]},
            {"script": [yes()]},
            {"script": [Slow("VERDICT: no", 60)]},
        ],
    )
    result = vote.result(timeout=30)
    assert result.summary == "CONSENSUS: yes (2 of 2 votes, round 1)"
    slow = next(v for v in result.rounds[0] if v.voter == "consensus-v2")
    assert slow.verdict is None and "no answer within 1.0s" in (slow.error or "")
    vote.stop()
    wait_until(lambda: g.list_agents() == [], timeout=10)
