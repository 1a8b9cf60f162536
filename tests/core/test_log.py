"""The library's loggers: plain ``logging`` records, ``%`` arguments, bound and keyword context."""

from __future__ import annotations

import logging

import pytest

from genagent_thespian._core.log import get_logger


def test_a_record_carries_the_formatted_message_and_the_callers_location(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="genagent_thespian.test")
    log = get_logger("genagent_thespian.test").bind(agent="a1")
    log.info("turn %s of %d", "t", 3, ref="r9")
    (record,) = caplog.records
    assert record.name == "genagent_thespian.test"
    assert record.levelno == logging.INFO
    assert record.getMessage() == "turn t of 3 agent='a1' ref='r9'"
    assert record.funcName == "test_a_record_carries_the_formatted_message_and_the_callers_location"


def test_exception_attaches_the_exception_being_handled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="genagent_thespian.test")
    try:
        raise KeyError("missing")
    except KeyError:
        get_logger("genagent_thespian.test").exception("lookup failed")
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_disabled_level_formats_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Explodes:
        def __str__(self) -> str:
            raise AssertionError("formatted although the level is disabled")

    caplog.set_level(logging.WARNING, logger="genagent_thespian.test")
    get_logger("genagent_thespian.test").debug("%s", Explodes())
    assert caplog.records == []
