"""Events waiting for a receiver, in order per lane, each delivered at most once per idempotency key.

An event is queued under (receiver, key); queuing a key the receiver already has (pending, or delivered
within the remembered span) does nothing, so an event replayed after a crash is not sent twice. A *lane*
(the stream) orders a receiver's events: only the oldest pending event of a lane is ever due, so a receiver
sees each stream's firing before its resolved even through retries, while other lanes go on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamwatch.delivery.store import Store


@dataclass(frozen=True, slots=True)
class Queued:
    """One event to queue: its idempotency key, its lane and the request body."""

    key: str
    lane: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Pending:
    """An event waiting for its receiver."""

    seq: int
    receiver: str
    key: str
    lane: str
    body: bytes
    queued_at: float
    attempts: int
    last_error: str | None


class Outbox:
    def __init__(self, store: Store) -> None:
        self._store = store

    def put(self, receiver: str, events: Iterable[Queued], now: float) -> int:
        """Queue events for `receiver` (in the given order); returns how many were new."""
        rows = [(receiver, event.key, event.lane, event.body, now, now) for event in events]
        if not rows:
            return 0
        with self._store.transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO events (receiver, key, lane, body, queued_at, next_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before

    def due(self, receiver: str, now: float, limit: int = 100) -> list[Pending]:
        """The head event of each of the receiver's lanes whose next attempt is due, oldest first."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT e.seq, e.receiver, e.key, e.lane, e.body, e.queued_at, e.attempts, e.last_error "
                "FROM events e JOIN (SELECT lane, MIN(seq) AS head FROM events "
                "WHERE receiver = ? AND delivered_at IS NULL GROUP BY lane) h ON e.seq = h.head "
                "WHERE e.next_at <= ? ORDER BY e.seq LIMIT ?",
                (receiver, now, limit),
            ).fetchall()
        return [Pending(*row) for row in rows]

    def next_due(self, receiver: str) -> float | None:
        """When the earliest lane head of the receiver is due (None: nothing pending)."""
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT MIN(e.next_at) FROM events e JOIN (SELECT lane, MIN(seq) AS head FROM events "
                "WHERE receiver = ? AND delivered_at IS NULL GROUP BY lane) h ON e.seq = h.head",
                (receiver,),
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivered(self, seq: int, now: float) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE events SET delivered_at = ?, body = x'' WHERE seq = ?", (now, seq))

    def failed(self, seq: int, *, error: str, retry_at: float) -> None:
        with self._store.transaction() as db:
            db.execute(
                "UPDATE events SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE seq = ?",
                (error, retry_at, seq),
            )

    def given_up(self, seq: int, now: float) -> None:
        """Out of the queue (it went to the dead letters); its key stays remembered like a delivered one."""
        self.delivered(seq, now)

    def pending(self, receiver: str) -> int:
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM events WHERE receiver = ? AND delivered_at IS NULL", (receiver,)
            ).fetchone()
        return int(row[0])

    def forget_delivered(self, before: float) -> int:
        """Drop the keys of events delivered (or given up) before `before`; returns how many."""
        with self._store.transaction() as db:
            cursor = db.execute(
                "DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at < ?", (before,)
            )
            return cursor.rowcount
