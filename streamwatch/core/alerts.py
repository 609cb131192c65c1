"""Per-stream alert lifecycle: turns the exceed / no-exceed verdicts of scored windows into alert events.

    idle --exceeding window--> pending --for_windows consecutive exceeding--> firing (event)
    pending --non-exceeding window--> idle
    firing --resolve_windows consecutive clearing windows--> cooldown (resolved event) --> idle / pending

A window *exceeds* when score > threshold and *clears* when score <= threshold x resolve_ratio; between the
two lies a hysteresis band that neither clears nor resets the clear count, so a score hovering at the
threshold cannot flap an alert. While firing, a rise to a higher severity level re-emits `firing` (same
alert_id, never a downgrade). For `cooldown_windows` windows after a resolve no alert may fire; exceeding
windows still build up a pending run, and the first window after the cooldown fires at once when that run
(continued by it) is long enough.

The machine is deterministic and clock free: `now` is injected and only stamps `detected_at`, and alert_id
derives from the stream and the first anomalous window's start, so replaying the same windows after a crash
reproduces the same events and ids.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streamwatch.records import AlertEvent, AlertStatus, SourcePosition, WindowScore, iso_utc

__all__ = ["AlertConfig", "AlertMachine", "AlertState", "SeverityLevel", "alert_id_for"]

AlertState = Literal["idle", "pending", "firing", "cooldown"]


@dataclass(frozen=True, slots=True)
class SeverityLevel:
    """An alert is at this level when its peak score / threshold >= ratio."""

    name: str
    ratio: float


_DEFAULT_SEVERITIES = (SeverityLevel("warning", 1.0), SeverityLevel("critical", 2.0))


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """How many windows open, resolve and quieten an alert; severities in strictly increasing ratio order."""

    for_windows: int = 2
    resolve_windows: int = 8
    resolve_ratio: float = 0.9
    cooldown_windows: int = 8
    severities: tuple[SeverityLevel, ...] = _DEFAULT_SEVERITIES

    def __post_init__(self) -> None:
        _check_count("for_windows", self.for_windows, 1)
        _check_count("resolve_windows", self.resolve_windows, 1)
        ratio = self.resolve_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 < ratio <= 1.0:
            raise ValueError(f"resolve_ratio must be a number in (0, 1], got {ratio!r}")
        _check_count("cooldown_windows", self.cooldown_windows, 0)
        _check_severities(self.severities)


def _check_count(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_severities(levels: object) -> None:
    if not isinstance(levels, tuple) or not levels or not all(isinstance(lv, SeverityLevel) for lv in levels):
        raise ValueError(f"severities must be a non-empty tuple of SeverityLevel, got {levels!r}")
    names = [level.name for level in levels]
    if any(not isinstance(name, str) or not name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"severities must have distinct non-empty names, got {names!r}")
    ratios = [level.ratio for level in levels]
    if any(isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) for r in ratios):
        raise ValueError(f"severities ratios must be finite numbers, got {ratios!r}")
    if not 0.0 < ratios[0] <= 1.0:
        # Every exceeding window has ratio > 1, so a lowest level at <= 1 gives every alert a severity.
        raise ValueError(f"severities[0].ratio must be in (0, 1], got {ratios[0]!r}")
    if any(lower >= higher for lower, higher in itertools.pairwise(ratios)):
        raise ValueError(f"severities ratios must be strictly increasing, got {ratios!r}")


def alert_id_for(stream: str, start: float) -> str:
    """Deterministic id of the alert whose first anomalous window starts at `start` (replays reproduce it)."""
    return hashlib.sha256(f"{stream}|{iso_utc(start)}".encode()).hexdigest()[:16]


def _normalised(shares: Mapping[str, float]) -> dict[str, float]:
    """Channel shares scaled to sum 1; unusable (negative, non-finite) shares count as 0, all-zero -> even."""
    clean = {name: float(v) if math.isfinite(v) and v > 0.0 else 0.0 for name, v in shares.items()}
    total = sum(clean.values())
    if total > 0.0:
        return {name: value / total for name, value in clean.items()}
    return {name: 1.0 / len(clean) for name in clean}


@dataclass(frozen=True, slots=True)
class _Peak:
    """The window that exceeded its threshold by the largest factor so far (ties: the earliest)."""

    score: float
    threshold: float
    shares: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.score / self.threshold

    @classmethod
    def of(cls, window: WindowScore) -> _Peak:
        return cls(window.score, window.threshold, _normalised(window.shares))


@dataclass(slots=True)
class _Candidate:
    """A pending or firing alert: where it started and its peak so far."""

    start: float
    first_source: SourcePosition | None
    peak: _Peak

    def raise_peak(self, window: WindowScore) -> None:
        if window.score / window.threshold > self.peak.ratio:
            self.peak = _Peak.of(window)


class AlertMachine:
    """The alert state of one stream; feed it every scored window of that stream in order."""

    __slots__ = (
        "_candidate",
        "_clear_run",
        "_cooldown_left",
        "_firing",
        "_last_exceed_end",
        "_level",
        "_ratios",
        "_run",
        "config",
        "stream",
    )

    def __init__(self, stream: str, config: AlertConfig) -> None:
        self.stream = stream
        self.config = config
        self._ratios = [level.ratio for level in config.severities]
        self._candidate: _Candidate | None = None
        self._run = 0  # consecutive exceeding windows of the candidate
        self._firing = False
        self._level = -1  # index of the highest severity announced for the open alert
        self._clear_run = 0  # consecutive clearing windows of the open alert
        self._last_exceed_end = 0.0
        self._cooldown_left = 0

    # -- queries ---------------------------------------------------------------------------------------
    @property
    def state(self) -> AlertState:
        if self._firing:
            return "firing"
        if self._cooldown_left > 0:
            return "cooldown"
        return "pending" if self._run > 0 else "idle"

    @property
    def first_source(self) -> SourcePosition | None:
        """Source of the first anomalous window of the pending or firing alert (None when there is none).

        A replay must start no later than here to rebuild the alert with the same id and peak.
        """
        return None if self._candidate is None else self._candidate.first_source

    def open_alert(self, model_version: str, now: float) -> AlertEvent | None:
        """The firing alert as its last `firing` event said it (None unless firing): what a daemon taking
        the stream over tells receivers that hold alerts as state, so they keep seeing it."""
        if not self._firing:
            return None
        candidate = self._current()
        peak = candidate.peak
        return AlertEvent(
            alert_id=alert_id_for(self.stream, candidate.start),
            stream=self.stream,
            status="firing",
            severity=self.config.severities[self._level].name,
            window_start=candidate.start,
            window_end=self._last_exceed_end,
            score=peak.score,
            threshold=peak.threshold,
            model_version=model_version,
            channels=dict(peak.shares),
            detected_at=now,
            source=candidate.first_source,
        )

    # -- the transition function -----------------------------------------------------------------------
    def step(self, score: WindowScore, now: float) -> list[AlertEvent]:
        """Advance by one scored window; `now` only stamps detected_at (event time offline, wall clock live).

        Windows must come in order; a window with a non-finite score or a threshold <= 0 is a bug upstream
        and raises ValueError.
        """
        self._check(score)
        exceeds = score.score > score.threshold
        if self._firing:
            return self._step_firing(score, exceeds, now)
        return self._step_quiet(score, exceeds, now)

    def _step_quiet(self, window: WindowScore, exceeds: bool, now: float) -> list[AlertEvent]:
        in_cooldown = self._cooldown_left > 0
        if in_cooldown:
            self._cooldown_left -= 1
        if not exceeds:
            self._forget_candidate()
            return []
        self._extend_candidate(window)
        if in_cooldown or self._run < self.config.for_windows:
            return []
        self._firing = True
        self._level = self._level_of(self._current().peak.ratio)
        self._clear_run = 0
        self._last_exceed_end = window.end
        return [self._event("firing", window, now, window.end)]

    def _step_firing(self, window: WindowScore, exceeds: bool, now: float) -> list[AlertEvent]:
        if exceeds:
            self._clear_run = 0
            self._last_exceed_end = window.end
            candidate = self._current()
            candidate.raise_peak(window)
            level = self._level_of(candidate.peak.ratio)
            if level <= self._level:
                return []
            self._level = level
            return [self._event("firing", window, now, window.end)]
        if window.score > window.threshold * self.config.resolve_ratio:
            return []  # hysteresis band: neither clears nor resets the clear count
        self._clear_run += 1
        if self._clear_run < self.config.resolve_windows:
            return []
        resolved = self._event("resolved", window, now, self._last_exceed_end)
        self._firing = False
        self._forget_candidate()
        self._cooldown_left = self.config.cooldown_windows
        return [resolved]

    def _extend_candidate(self, window: WindowScore) -> None:
        if self._candidate is None:
            self._candidate = _Candidate(window.start, window.source, _Peak.of(window))
        else:
            self._candidate.raise_peak(window)
        self._run += 1

    def _forget_candidate(self) -> None:
        self._run = 0
        self._candidate = None
        self._level = -1
        self._clear_run = 0

    def _level_of(self, ratio: float) -> int:
        return bisect.bisect_right(self._ratios, ratio) - 1

    def _current(self) -> _Candidate:
        if self._candidate is None:
            raise RuntimeError("alert machine has no pending or firing alert; this is a bug")
        return self._candidate

    def _event(self, status: AlertStatus, window: WindowScore, now: float, window_end: float) -> AlertEvent:
        candidate = self._current()
        peak = candidate.peak
        return AlertEvent(
            alert_id=alert_id_for(self.stream, candidate.start),
            stream=self.stream,
            status=status,
            severity=self.config.severities[self._level].name,
            window_start=candidate.start,
            window_end=window_end,
            score=peak.score,
            threshold=peak.threshold,
            model_version=window.model_version,
            channels=dict(peak.shares),
            detected_at=now,
            source=window.source,
        )

    def _check(self, window: WindowScore) -> None:
        if window.stream != self.stream:
            raise ValueError(
                f"window of stream {window.stream!r} fed to the alert machine of {self.stream!r}"
            )
        if not (math.isfinite(window.score) and math.isfinite(window.threshold) and window.threshold > 0.0):
            raise ValueError(
                f"window {window.seq} of {self.stream!r} needs a finite score and a finite threshold > 0, "
                f"got score={window.score!r} threshold={window.threshold!r}"
            )

    # -- persistence -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Compact JSON-serialisable state; `restore` continues exactly where this left off."""
        body: dict[str, Any] = {"run": self._run, "cooldown": self._cooldown_left}
        candidate = self._candidate
        if candidate is not None:
            body["start"] = candidate.start
            body["source"] = None if candidate.first_source is None else candidate.first_source.to_json()
            body["peak"] = [candidate.peak.score, candidate.peak.threshold]
            body["shares"] = dict(candidate.peak.shares)
        if self._firing:
            body["firing"] = {
                "level": self._level,
                "clear": self._clear_run,
                "last_end": self._last_exceed_end,
            }
        return body

    @classmethod
    def restore(cls, stream: str, config: AlertConfig, snapshot: Mapping[str, Any]) -> AlertMachine:
        machine = cls(stream, config)
        try:
            machine._load(snapshot)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed alert snapshot for {stream!r}: {error!r}") from error
        return machine

    def _load(self, snapshot: Mapping[str, Any]) -> None:
        self._run = _count(snapshot["run"], "run")
        self._cooldown_left = _count(snapshot["cooldown"], "cooldown")
        if "peak" in snapshot:
            score, threshold = (float(x) for x in snapshot["peak"])
            if not (math.isfinite(score) and math.isfinite(threshold) and threshold > 0.0):
                raise ValueError(
                    f"peak needs a finite score and a finite threshold > 0, got {score}, {threshold}"
                )
            shares = {str(k): float(v) for k, v in snapshot["shares"].items()}
            source = snapshot["source"]
            self._candidate = _Candidate(
                float(snapshot["start"]),
                None if source is None else SourcePosition(**source),
                _Peak(score, threshold, shares),
            )
        firing = snapshot.get("firing")
        if firing is not None:
            self._firing = True
            self._level = int(firing["level"])
            self._clear_run = _count(firing["clear"], "clear")
            self._last_exceed_end = float(firing["last_end"])
            if not 0 <= self._level < len(self.config.severities):
                raise ValueError(f"severity level {self._level} outside the configured severities")
        if (self._firing or self._run > 0) != (self._candidate is not None):
            raise ValueError("a pending or firing alert needs its start and peak, and only then")


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value
