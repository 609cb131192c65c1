"""The delivery dead-letter file: events a receiver never took (retries exhausted or refused), one JSON line
each with the receiver, the reason and the event itself, so nothing given up on is lost."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson

from streamwatch.records import iso_utc


class UndeliveredFile:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab")
        # Every receiver's delivery thread writes here.
        self._lock = threading.Lock()

    def put(
        self, *, receiver: str, key: str, reason: str, attempts: int, queued_at: float, event: Any
    ) -> None:
        line = orjson.dumps(
            {
                "receiver": receiver,
                "key": key,
                "reason": reason,
                "attempts": attempts,
                "queued_at": iso_utc(queued_at),
                "event": event,
            }
        )
        with self._lock:
            self._file.write(line + b"\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
