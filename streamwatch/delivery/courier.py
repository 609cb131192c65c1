"""Delivering one receiver's queue: each due lane head is sent; a success is remembered, a retryable failure
waits its backoff, and an event refused outright or still failing after `give_up_after_s` goes to the
dead-letter file, letting its lane go on. Clock and randomness are passed in; `DeliveryThread` runs the
rounds in the background so a slow or dead receiver holds up nothing but itself."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from streamwatch.delivery.backoff import Backoff
from streamwatch.delivery.http import DeliveryError
from streamwatch.delivery.metrics import ReceiverMetrics
from streamwatch.delivery.outbox import Outbox, Pending
from streamwatch.delivery.undelivered import UndeliveredFile

log = logging.getLogger(__name__)

# How long a delivery thread sleeps when nothing is due and nothing wakes it: the bound on noticing an event
# whose wake-up was missed.
IDLE_S = 5.0
# After the drain, how long a request in flight may still take before the thread is left behind.
_HALT_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff: Backoff = field(default_factory=Backoff)
    give_up_after_s: float = 24 * 3600.0


class OutboxCourier:
    def __init__(
        self,
        outbox: Outbox,
        receiver: str,
        send: Callable[[Pending], None],
        *,
        retry: RetryPolicy,
        undelivered: UndeliveredFile,
        metrics: ReceiverMetrics,
        rng: random.Random,
    ) -> None:
        self._outbox = outbox
        self.receiver = receiver
        self._send = send
        self._retry = retry
        self._undelivered = undelivered
        self.metrics = metrics
        self._rng = rng
        self._down_since: float | None = None
        # A receiver that did not answer at all waits as a whole (it would fail every lane alike: one probe
        # per backoff step, not one per lane); an error answer only holds back its own lane.
        self._paused_until = 0.0

    def failing_for(self, now: float) -> float | None:
        """Seconds since the receiver last failed without a success since (None: it is not failing)."""
        return None if self._down_since is None else now - self._down_since

    def round(self, now: float, stop: threading.Event | None = None) -> float | None:
        """Send what is due at `now`, lane heads again as long as heads leave the queue; returns when the
        next event is due (None: the queue is empty)."""
        if now < self._paused_until:
            return self._paused_until
        moved = True
        while moved and now >= self._paused_until and not (stop is not None and stop.is_set()):
            moved = False
            for event in self._outbox.due(self.receiver, now):
                if (stop is not None and stop.is_set()) or now < self._paused_until:
                    break
                moved |= self._attempt(event, now)
        self.metrics.queued(self._outbox.pending(self.receiver))
        next_due = self._outbox.next_due(self.receiver)
        return None if next_due is None else max(next_due, self._paused_until)

    def _attempt(self, event: Pending, now: float) -> bool:
        """Try one event; True if it left the queue (delivered or given up)."""
        try:
            self._send(event)
        except DeliveryError as error:
            return self._failed(event, error, now)
        self._outbox.delivered(event.seq, now)
        self.metrics.delivered()
        self._paused_until = 0.0
        if self._down_since is not None:
            log.info("%s: delivering again after %.0fs", self.receiver, now - self._down_since)
            self._down_since = None
        return True

    def _failed(self, event: Pending, error: DeliveryError, now: float) -> bool:
        reason = str(error)
        if not error.retryable:
            self._give_up(event, f"refused: {reason}", now)
            return True
        if now - event.queued_at >= self._retry.give_up_after_s:
            self._give_up(event, f"still failing after {now - event.queued_at:.0f}s: {reason}", now)
            return True
        if self._down_since is None:
            self._down_since = now
            log.warning("%s: delivery failed, retrying with backoff: %s", self.receiver, reason)
        wait = self._retry.backoff.delay(event.attempts + 1, self._rng, at_least=error.retry_after_s or 0.0)
        self._outbox.failed(event.seq, error=reason, retry_at=now + wait)
        if error.unreachable:
            self._paused_until = now + wait
        self.metrics.retried()
        return False

    def _give_up(self, event: Pending, reason: str, now: float) -> None:
        log.error("%s: event %s goes to the dead letters: %s", self.receiver, event.key, reason)
        self._undelivered.put(
            receiver=self.receiver,
            key=event.key,
            reason=reason,
            attempts=event.attempts + 1,
            queued_at=event.queued_at,
            event=orjson.loads(event.body),
        )
        self._outbox.given_up(event.seq, now)
        self.metrics.dead_lettered()


class DeliveryThread:
    """Runs `round_(now, halt)` whenever woken or due, until stopped; one thread per receiver. A round
    returns when it next has work (None: only when woken) and gives up mid-way once `halt` is set."""

    def __init__(
        self,
        name: str,
        round_: Callable[[float, threading.Event], float | None],
        clock: Callable[[], float],
        *,
        idle_s: float = IDLE_S,
    ) -> None:
        self._round = round_
        self._clock = clock
        self._idle_s = idle_s
        self._wake = threading.Event()
        self._stopping = threading.Event()  # finish what is due now, then end
        self._halt = threading.Event()  # end now
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, drain_s: float) -> bool:
        """Deliver what is due now (a receiver that answers gets the last events) for up to `drain_s`, then
        end; False if a request was still in flight after a further grace period (it stays queued)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.ident is None:  # never started
            return True
        self._thread.join(drain_s)
        self._halt.set()
        self._thread.join(_HALT_GRACE_S)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._halt.is_set():
            self._wake.clear()
            try:
                next_due = self._round(self._clock(), self._halt)
            except Exception:
                # A failed round must not end the thread (the outbox keeps the events): log, pause, go on.
                log.exception("%s: delivery round failed", self._thread.name)
                next_due = None
            wait = self._idle_s if next_due is None else min(self._idle_s, next_due - self._clock())
            if self._stopping.is_set() and wait > 0:
                return  # nothing more is due now: what waits stays queued for the next start
            if wait > 0:
                self._wake.wait(wait)
