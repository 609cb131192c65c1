"""Is the daemon ready? What /readyz answers and systemd's watchdog relies on.

Ready means: started (the main loop consumes), bootstrapped (no stream group it knows of is still waiting
for its first model), consuming (the loop came round recently: a stuck consumer is not ready), and no
outbound sink stuck (a receiver failing for longer than `sink_stuck_after_s`). The daemon's loop reports
into it; the HTTP thread reads it. Clock injected (monotonic seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from streamwatch.io.sinks import Sink


@runtime_checkable
class DeliveryStatus(Protocol):
    """A sink that can say which of its receivers are failing, and for how long (seconds)."""

    def outages(self) -> list[tuple[str, float]]: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    ready: bool
    reasons: tuple[str, ...]


@dataclass
class Readiness:
    loop_stuck_after_s: float = 60.0
    sink_stuck_after_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    sinks: Callable[[], Sequence[Sink]] = list
    _started: bool = False
    _last_loop: float | None = None
    _waiting: tuple[str, ...] = ()
    _stopping: bool = False

    def loop(self, waiting_groups: Collection[str] = ()) -> None:
        """One turn of the main loop: consuming, with these groups still waiting for a first model."""
        self._started = True
        self._last_loop = self.clock()
        self._waiting = tuple(sorted(waiting_groups))

    def stopping(self) -> None:
        self._stopping = True

    def check(self) -> Verdict:
        reasons: list[str] = []
        if self._stopping:
            reasons.append("stopping")
        if not self._started or self._last_loop is None:
            reasons.append("starting: not consuming yet")
        else:
            idle = self.clock() - self._last_loop
            if idle > self.loop_stuck_after_s:
                reasons.append(f"main loop stuck for {idle:.0f}s")
        if self._waiting:
            reasons.append(f"bootstrapping: no model yet for {', '.join(self._waiting)}")
        for sink in self.sinks():
            if isinstance(sink, DeliveryStatus):
                for receiver, seconds in sink.outages():
                    if seconds > self.sink_stuck_after_s:
                        reasons.append(f"sink stuck: {receiver} failing for {seconds:.0f}s")
        return Verdict(not reasons, tuple(reasons))
