from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore
from streamwatch.service.health import Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FailingSink:
    """A sink whose receiver has been failing for `seconds` (None: healthy)."""

    seconds: float | None = None

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        pass

    def close(self) -> None:
        pass

    def outages(self) -> list[tuple[str, float]]:
        return [] if self.seconds is None else [("http://hooks.test", self.seconds)]


def test_ready_only_once_consuming_bootstrapped_and_no_sink_stuck() -> None:
    clock, sink = Clock(), FailingSink()
    readiness = Readiness(loop_stuck_after_s=60, sink_stuck_after_s=300, clock=clock, sinks=lambda: [sink])
    assert readiness.check().reasons == ("starting: not consuming yet",)
    readiness.loop(waiting_groups=["voltage"])
    assert readiness.check().reasons == ("bootstrapping: no model yet for voltage",)
    readiness.loop()
    assert readiness.check().ready
    sink.seconds = 200.0  # failing, but not for long: retries are normal
    assert readiness.check().ready
    sink.seconds = 301.0
    assert readiness.check().reasons == ("sink stuck: http://hooks.test failing for 301s",)
    sink.seconds = None
    clock.now += 61
    assert readiness.check().reasons == ("main loop stuck for 61s",)
    readiness.loop()
    readiness.stopping()
    assert not readiness.check().ready and readiness.check().reasons == ("stopping",)
