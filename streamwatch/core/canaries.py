"""Canaries: the daemon watching its own eyesight.

Every so often (event time) copies of live normal windows get a generator-injected anomaly and are scored
on the side, by the live model with each stream's live threshold and level reference. A canary is caught
when the injected copy exceeds the threshold and the clean copy does not: a detector that flags everything
sees nothing. Canaries are never published as alerts and never learned from.

The hit rate is kept per stream group for the model version now live (a swap starts a new record) and per
stream; a group whose rate falls below the floor is degraded.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from streamwatch.core.probes import PROBE_KINDS


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    enabled: bool = True
    every_s: float = 600.0  # event time between canary rounds of a group
    per_stream: int = 8  # canaries per stream and round
    max_streams: int = 16  # streams per round (taken in turn in a large group)
    memory: int = 48  # outcomes per group the hit rate is computed over
    min_canaries: int = 32  # outcomes needed under a version before judging it
    # Degraded: a hit rate below `relative_floor` x the group's usual rate (how well its models have seen so
    # far), by more than chance; or below `floor`, an absolute minimum an operator may set. Eyesight differs
    # by domain and data (a conv AE catches ~80% of severity-1 canaries on generated voltage, ~65% on grid
    # frequency, 10-50% on some NAB series), so a fixed floor alone is either blind or pages for nothing.
    floor: float = 0.0
    relative_floor: float = 0.7
    rollback: bool = True
    severity: float = 1.0
    kinds: tuple[str, ...] = PROBE_KINDS

    def __post_init__(self) -> None:
        if not self.every_s > 0:
            raise ValueError(f"every_s must be > 0, got {self.every_s}")
        if self.per_stream < 1 or self.max_streams < 1:
            raise ValueError("per_stream and max_streams must be >= 1")
        if self.min_canaries < 1 or self.memory < self.min_canaries:
            raise ValueError(f"memory ({self.memory}) must be >= min_canaries ({self.min_canaries}) >= 1")
        if not 0.0 <= self.floor <= 1.0 or not 0.0 <= self.relative_floor <= 1.0:
            raise ValueError(
                f"floor and relative_floor must be in [0, 1], got {self.floor} and {self.relative_floor}"
            )


# How fast a group's usual hit rate follows each judged round.
_BASELINE_WEIGHT = 0.1
# A shortfall counts when it is this many standard errors of a hit rate (binomial) away: with a few dozen
# canaries a rate moves by ten points by chance alone.
_Z = 2.5


@dataclass(slots=True)
class GroupEyesight:
    """Canary outcomes of one group under its live version."""

    version: str
    outcomes: deque[bool]
    per_stream: dict[str, deque[bool]] = field(default_factory=dict)
    degraded_since: float | None = None
    # The version's predecessor's last hit rate and how many canaries it rests on, when it went live by a
    # swap (None: nothing to go back to).
    previous_rate: float | None = None
    previous_count: int = 0

    @property
    def rate(self) -> float | None:
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else None

    def stream_rate(self, stream: str) -> float | None:
        outcomes = self.per_stream.get(stream)
        return sum(outcomes) / len(outcomes) if outcomes else None


class CanaryTracker:
    def __init__(self, config: CanaryConfig) -> None:
        self.config = config
        self._groups: dict[str, GroupEyesight] = {}
        self._usual: dict[str, float] = {}

    def group(self, group: str) -> GroupEyesight | None:
        return self._groups.get(group)

    def usual_rate(self, group: str) -> float | None:
        return self._usual.get(group)

    def floor_of(self, group: str) -> float:
        """The hit rate below which `group` counts as degraded."""
        usual = self._usual.get(group)
        relative = 0.0 if usual is None else self.config.relative_floor * usual
        return max(self.config.floor, relative)

    def went_live(self, group: str, version: str, *, swapped: bool) -> None:
        """A version went live; `swapped` when it replaced a live version (so it may be rolled back)."""
        before = self._groups.get(group)
        previous_rate: float | None = None
        previous_count = 0
        if swapped and before is not None:
            if len(before.outcomes) >= self.config.min_canaries:
                previous_rate, previous_count = before.rate, len(before.outcomes)
            else:
                # A predecessor no canary judged yet is taken to have seen as the group usually does.
                previous_rate = self._usual.get(group, 1.0)
                previous_count = self.config.memory
        self._groups[group] = GroupEyesight(
            version,
            deque(maxlen=self.config.memory),
            previous_rate=previous_rate,
            previous_count=previous_count,
        )

    def record(self, group: str, stream: str, caught: list[bool]) -> None:
        eyesight = self._groups[group]
        eyesight.outcomes.extend(caught)
        own = eyesight.per_stream.setdefault(stream, deque(maxlen=self.config.memory))
        own.extend(caught)
        rate = eyesight.rate
        if self.judged(group) and rate is not None and not self.below_floor(group):
            usual = self._usual.get(group)
            self._usual[group] = rate if usual is None else usual + _BASELINE_WEIGHT * (rate - usual)

    def judged(self, group: str) -> bool:
        eyesight = self._groups.get(group)
        return eyesight is not None and len(eyesight.outcomes) >= self.config.min_canaries

    def below_floor(self, group: str) -> bool:
        """Whether the live version sees clearly worse than the group's models usually do (or than the
        configured absolute floor)."""
        eyesight = self._groups.get(group)
        if eyesight is None or not self.judged(group) or eyesight.rate is None:
            return False
        rate, count = eyesight.rate, len(eyesight.outcomes)
        if rate < self.config.floor:
            return True
        usual = self._usual.get(group)
        return (
            usual is not None
            and rate < self.config.relative_floor * usual
            and _shortfall(usual, rate, count, count) >= _Z
        )

    def should_roll_back(self, group: str) -> bool:
        """Degraded right after a swap, and clearly worse than the version it replaced: the swap broke it."""
        eyesight = self._groups.get(group)
        if not self.config.rollback or eyesight is None or eyesight.previous_rate is None:
            return False
        rate, count = eyesight.rate, len(eyesight.outcomes)
        return (
            self.below_floor(group)
            and rate is not None
            and _shortfall(eyesight.previous_rate, rate, eyesight.previous_count, count) >= _Z
        )


def _shortfall(before: float, now: float, before_count: int, now_count: int) -> float:
    """How many standard errors `now` lies below `before` (two hit rates from independent canaries)."""
    pooled = (before * before_count + now * now_count) / max(before_count + now_count, 1)
    # Never below a few points of spread: rates near 0 or 1 would otherwise make any step significant.
    variance = max(pooled * (1.0 - pooled), 0.05) * (1.0 / max(before_count, 1) + 1.0 / max(now_count, 1))
    return (before - now) / math.sqrt(variance)
