from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pytest

from streamwatch.logs import (
    JsonFormatter,
    LogFormat,
    RepeatFilter,
    TextFormatter,
    choose_format,
    configure,
)


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_from_limited_loggers_pass_once_per_interval_with_a_count() -> None:
    now = [0.0]
    limiter = RepeatFilter(("kafka",), interval_s=60, clock=lambda: now[0])
    assert limiter.filter(_record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED"))
    for second in range(1, 30):
        now[0] = second
        assert not limiter.filter(_record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED"))
    # Another message, another level or another logger is its own kind.
    assert limiter.filter(_record("kafka.net.manager", "Connection lost: %s", "x"))
    assert limiter.filter(_record("kafka.net.manager", "Connection failed: %s", "x", level=logging.WARNING))
    assert limiter.filter(_record("kafka.cluster", "Connection failed: %s", "x"))
    now[0] = 61
    record = _record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED")
    assert limiter.filter(record)
    assert record.getMessage() == "Connection failed: ECONNREFUSED (29 more like this in the last 61s)"


def test_other_loggers_are_never_limited() -> None:
    limiter = RepeatFilter(("kafka",), interval_s=60, clock=lambda: 0.0)
    assert all(limiter.filter(_record("streamwatch.kafka", "commit failed")) for _ in range(5))


# -- formats ---------------------------------------------------------------------------------------------
class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


# Calls whose message cannot be formatted as written, or at all.
BAD_CALLS: list[tuple[object, tuple[object, ...]]] = [
    ("%d windows", ("x",)),
    ("%s and %s", ("one",)),
    (_Unprintable(), ()),
    ({"a": 1}, ()),
]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root and kafka loggers back as they were: `configure` changes process-wide state."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    handlers, level, kafka_level = list(root.handlers), root.level, kafka.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    kafka.setLevel(kafka_level)


def _configured(
    output: TextIO, *, format: LogFormat = "auto", environ: dict[str, str] | None = None
) -> logging.Logger:
    configure(verbose=True, format=format, stream=output, environ={} if environ is None else environ)
    return logging.getLogger("streamwatch.test")


def _json_lines(output: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def _journal_environ(stream: TextIO) -> dict[str, str]:
    status = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}


@pytest.mark.usefixtures("restored_logging")
def test_json_is_one_object_a_line_with_the_extra_fields_as_fields() -> None:
    output = io.StringIO()
    log = _configured(output, format="json")
    log.info("alert fired on %s", "pmu-1/voltage", extra={"stream": "pmu-1/voltage", "alert_id": "a1b2"})
    log.warning("two\nlines", extra={"score": 4.25, "channels": {"v": 1}, "seen": np.float32(0.5)})
    first, second = _json_lines(output)
    assert first["level"] == "INFO" and first["logger"] == "streamwatch.test"
    assert first["message"] == "alert fired on pmu-1/voltage"
    assert (first["stream"], first["alert_id"]) == ("pmu-1/voltage", "a1b2")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "exc" not in first and "lineno" not in first and "args" not in first
    assert second["message"] == "two\nlines"
    assert (second["score"], second["channels"], second["seen"]) == (4.25, {"v": 1}, 0.5)


def test_json_time_is_utc_to_the_millisecond() -> None:
    record = _record("streamwatch", "x", level=logging.INFO)
    record.created, record.msecs = 1_767_225_600.123456, 123.456
    assert json.loads(JsonFormatter().format(record))["ts"] == "2026-01-01T00:00:00.123Z"


@pytest.mark.usefixtures("restored_logging")
def test_json_carries_the_exception_and_keeps_its_own_fields_first() -> None:
    output = io.StringIO()
    log = _configured(output, format="json")
    try:
        raise ValueError("window 7 is empty")
    except ValueError:
        log.exception("scoring failed", extra={"level": "overridden?", "stream": "s"})
    [event] = _json_lines(output)
    assert event["level"] == "ERROR" and event["stream"] == "s"
    assert event["exc"].startswith("Traceback") and event["exc"].endswith("ValueError: window 7 is empty")


@pytest.mark.usefixtures("restored_logging")
def test_values_json_cannot_hold_become_text(tmp_path: Path) -> None:
    output = io.StringIO()
    log = _configured(output, format="json")
    log.info("odd", extra={"path": tmp_path, "big": 2**70, "keyed": {(1, 2): 3}, "count": 3})
    log.info("odder", extra={"raw": "caf\udce9", "thing": _Unprintable(), "at": {1, 2} - {1, 2}})
    first, second = _json_lines(output)
    assert first["path"] == str(tmp_path) and first["big"] == str(2**70)
    assert first["keyed"] == "{(1, 2): 3}" and first["count"] == 3  # only the odd field turned to text
    assert second["raw"] == "caf\\udce9" and second["at"] == "set()"
    assert second["thing"].startswith("<") and "_Unprintable object at" in second["thing"]


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("format", ["json", "text"])
def test_a_bad_logging_call_still_logs_and_never_raises(
    format: LogFormat, capsys: pytest.CaptureFixture[str]
) -> None:
    output = io.StringIO()
    handler = configure(verbose=False, format=format, stream=output, environ={})
    # Handed to the handler directly: pytest's own capture handler on the root logger fails a test on a
    # bad call, which is right for streamwatch's code but not what is tested here.
    for message, args in BAD_CALLS:
        handler.handle(logging.LogRecord("streamwatch.test", logging.INFO, __file__, 1, message, args, None))
    text = output.getvalue()
    messages = [event["message"] for event in _json_lines(output)] if format == "json" else text.splitlines()
    assert len(messages) == 4
    assert "%d windows" in messages[0] and "('x',)" in messages[0]
    assert "%s and %s" in messages[1] and "('one',)" in messages[1]
    assert "_Unprintable object at" in messages[2]
    assert "{'a': 1}" in messages[3]
    assert capsys.readouterr().err == ""  # no "--- Logging error ---" from logging.Handler.handleError


@pytest.mark.usefixtures("restored_logging")
def test_text_shows_the_extra_fields_after_the_message() -> None:
    output = io.StringIO()
    log = _configured(output, format="text")
    log.info("alert fired", extra={"stream": "pmu-1/voltage", "alert_id": "a1b2", "note": 'say "hi"\nok'})
    log.info("plain")
    fired, plain = output.getvalue().splitlines()
    assert fired.endswith(
        ' INFO streamwatch.test: alert fired stream=pmu-1/voltage alert_id=a1b2 note="say \\"hi\\"\\nok"'
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO streamwatch.test: plain", plain)


# -- choosing a format ------------------------------------------------------------------------------------
def test_auto_is_json_when_stderr_is_the_journal(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w") as journal, (tmp_path / "other").open("w") as other:
        assert choose_format("auto", journal, _journal_environ(journal)) == "json"
        # The variable is inherited by children whose stderr goes elsewhere: it must name this stream.
        assert choose_format("auto", journal, _journal_environ(other)) == "text"
        assert choose_format("auto", journal, {"JOURNAL_STREAM": "not:numbers"}) == "text"
        assert choose_format("auto", io.StringIO(), {"JOURNAL_STREAM": "1:2"}) == "text"
        assert choose_format("text", journal, _journal_environ(journal)) == "text"


def test_auto_is_json_for_a_service_not_writing_to_a_terminal(tmp_path: Path) -> None:
    service = {"INVOCATION_ID": "5d6f0a8c2b1e4f3a9c7d8e0f1a2b3c4d"}
    with (tmp_path / "service.log").open("w") as redirected:
        assert choose_format("auto", redirected, service) == "json"
        assert choose_format("auto", redirected, {}) == "text"
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as terminal:
            assert terminal.isatty()
            assert choose_format("auto", terminal, service) == "text"
            assert choose_format("json", terminal, {}) == "json"
    finally:
        os.close(leader)


@pytest.mark.usefixtures("restored_logging")
def test_auto_is_text_on_a_plain_stream_without_a_service_manager() -> None:
    handler = configure(verbose=False, stream=io.StringIO(), environ={})
    assert isinstance(handler.formatter, TextFormatter)


# -- configure --------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("restored_logging")
def test_configure_again_replaces_its_handler_and_leaves_others(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    first, second = io.StringIO(), io.StringIO()
    with (tmp_path / "journal").open("w") as journal:
        configure(verbose=False, stream=first, environ={})
        handler = configure(verbose=True, stream=journal, environ=_journal_environ(journal))
        assert [known for known in root.handlers if known not in before] == [handler]
        assert isinstance(handler.formatter, JsonFormatter) and not handler.filters
        assert root.level == logging.DEBUG and logging.getLogger("kafka").level == logging.NOTSET
        handler = configure(verbose=False, format="text", stream=second, environ={})
    assert [known for known in root.handlers if known not in before] == [handler]
    assert [type(limit) for limit in handler.filters] == [RepeatFilter]
    assert root.level == logging.INFO and logging.getLogger("kafka").level == logging.WARNING
    logging.getLogger("streamwatch.test").info("only here")
    assert first.getvalue() == "" and second.getvalue().endswith("streamwatch.test: only here\n")


@pytest.mark.usefixtures("restored_logging")
def test_configure_as_the_cli_calls_it_writes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    handler = configure(verbose=False)
    assert isinstance(handler.formatter, TextFormatter)
    logging.getLogger("streamwatch.test").warning("to stderr", extra={"stream": "s"})
    assert capsys.readouterr().err.endswith("WARNING streamwatch.test: to stderr stream=s\n")
    # Not the stderr of the time of the call: one swapped in since (by a test, say) gets the records.
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    logging.getLogger("streamwatch.test").warning("to the new stderr")
    assert swapped.getvalue().endswith("WARNING streamwatch.test: to the new stderr\n")
