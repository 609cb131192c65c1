"""Raw application log lines from per-interval level counts, so log streams can be tested end to end.

`render_log_lines` turns the `logs` domain (counts per minute by level) into the lines an application would
have written: one line per event at a random moment inside its minute, in time order, with the level word,
a logger name and a message, and a stack trace under some errors (continuation lines, as real logs have).
Reading them back through the log codec gives the counts again.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from streamwatch.generate.simulate import Series
from streamwatch.records import iso_utc

_LEVEL_WORDS = {"debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR", "critical": "CRITICAL"}
_LOGGERS = ("http.server", "db.pool", "auth", "cache", "billing.worker")
_MESSAGES = {
    "debug": "cache lookup key=user:{n} hit={hit}",
    "info": "GET /api/v1/items/{n} 200 {ms}ms",
    "warn": "slow query took {ms}ms (threshold 500ms)",
    "error": "request failed: upstream timeout after {ms}ms",
    "critical": "connection pool exhausted ({n} waiting)",
}


def render_log_lines(series: Series, rng: np.random.Generator, *, trace_share: float = 0.3) -> Iterator[str]:
    """Lines for a `logs`-domain series (channels include the five level counts), in time order."""
    levels = [name for name in _LEVEL_WORDS if name in series.channels]
    columns = [series.channels.index(name) for name in levels]
    interval = 1.0 / series.rate_hz
    for ts, row in zip(series.timestamps, series.values, strict=True):
        events: list[tuple[float, str]] = []
        for level, column in zip(levels, columns, strict=True):
            count = round(float(row[column]))
            events.extend((float(ts) + float(offset), level) for offset in rng.uniform(0, interval, count))
        events.sort()
        for moment, level in events:
            yield _line(moment, level, rng)
            if level in ("error", "critical") and rng.random() < trace_share:
                yield "Traceback (most recent call last):"
                yield '  File "service.py", line 42, in handle'
                yield "TimeoutError: upstream did not answer"


def _line(moment: float, level: str, rng: np.random.Generator) -> str:
    logger = _LOGGERS[int(rng.integers(len(_LOGGERS)))]
    message = _MESSAGES[level].format(
        n=int(rng.integers(1, 10_000)), ms=int(rng.integers(5, 3000)), hit=bool(rng.integers(2))
    )
    return f"{iso_utc(moment)} {_LEVEL_WORDS[level]} [{logger}] {message}"
