"""InfluxDB sink: window scores, alert transitions, data-quality events and detector health as points.

`emit` only formats the points and queues them; a background thread writes them in batches. While InfluxDB
cannot be reached the points wait in a bounded buffer and go out once it is back; what cannot be kept (the
buffer full, the server refusing the data, a value line protocol cannot carry) is counted and logged.

Writes go to the v2 write API (/api/v2/write) through influxdb-client, which InfluxDB 1.8 (its compatibility
API), 2.x and 3.x all serve; `PointWriter` is the seam, and its errors are the only ones the sink sees.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import urllib3

from streamwatch.config import InfluxSinkConfig
from streamwatch.delivery.backoff import Backoff
from streamwatch.delivery.http import retry_after_seconds, retryable_status
from streamwatch.delivery.metrics import SinkMetrics, sink_metrics
from streamwatch.delivery.secrets import read_secret
from streamwatch.io.line_protocol import (
    UnwritableValueError,
    alert_line,
    health_line,
    quality_line,
    score_line,
)
from streamwatch.io.sinks import GroupHealth
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore

log = logging.getLogger(__name__)

RETRY_BACKOFF = Backoff(initial_s=1.0, max_s=30.0)
_MAX_BODY_IN_ERROR = 200

Record = TypeVar("Record")


class InfluxError(Exception):
    """A write that did not succeed."""


class InfluxUnavailableError(InfluxError):
    """Try again later (unreachable, timed out, 5xx, 429): the points are kept."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InfluxMisconfiguredError(InfluxUnavailableError):
    """Refused in a way only a configuration fix cures (401, 403, 404). Kept and retried all the same: once
    the configuration is corrected the held points still go out."""

    def __init__(self, message: str, *, settings: tuple[str, ...]) -> None:
        super().__init__(message)
        self.settings = settings


class InfluxRejectedError(InfluxError):
    """The server refused the data itself (400, 413, 422...): sending it again would fail the same way."""


class PointWriter(Protocol):
    def write(self, payload: bytes) -> None:
        """Write newline-separated line-protocol points with nanosecond timestamps, or raise InfluxError."""
        ...

    def close(self) -> None: ...


