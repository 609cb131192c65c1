"""The alerts a receiver must keep being told about (Alertmanager): every firing alert, and each resolved one
until the receiver has taken its resolution.

A receiver that holds alerts as state (rather than a log of events) is kept in sync by re-sending them: each
row has a version, bumped on every change, and the version the receiver last accepted. Firing rows stay until
resolved; resolved rows leave once accepted (or, after `give_up`, go to the dead letters). The rows survive
a restart, so a resolution decided while the receiver was down still reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamwatch.delivery.store import Store


@dataclass(frozen=True, slots=True)
class Active:
    receiver: str
    fingerprint: str
    alert_id: str
    stream: str
    alert: bytes  # the receiver's JSON for the alert, without its end time
    starts_at: float
    ends_at: float | None  # None while firing
    changed_at: float  # wall clock of the last change: what give_up measures from
    version: int
    sent_version: int

    @property
    def unsent(self) -> bool:
        return self.sent_version < self.version


@dataclass(frozen=True, slots=True)
class Change:
    """A firing alert (ends_at None) or a resolution, for every receiver."""

    fingerprint: str
    alert_id: str
    stream: str
    alert: bytes
    starts_at: float
    ends_at: float | None


_COLUMNS = (
    "receiver, fingerprint, alert_id, stream, alert, starts_at, ends_at, changed_at, version, sent_version"
)


class ActiveAlerts:
    def __init__(self, store: Store) -> None:
        self._store = store

    def apply(self, receivers: Sequence[str], changes: Iterable[Change], now: float) -> int:
        """Record firings and resolutions for each receiver; returns the number of rows changed.

        A resolution also ends every other firing row of its alert (the lower severities an escalation left
        firing), and creates its row when the receiver never had the firing one (it fired before a rebalance,
        on another daemon): telling a receiver an alert it may hold is resolved costs nothing."""
        changed = 0
        with self._store.transaction() as db:
            for change in changes:
                for receiver in receivers:
                    if change.ends_at is not None:
                        cursor = db.execute(
                            "UPDATE active_alerts SET ends_at = ?, changed_at = ?, version = version + 1 "
                            "WHERE receiver = ? AND alert_id = ? AND ends_at IS NULL AND fingerprint != ?",
                            (change.ends_at, now, receiver, change.alert_id, change.fingerprint),
                        )
                        changed += cursor.rowcount
                    cursor = db.execute(
                        f"INSERT INTO active_alerts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 0) "
                        "ON CONFLICT (receiver, fingerprint) DO UPDATE SET alert = excluded.alert, "
                        "alert_id = excluded.alert_id, starts_at = excluded.starts_at, "
                        "ends_at = excluded.ends_at, changed_at = excluded.changed_at, "
                        "version = active_alerts.version + 1",
                        (
                            receiver,
                            change.fingerprint,
                            change.alert_id,
                            change.stream,
                            change.alert,
                            change.starts_at,
                            change.ends_at,
                            now,
                        ),
                    )
                    changed += cursor.rowcount
        return changed

    def of(self, receiver: str, *, unsent_only: bool = False) -> list[Active]:
        """The receiver's rows (only those it has not taken in their latest version, if `unsent_only`)."""
        where = "receiver = ?" + (" AND sent_version < version" if unsent_only else "")
        with self._store.transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM active_alerts WHERE {where} ORDER BY starts_at, fingerprint",
                (receiver,),
            ).fetchall()
        return [Active(*row) for row in rows]

    def unsent(self, receiver: str) -> int:
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM active_alerts WHERE receiver = ? AND sent_version < version",
                (receiver,),
            ).fetchone()
        return int(row[0])

    def sent(self, receiver: str, accepted: Iterable[tuple[str, int]]) -> int:
        """The receiver accepted these (fingerprint, version) pairs: resolved rows it now holds leave.
        Returns how many of them were news to it (not a mere re-send)."""
        news = 0
        with self._store.transaction() as db:
            for fingerprint, version in accepted:
                cursor = db.execute(
                    "UPDATE active_alerts SET sent_version = version "
                    "WHERE receiver = ? AND fingerprint = ? AND version = ? AND sent_version < version",
                    (receiver, fingerprint, version),
                )
                news += cursor.rowcount
            db.execute(
                "DELETE FROM active_alerts WHERE receiver = ? AND ends_at IS NOT NULL "
                "AND sent_version = version",
                (receiver,),
            )
        return news

    def give_up(self, receiver: str, changed_before: float) -> list[Active]:
        """Remove and return the receiver's unsent resolutions recorded before `changed_before` (wall clock:
        how long they have waited, whatever the event time of the data)."""
        with self._store.transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM active_alerts WHERE receiver = ? AND ends_at IS NOT NULL "
                "AND changed_at < ? AND sent_version < version",
                (receiver, changed_before),
            ).fetchall()
            db.executemany(
                "DELETE FROM active_alerts WHERE receiver = ? AND fingerprint = ?",
                [(row[0], row[1]) for row in rows],
            )
        return [Active(*row) for row in rows]

    def release(self, streams: Iterable[str] | None) -> int:
        """Stop re-sending the firing alerts of these streams (None: of all streams), which another daemon,
        or a restarted one that restored them, speaks for now; resolutions still waiting stay. Returns how
        many rows left."""
        with self._store.transaction() as db:
            if streams is None:
                return db.execute("DELETE FROM active_alerts WHERE ends_at IS NULL").rowcount
            cursor = db.executemany(
                "DELETE FROM active_alerts WHERE stream = ? AND ends_at IS NULL",
                [(name,) for name in streams],
            )
            return cursor.rowcount
