"""Logging set-up shared by the verbs: one format, and no floods from client libraries.

kafka-python logs every failed connection attempt and metadata refresh; a broker that is down for a minute
produced hundreds of identical ERROR lines. `RepeatFilter` lets the first of a kind through and then one
summary per interval, so an outage reads as a handful of lines that still say how often it happened.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Pass a (logger, level, message template) once per `interval_s`; the next one passed says how many
    were held back meanwhile. Only loggers under `prefixes` are limited."""

    def __init__(
        self,
        prefixes: tuple[str, ...],
        *,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held and last is not None:
            record.msg = f"{record.msg} ({held} more like this in the last {now - last:.0f}s)"
        return True


def configure(*, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    if not verbose:
        handler.addFilter(RepeatFilter(("kafka",)))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        # kafka-python narrates every connection and rebalance at INFO; its warnings and errors still show.
        logging.getLogger("kafka").setLevel(logging.WARNING)
