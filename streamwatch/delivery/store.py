"""The outbox database: one SQLite file (write-ahead log), one connection shared by the daemon's thread and
the delivery threads, serialised by a lock.

SQLite rather than hand-written journal files: atomic, crash-safe commits and indexed queries for free, in
the standard library. Every statement here is small (one batch's events, one receiver's due heads), so one
lock costs nothing measurable next to the HTTP calls it feeds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    key TEXT NOT NULL,
    lane TEXT NOT NULL,
    body BLOB NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    UNIQUE (receiver, key)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (receiver, lane, seq) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS events_delivered ON events (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS active_alerts (
    receiver TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    alert BLOB NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL,
    changed_at REAL NOT NULL,
    version INTEGER NOT NULL,
    sent_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (receiver, fingerprint)
);
"""


class StoreError(OSError):
    """The outbox database cannot be opened or written (disk full, permissions, corruption)."""


class Store:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # WAL: readers never wait for the writer, and a commit survives the process dying (NORMAL syncs at
            # checkpoints; a power cut may lose the last commits, a crash does not).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the outbox {path}: {error}") from None
        self.path = path
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                raise StoreError(f"outbox {self.path}: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
