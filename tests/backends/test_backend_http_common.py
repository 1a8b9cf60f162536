"""The helpers the HTTP backends share: secrets, options, tool results, error mapping."""

from __future__ import annotations

import email.utils
import pickle
import time

import pytest
from genagent_thespian.backends._http import (
    OptionSpec,
    Secret,
    ToolResult,
    error_from_status,
    is_positive_int,
    parse_tool_results,
    retry_after_from_headers,
    scrub,
    tool_results_prompt,
    validate_options,
)

from genagent_thespian import BackendErrorKind, InvalidOption


def test_secret_is_masked_but_pickles_with_its_value() -> None:
    secret = Secret("sk-live-123456789")
    assert "123456789" not in repr(secret)
    assert "123456789" not in str(secret)
    assert "123456789" not in f"{secret}"
    copy = pickle.loads(pickle.dumps(secret))
    assert copy == secret
    assert copy.reveal() == "sk-live-123456789"
    with pytest.raises(InvalidOption):
        Secret("")


def test_scrub_replaces_key_length_secrets_only() -> None:
    assert scrub("bad key sk-live-123456789!", Secret("sk-live-123456789")) == "bad key ***!"
    assert scrub("keyword", "k") == "keyword"
    assert scrub("nothing", None) == "nothing"


def test_validate_options_fills_defaults_and_names_bad_keys() -> None:
    specs = {"size": OptionSpec(3, is_positive_int), "name": OptionSpec("x", lambda v: None)}
    assert validate_options("demo", {"size": 5}, specs) == {"size": 5, "name": "x"}
    assert validate_options("demo", None, specs) == {"size": 3, "name": "x"}
    with pytest.raises(InvalidOption, match=r"unknown demo option\(s\) 'colour'.*known options"):
        validate_options("demo", {"colour": "red"}, specs)
    with pytest.raises(InvalidOption, match="'size' must be a positive int") as caught:
        validate_options("demo", {"size": -4}, specs)
    assert "-4" not in str(caught.value)


def test_tool_results_round_trip() -> None:
    prompt = tool_results_prompt({"a": "1", "b": "2"})
    assert parse_tool_results(prompt, ["b", "a"]) == [ToolResult("a", "1"), ToolResult("b", "2")]
    flagged = tool_results_prompt([ToolResult("a", "boom", is_error=True)])
    assert parse_tool_results(flagged, ["a"]) == [ToolResult("a", "boom", True)]
    assert parse_tool_results("plain", ["a", "b"]) == [
        ToolResult("a", "plain"),
        ToolResult("b", "plain"),
    ]
    assert parse_tool_results('{"json": "but not results"}', ["a"])[0].content == (
        '{"json": "but not results"}'
    )
    with pytest.raises(InvalidOption, match="pending tool calls"):
        parse_tool_results(tool_results_prompt({"a": "1"}), ["a", "b"])


def test_retry_after_forms() -> None:
    assert retry_after_from_headers({"Retry-After": "3"}) == 3.0
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    assert retry_after_from_headers({}) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    retry_after = retry_after_from_headers({"retry-after": future})
    assert retry_after is not None and 25 <= retry_after <= 31


@pytest.mark.parametrize(
    ("status", "error_type", "code", "kind", "retryable"),
    [
        (200, "overloaded_error", None, BackendErrorKind.OVERLOADED, True),
        (400, "invalid_request_error", None, BackendErrorKind.INVALID_REQUEST, False),
        (429, "requests", "insufficient_quota", BackendErrorKind.RATE_LIMITED, False),
        (418, None, None, BackendErrorKind.INVALID_REQUEST, False),
        (502, None, None, BackendErrorKind.SERVER_ERROR, True),
        (None, None, None, BackendErrorKind.UNKNOWN, False),
    ],
)
def test_error_from_status(
    status: int | None,
    error_type: str | None,
    code: str | None,
    kind: str,
    retryable: bool,
) -> None:
    error = error_from_status(
        backend="x", status=status, error_type=error_type, code=code, message="m"
    )
    assert (error.kind, error.retryable, error.status_code) == (kind, retryable, status)
