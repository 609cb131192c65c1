from __future__ import annotations

import logging

from streamwatch.logs import RepeatFilter


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