class ClientWriter:
    """`PointWriter` over influxdb-client's synchronous write API, with the client's own retries off (the
    sink's buffer retries) and its exceptions translated into the InfluxError kinds."""

    def __init__(self, *, url: str, token: str, org: str, bucket: str, timeout_s: float) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._bucket = bucket
        self._org = org
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=round(timeout_s * 1000), retries=False
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, payload: bytes) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(bucket=self._bucket, org=self._org, record=payload)
        except ApiException as error:
            body = error.body if isinstance(error.body, bytes | str) else b""
            retry_after = error.headers.get("Retry-After") if error.headers else None
            raise _status_error(
                error.status or 0, body, retry_after, org=self._org, bucket=self._bucket
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # With retries off urllib3 raises the cause itself (refused, timed out, reset), not MaxRetryError.
            raise InfluxUnavailableError(str(error)) from None

    def close(self) -> None:
        # The synchronous write API holds nothing of its own: closing the client closes its connections.
        self._client.close()  # type: ignore[no-untyped-call]


def _status_error(
    status: int, body: bytes | str, retry_after: str | None, *, org: str, bucket: str
) -> InfluxError:
    """The InfluxError for a non-2xx answer to a write."""
    text = body if isinstance(body, str) else body.decode("utf-8", "replace")
    message = f"HTTP {status}" + (f": {text.strip()[:_MAX_BODY_IN_ERROR]}" if text.strip() else "")
    if status == 401:
        return InfluxMisconfiguredError(f"{message} (the token was not accepted)", settings=("token",))
    if status == 403:
        return InfluxMisconfiguredError(
            f"{message} (the token may not write to {bucket!r})", settings=("token",)
        )
    if status == 404:
        return InfluxMisconfiguredError(
            f"{message} (no bucket {bucket!r} in org {org!r}; on 1.8: database/retention_policy)",
            settings=("org", "bucket"),
        )
    if retryable_status(status):
        return InfluxUnavailableError(message, retry_after_s=retry_after_seconds(retry_after))
    return InfluxRejectedError(message)


class InfluxSink:
    """The `Sink` and `HealthSink` that writes to InfluxDB; see the module docstring.

    Batches of `batch_points` go out every `flush_interval_s`, or as soon as a batch is full. While InfluxDB
    is unavailable the batch is retried with jittered exponential backoff and new points keep queueing; past
    `buffer_points` the oldest are dropped. `close` waits up to `close_timeout_s` for the queue to drain.
    `clock` (monotonic seconds) times the interval, the backoff and the flush deadline; `rng` draws the
    backoff's jitter.
    """

    def __init__(
        self,
        config: InfluxSinkConfig,
        *,
        key: str = "sinks.influxdb",
        writer: PointWriter | None = None,
        metrics: SinkMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        backoff: Backoff = RETRY_BACKOFF,
    ) -> None:
        self._config = config
        self._key = key
        self._writer = writer if writer is not None else _client_writer(config, key)
        self._metrics = (metrics if metrics is not None else sink_metrics()).receiver("influxdb", config.url)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._backoff = backoff
        self._changed = threading.Condition()
        # Everything below is guarded by `_changed`.
        self._lines: deque[str] = deque()
        self._inflight = 0  # lines taken by the writer thread and not settled yet
        self._next_flush_at = clock() + config.flush_interval_s
        self._retry_at = 0.0
        self._failures = 0  # consecutive failed attempts: the outage's length in tries
        self._down_since: float | None = None
        self._failing_with: type[InfluxUnavailableError] | None = None
        self._draining = 0  # callers waiting in `flush`: send everything now
        self._accepting = True
        self._stopped = False
        self._overflowing = False
        self._rejecting = False
        self._dropped_since_delivery = 0
        self._reported: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=f"influx-{config.url}", daemon=True)
        self._thread.start()

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        lines = self._encoded(scores, score_line) if self._config.scores else []
        lines += self._encoded(alerts, alert_line)
        lines += self._encoded(quality, quality_line)
        self._enqueue(lines)

    def health(self, figures: Sequence[GroupHealth]) -> None:
        self._enqueue(self._encoded(figures, health_line))

    def _encoded(self, records: Iterable[Record], encode: Callable[[Record], str]) -> list[str]:
        lines: list[str] = []
        for record in records:
            try:
                lines.append(encode(record))
            except UnwritableValueError as error:
                self._unwritable(error)
        return lines

    def _unwritable(self, error: UnwritableValueError) -> None:
        self._metrics.dropped()
        message = str(error)
        with self._changed:
            first = message not in self._reported
            self._reported.add(message)
        if first:
            log.error("InfluxDB %s: cannot write a point, dropped (and any like it): %s", self._url, message)

    def _enqueue(self, lines: list[str]) -> None:
        if not lines:
            return
        with self._changed:
            if not self._accepting:
                queued = None
            else:
                before = len(self._lines)
                # More new lines than the whole buffer holds: the oldest of them go too.
                skip = max(0, len(lines) - self._config.buffer_points)
                dropped = self._make_room(len(lines) - skip) + skip
                self._lines.extend(lines[skip:] if skip else lines)
                overflow_began = self._note_overflow(dropped)
                queued = len(self._lines) + self._inflight
                # Wake the writer when there is something to send, or a full batch, not on every emit.
                if before == 0 or before < self._config.batch_points <= len(self._lines):
                    self._changed.notify_all()
        if queued is None:
            self._metrics.dropped(len(lines))
            log.error("InfluxDB %s: %d points emitted after close, dropped", self._url, len(lines))
            return
        self._overflowed(dropped, overflow_began)
        self._metrics.queued(queued)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._writer.write("\n".join(batch).encode())
            except InfluxUnavailableError as error:
                self._kept(batch, error)
            except InfluxRejectedError as error:
                self._rejected(len(batch), str(error))
            except Exception as error:  # a writer bug must not end the thread, nor be retried for ever
                log.exception("InfluxDB %s: writer failed unexpectedly", self._url)
                self._rejected(len(batch), f"unexpected {type(error).__name__}: {error}")
            else:
                self._delivered(len(batch))

    def _next_batch(self) -> list[str] | None:
        """Wait until a batch is due and take it (oldest first); None once the sink is stopped."""
        with self._changed:
            while not self._stopped:
                now = self._clock()
                wait = self._seconds_until_due(now)
                if wait is not None and wait <= 0:
                    if now >= self._next_flush_at:
                        self._next_flush_at = now + self._config.flush_interval_s
                    size = min(self._config.batch_points, len(self._lines))
                    self._inflight = size
                    return [self._lines.popleft() for _ in range(size)]
                self._changed.wait(wait)
            return None

    def _seconds_until_due(self, now: float) -> float | None:
        """Seconds until the next batch should go (0 or less: now); None: nothing to send."""
        if not self._lines:
            return None
        if now < self._retry_at:
            return self._retry_at - now
        if self._failures or self._draining or len(self._lines) >= self._config.batch_points:
            return 0.0
        return self._next_flush_at - now

    def _delivered(self, count: int) -> None:
        with self._changed:
            if self._stopped:  # `close` gave up on this batch and counted it
                return
            self._inflight = 0
            recovered_after = None if self._down_since is None else self._clock() - self._down_since
            dropped_since_delivery, self._dropped_since_delivery = self._dropped_since_delivery, 0
            self._failures, self._down_since, self._retry_at, self._failing_with = 0, None, 0.0, None
            self._overflowing = self._rejecting = False
            queued = len(self._lines)
            self._changed.notify_all()
        self._metrics.delivered(count)
        self._metrics.queued(queued)
        if recovered_after is not None:
            log.info(
                "InfluxDB %s: reachable again after %.1fs; delivering %d held points%s",
                self._url,
                recovered_after,
                queued + count,
                f" ({dropped_since_delivery} oldest dropped: buffer full)" if dropped_since_delivery else "",
            )

    def _kept(self, batch: list[str], error: InfluxUnavailableError) -> None:
        """Put the batch back in front and wait out the backoff (or the server's Retry-After)."""
        with self._changed:
            if self._stopped:
                return
            now = self._clock()
            self._inflight = 0
            self._lines.extendleft(reversed(batch))
            dropped = self._make_room(0)
            overflow_began = self._note_overflow(dropped)
            self._failures += 1
            if self._down_since is None:
                self._down_since = now
            # Logged when an outage begins and when its cause changes kind (say, from unreachable to a
            # refused token), not on every retry.
            news = type(error) is not self._failing_with
            self._failing_with = type(error)
            delay = self._backoff.delay(self._failures, self._rng, at_least=error.retry_after_s or 0.0)
            self._retry_at = now + delay
            queued = len(self._lines)
            self._changed.notify_all()
        self._metrics.retried()
        self._metrics.queued(queued)
        self._overflowed(dropped, overflow_began)
        if news:
            self._log_outage(error, queued)

    def _log_outage(self, error: InfluxUnavailableError, queued: int) -> None:
        if isinstance(error, InfluxMisconfiguredError):
            settings = " and ".join(f"{self._key}.{name}" for name in error.settings)
            log.error(
                "InfluxDB %s refused the write: %s; check %s (%d points held and retried meanwhile)",
                self._url,
                error,
                settings,
                queued,
            )
        else:
            log.warning(
                "InfluxDB %s unavailable (%s); holding %d points and retrying with backoff",
                self._url,
                error,
                queued,
            )

    def _rejected(self, count: int, reason: str) -> None:
        with self._changed:
            if self._stopped:
                return
            self._inflight = 0
            first_of_burst = not self._rejecting
            self._rejecting = True
            # The server answered, so a held backlog need not wait out a backoff.
            self._failures, self._retry_at, self._failing_with = 0, 0.0, None
            queued = len(self._lines)
            self._changed.notify_all()
        self._metrics.dropped(count)
        self._metrics.queued(queued)
        if first_of_burst:
            log.error(
                "InfluxDB %s rejected a batch of %d points, dropped (further rejections are counted, not "
                "logged, until a batch succeeds): %s",
                self._url,
                count,
                reason,
            )

    def _make_room(self, incoming: int) -> int:
        """Drop the oldest queued lines so that `incoming` more fit the buffer; returns how many were dropped.

        The batch being written is outside the bound until it settles (so the buffer may briefly hold one
        batch more): dropping from it mid-write would count points the server may be taking. If it fails it
        comes back in front, the oldest, and is trimmed first; what is kept is always the newest."""
        excess = len(self._lines) + incoming - self._config.buffer_points
        if excess <= 0:
            return 0
        dropped = min(excess, len(self._lines))
        for _ in range(dropped):
            self._lines.popleft()
        return dropped

    def _note_overflow(self, dropped: int) -> bool:
        """Count `dropped` oldest points (lock held); True when they begin a burst of drops, to log once."""
        self._dropped_since_delivery += dropped
        began = dropped > 0 and not self._overflowing
        self._overflowing = self._overflowing or dropped > 0
        return began

    def _overflowed(self, dropped: int, began: bool) -> None:
        if dropped:
            self._metrics.dropped(dropped)
        if began:
            log.warning(
                "InfluxDB %s: buffer of %d points full; dropping the oldest until deliveries catch up",
                self._url,
                self._config.buffer_points,
            )

    def outages(self) -> list[tuple[str, float]]:
        with self._changed:
            down_since = self._down_since
        return [] if down_since is None else [(self._url, self._clock() - down_since)]

    def flush(self, timeout_s: float) -> bool:
        """Send everything queued now, without waiting for the interval; True when the queue emptied within
        `timeout_s`. A held backlog is retried at once, then with backoff."""
        deadline = self._clock() + timeout_s
        with self._changed:
            self._draining += 1
            self._retry_at = min(self._retry_at, self._clock())
            self._changed.notify_all()
            try:
                while self._lines or self._inflight:
                    remaining = deadline - self._clock()
                    if remaining <= 0 or self._stopped:
                        return False
                    self._changed.wait(remaining)
                return True
            finally:
                self._draining -= 1

    def close(self) -> None:
        """Stop taking points, deliver what is queued within `close_timeout_s`, count the rest as dropped,
        close the client. Calling it again does nothing."""
        with self._changed:
            if not self._accepting:
                return
            self._accepting = False
        self.flush(self._config.close_timeout_s)
        with self._changed:
            self._stopped = True
            left = len(self._lines) + self._inflight
            self._lines.clear()
            self._inflight = 0
            self._changed.notify_all()
        if left:
            self._metrics.dropped(left)
            log.error(
                "InfluxDB %s: %d points not delivered within %.0fs of closing, dropped",
                self._url,
                left,
                self._config.close_timeout_s,
            )
        self._metrics.queued(0)
        try:
            self._writer.close()
        except Exception:  # closing must not fail the daemon's shutdown
            log.exception("InfluxDB %s: closing the client failed", self._url)

    @property
    def _url(self) -> str:
        return self._config.url


def _client_writer(config: InfluxSinkConfig, key: str) -> ClientWriter:
    token = "" if config.token is None else read_secret(config.token, key=f"{key}.token")
    return ClientWriter(
        url=config.url, token=token, org=config.org, bucket=config.bucket, timeout_s=config.timeout_s
    )
