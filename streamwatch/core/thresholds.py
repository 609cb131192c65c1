"""Per-stream anomaly thresholds that keep calibrating themselves while they judge.

Every kind honours one contract (`Threshold`): `fit` calibrates on scores of normal windows, `observe`
judges a score against the threshold as it stood *before* that score and then learns from it, and
`snapshot` / `restore_threshold` carry the state across restarts in well under 1 KiB of JSON.

Configs are frozen dataclasses that validate on construction and `build()` a fresh, uncalibrated threshold
(Bytewax/River style), so one config serves every stream.

What a threshold learns from is decided in exactly one place, `_RelearnGate`: only scores it did not judge
anomalous, except that a run of `relearn_after` consecutive exceeding scores is taken as a lasting new
normal (a level shift), after which those scores are learned too until a non-exceeding one ends the run.

Scores are finite and >= 0; nothing here assumes a particular scale (a detector calibrated so that ~1.0 is
a high normal score works exactly as well as one whose scores are in the thousands).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_THRESHOLD",
    "PotThreshold",
    "PotThresholdConfig",
    "QuantileThreshold",
    "QuantileThresholdConfig",
    "RobustZThreshold",
    "RobustZThresholdConfig",
    "Threshold",
    "ThresholdConfig",
    "fit_generalized_pareto",
    "restore_threshold",
    "threshold_from_dict",
]

# A threshold is always strictly positive: with all-zero calibration scores any positive score is news.
MIN_THRESHOLD = 1e-12
# Capping (rather than failing) keeps `value` finite even if scores reach the edge of float range.
_MAX_THRESHOLD = 1e300
# Scale factor that turns a MAD into a standard deviation for Gaussian data.
_MAD_TO_SIGMA = 1.4826
# Degenerate (zero-spread) calibration data still needs some spread; relative so it is scale free.
_RELATIVE_SPREAD_FLOOR = 1e-3
_DEFAULT_RELEARN_AFTER = 360
# SPOT keeps at most this many peaks: 64 short floats keep its snapshot well under 1 KiB (see _compact).
_MAX_PEAKS = 64

FloatArray64 = npt.NDArray[np.float64]


class Threshold(Protocol):
    """A stateful per-stream threshold on anomaly scores (finite floats >= 0, higher = more anomalous)."""

    def fit(self, scores: npt.ArrayLike) -> None:
        """Calibrate from scratch on scores of normal windows (one or more; constant scores are fine)."""
        ...

    @property
    def value(self) -> float:
        """The current threshold: finite and > 0. Raises RuntimeError before the first `fit`."""
        ...

    def observe(self, score: float) -> bool:
        """Whether `score > value` for the value before this call; then learn from it (see module doc)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Compact JSON-serialisable state (< 1 KiB) that `restore_threshold` turns back into a twin."""
        ...


# -- config validation -----------------------------------------------------------------------------------
def _check_real(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise ValueError naming `name` and its valid interval unless `value` is a real number inside it."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    above_low = low < value if low_open else low <= value
    below_high = value < high if high_open else value <= high
    if not (above_low and below_high):
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """Raise ValueError naming `name` and its valid range unless `value` is an int inside it."""
    valid = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}")


def _check_common(floor: object, relearn_after: object) -> None:
    _check_real("floor", floor, 0.0, math.inf, high_open=True)
    _check_int("relearn_after", relearn_after, 1)


# -- configs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QuantileThresholdConfig:
    """margin x the q-quantile of recently learned scores, forgetting exponentially over `horizon` of them.

    `margin` must be >= 1: the threshold learns only scores below itself, so with margin 1 the learned
    distribution would be cut exactly at its own quantile and the estimate would ratchet down forever; a
    margin above 1 leaves the quantile's neighbourhood in view and the estimate settles.
    """

    kind: ClassVar[str] = "quantile"

    q: float = 0.999
    margin: float = 1.25
    horizon: int = 5000
    floor: float = 0.0
    relearn_after: int = _DEFAULT_RELEARN_AFTER

    def __post_init__(self) -> None:
        # The sketch keeps resolution in the upper tail only (see _DecayingLogHistogram), hence q >= 0.5.
        _check_real("q", self.q, 0.5, 1.0, high_open=True)
        _check_real("margin", self.margin, 1.0, math.inf, high_open=True)
        _check_int("horizon", self.horizon, 10)
        if self.horizon * (1.0 - self.q) < 1.0:
            raise ValueError(
                f"horizon must be >= 1/(1-q) = {math.ceil(1.0 / (1.0 - self.q))} so that the remembered "
                f"scores hold at least one above the {self.q} quantile, got {self.horizon}"
            )
        _check_common(self.floor, self.relearn_after)

    def build(self) -> QuantileThreshold:
        return QuantileThreshold(self)

    def to_dict(self) -> dict[str, Any]:
        return _config_dict(self)


@dataclass(frozen=True, slots=True)
class RobustZThresholdConfig:
    """Exponentially weighted median + k x 1.4826 x exponentially weighted MAD (half-life in observations)."""

    kind: ClassVar[str] = "robust_z"

    k: float = 8.0
    half_life: int = 2000
    floor: float = 0.0
    relearn_after: int = _DEFAULT_RELEARN_AFTER

    def __post_init__(self) -> None:
        _check_real("k", self.k, 0.0, math.inf, low_open=True, high_open=True)
        _check_int("half_life", self.half_life, 1)
        _check_common(self.floor, self.relearn_after)

    def build(self) -> RobustZThreshold:
        return RobustZThreshold(self)

    def to_dict(self) -> dict[str, Any]:
        return _config_dict(self)


@dataclass(frozen=True, slots=True)
class PotThresholdConfig:
    """SPOT (Siffer et al., KDD 2017): a Generalised Pareto tail above the init_quantile, risk = P(exceed).

    `max_peaks` is capped at 64 so the snapshot (which stores the peaks) stays under 1 KiB; `risk` must be
    below the tail share 1 - init_quantile, otherwise the asked-for quantile would lie below the tail that
    the model describes.
    """

    kind: ClassVar[str] = "pot"

    risk: float = 1e-4
    init_quantile: float = 0.98
    margin: float = 1.0
    max_peaks: int = 64
    floor: float = 0.0
    relearn_after: int = _DEFAULT_RELEARN_AFTER

    def __post_init__(self) -> None:
        _check_real("init_quantile", self.init_quantile, 0.5, 1.0, high_open=True)
        _check_real("risk", self.risk, 0.0, 1.0 - self.init_quantile, low_open=True, high_open=True)
        _check_real("margin", self.margin, 1.0, math.inf, high_open=True)
        _check_int("max_peaks", self.max_peaks, 3, _MAX_PEAKS)
        _check_common(self.floor, self.relearn_after)

    def build(self) -> PotThreshold:
        return PotThreshold(self)

    def to_dict(self) -> dict[str, Any]:
        return _config_dict(self)


ThresholdConfig: TypeAlias = QuantileThresholdConfig | RobustZThresholdConfig | PotThresholdConfig

_CONFIG_KINDS: dict[str, type[ThresholdConfig]] = {
    QuantileThresholdConfig.kind: QuantileThresholdConfig,
    RobustZThresholdConfig.kind: RobustZThresholdConfig,
    PotThresholdConfig.kind: PotThresholdConfig,
}


def _config_dict(config: ThresholdConfig) -> dict[str, Any]:
    return {"kind": config.kind, **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}}


def threshold_from_dict(d: Mapping[str, Any]) -> ThresholdConfig:
    """Build a config from `{"kind": "quantile"|"robust_z"|"pot", ...fields}`; errors name the bad key."""
    kinds = ", ".join(repr(kind) for kind in _CONFIG_KINDS)
    if "kind" not in d:
        raise ValueError(f"threshold config needs a 'kind' key, one of {kinds}")
    kind = d["kind"]
    config_type = _CONFIG_KINDS.get(kind) if isinstance(kind, str) else None
    if config_type is None:
        raise ValueError(f"kind: unknown threshold kind {kind!r}; use one of {kinds}")
    known = [f.name for f in dataclasses.fields(config_type)]
    unknown = sorted(str(key) for key in d if key != "kind" and key not in known)
    if unknown:
        raise ValueError(
            f"unknown key(s) for a {kind!r} threshold: {', '.join(unknown)}; valid keys: {', '.join(known)}"
        )
    return config_type(**{key: value for key, value in d.items() if key != "kind"})


# -- the shared learning rule ----------------------------------------------------------------------------
@dataclass(slots=True)
class _RelearnGate:
    """Decides whether a judged score may be learned: the one place the learning rule lives."""

    relearn_after: int
    streak: int = 0

    def admits(self, exceeded: bool) -> bool:
        if not exceeded:
            self.streak = 0
            return True
        # Capped so the state stays bounded during an endless anomaly; only "past the limit" matters.
        self.streak = min(self.streak + 1, self.relearn_after + 1)
        return self.streak > self.relearn_after


def _as_score(score: float) -> float:
    value = float(score)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"score must be a finite number >= 0, got {score!r}")
    return value


def _as_scores(scores: npt.ArrayLike) -> FloatArray64:
    array = np.asarray(scores, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("fit needs at least one score")
    if not (np.all(np.isfinite(array)) and np.all(array >= 0.0)):
        raise ValueError("fit scores must be finite numbers >= 0")
    return array


ConfigT = TypeVar("ConfigT", QuantileThresholdConfig, RobustZThresholdConfig, PotThresholdConfig)


class _GatedThreshold(ABC, Generic[ConfigT]):
    """Judge-then-learn plumbing shared by every kind; a kind supplies calibration, learning and state."""

    kind: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config
        self._gate = _RelearnGate(config.relearn_after)
        self._value: float | None = None

    @property
    def value(self) -> float:
        if self._value is None:
            raise RuntimeError(f"{type(self).__name__} is not calibrated: call fit() first")
        return self._value

    def fit(self, scores: npt.ArrayLike) -> None:
        clean = _as_scores(scores)
        self._gate.streak = 0
        self._value = self._bounded(self._calibrate(clean))

    def observe(self, score: float) -> bool:
        before = self.value
        clean = _as_score(score)
        exceeded = clean > before
        if self._gate.admits(exceeded):
            self._value = self._bounded(self._learn(clean))
        return exceeded

    def snapshot(self) -> dict[str, Any]:
        if self._value is None:
            raise RuntimeError(f"{type(self).__name__} is not calibrated: nothing to snapshot before fit()")
        config = self.config.to_dict()
        del config["kind"]
        return {"kind": self.kind, "config": config, "streak": self._gate.streak, "state": self._state()}

    def _restore(self, streak: int, state: Mapping[str, Any]) -> None:
        _check_int("streak", streak, 0, self.config.relearn_after + 1)
        self._gate.streak = streak
        self._value = self._bounded(self._load_state(state))

    def _bounded(self, raw: float) -> float:
        if math.isnan(raw):
            raise FloatingPointError(f"{self.kind} threshold computed NaN")
        return min(max(raw, self.config.floor, MIN_THRESHOLD), _MAX_THRESHOLD)

    @abstractmethod
    def _calibrate(self, scores: FloatArray64) -> float:
        """Reset state from calibration scores; return the raw threshold (before floor and bounds)."""

    @abstractmethod
    def _learn(self, score: float) -> float:
        """Fold one admitted score into the state; return the new raw threshold."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Kind-specific state, JSON-serialisable and exact (a restore must behave identically)."""

    @abstractmethod
    def _load_state(self, state: Mapping[str, Any]) -> float:
        """Inverse of `_state`; return the raw threshold."""


# -- quantile --------------------------------------------------------------------------------------------
# Why a log-binned histogram and not a reservoir: a 0.999 quantile needs thousands of remembered scores,
# which a ~64-float reservoir cannot represent, while 48 geometric bins (10% wide, interpolated inside) hold
# any number of them in ~400 bytes with a few % relative error. Bins span 1.1**48 ~ 97x below the top
# bin, ample for upper quantiles; anything lower piles into the bottom bin. The grid slides up when a
# learned score lands above it and down when its top bins have emptied, so level shifts keep resolution
# (a drop by more than ~97x regains it only once the old bins have decayed to empty, ~10-15 horizons).
# Weights are integers in units of 1/1024 of an observation and decay in 64 blocks per horizon: integer
# state makes JSON exact (a restored sketch behaves bit-identically) and flooring makes old bins truly empty.
_SKETCH_BINS = 48
_LOG_GROWTH = math.log(1.1)
_WEIGHT_UNIT = 1024
_DECAY_BLOCKS_PER_HORIZON = 64


def _bin_index(score: float) -> int:
    return math.ceil(math.log(max(score, MIN_THRESHOLD)) / _LOG_GROWTH)


class _DecayingLogHistogram:
    """Exponentially forgetting histogram on a sliding geometric grid; answers upper quantiles."""

    __slots__ = ("_block", "_factor", "_keep", "counts", "pending", "top")

    def __init__(self, horizon: int) -> None:
        self._keep = 1.0 - 1.0 / horizon
        self._block = max(1, round(horizon / _DECAY_BLOCKS_PER_HORIZON))
        self._factor = self._keep**self._block
        # Position p holds grid index top - (BINS-1) + p, i.e. scores in (1.1**(index-1), 1.1**index];
        # position 0 also holds everything below the grid.
        self.counts = np.zeros(_SKETCH_BINS, dtype=np.int64)
        self.top = 0
        self.pending = 0

    def fit(self, scores: FloatArray64) -> None:
        """Reset to `scores`, weighted as if learned in order with per-observation forgetting."""
        indices = np.ceil(np.log(np.maximum(scores, MIN_THRESHOLD)) / _LOG_GROWTH).astype(np.int64)
        self.top = int(indices.max())
        positions = np.maximum(indices - self.top + _SKETCH_BINS - 1, 0)
        ages = np.arange(scores.size - 1, -1, -1, dtype=np.float64)
        weights = _WEIGHT_UNIT * self._keep**ages
        summed = np.bincount(positions, weights=weights, minlength=_SKETCH_BINS)
        self.counts = np.floor(summed).astype(np.int64)
        self.pending = 0
        self._drop_empty_top()

    def add(self, score: float) -> None:
        index = _bin_index(score)
        if index > self.top:
            self._shift_up(index - self.top)
        self.counts[max(index - self.top + _SKETCH_BINS - 1, 0)] += _WEIGHT_UNIT
        self.pending += 1
        if self.pending >= self._block:
            self.pending = 0
            self.counts = np.floor(self.counts * self._factor).astype(np.int64)
            self._drop_empty_top()

    def quantile(self, q: float) -> float:
        cumulative = np.cumsum(self.counts)
        target = q * float(cumulative[-1])
        position = int(np.searchsorted(cumulative, target, side="left"))
        inside = (target - float(cumulative[position] - self.counts[position])) / float(self.counts[position])
        lower_edge_index = self.top - _SKETCH_BINS + position
        # Geometric interpolation: within a 10% bin the density of a smooth tail is ~uniform in log space.
        return math.exp((lower_edge_index + inside) * _LOG_GROWTH)

    def _shift_up(self, steps: int) -> None:
        if steps >= _SKETCH_BINS:
            merged = np.zeros(_SKETCH_BINS, dtype=np.int64)
            merged[0] = self.counts.sum()
        else:
            merged = np.concatenate(
                ([self.counts[: steps + 1].sum()], self.counts[steps + 1 :], np.zeros(steps, dtype=np.int64))
            )
        self.counts = merged
        self.top += steps

    def _drop_empty_top(self) -> None:
        occupied = np.flatnonzero(self.counts)
        steps = _SKETCH_BINS - 1 - int(occupied[-1])
        if steps > 0:
            self.counts = np.concatenate(
                (np.zeros(steps, dtype=np.int64), self.counts[: _SKETCH_BINS - steps])
            )
            self.top -= steps

    def to_json(self) -> dict[str, Any]:
        return {"top": self.top, "pending": self.pending, "counts": [int(c) for c in self.counts]}

    def load(self, state: Mapping[str, Any]) -> None:
        counts = np.asarray(state["counts"], dtype=np.int64)
        if counts.shape != (_SKETCH_BINS,) or counts.min() < 0 or counts.sum() <= 0:
            raise ValueError(f"counts must be {_SKETCH_BINS} non-negative integers with a positive sum")
        _check_int("top", state["top"], -(10**6), 10**6)
        _check_int("pending", state["pending"], 0, self._block - 1)
        self.counts, self.top, self.pending = counts, int(state["top"]), int(state["pending"])


class QuantileThreshold(_GatedThreshold[QuantileThresholdConfig]):
    kind = QuantileThresholdConfig.kind

    def __init__(self, config: QuantileThresholdConfig) -> None:
        super().__init__(config)
        self._sketch = _DecayingLogHistogram(config.horizon)

    def _calibrate(self, scores: FloatArray64) -> float:
        self._sketch.fit(scores)
        return self._raw()

    def _learn(self, score: float) -> float:
        self._sketch.add(score)
        return self._raw()

    def _raw(self) -> float:
        return self.config.margin * self._sketch.quantile(self.config.q)

    def _state(self) -> dict[str, Any]:
        return self._sketch.to_json()

    def _load_state(self, state: Mapping[str, Any]) -> float:
        self._sketch.load(state)
        return self._raw()


# -- robust z --------------------------------------------------------------------------------------------
def _spread_floor(level: float) -> float:
    return _RELATIVE_SPREAD_FLOOR * abs(level) + MIN_THRESHOLD


class RobustZThreshold(_GatedThreshold[RobustZThresholdConfig]):
    """Median and MAD tracked by stochastic approximation with exponential forgetting.

    The median moves by rate x sigma-estimate toward each score and the MAD is multiplied by exp(+-rate),
    rate = ln 2 / half_life. Both steps are sized from the current spread (initially the fit's MAD) rather
    than a fixed one: that keeps the estimates scale free, lets them follow a level shift geometrically
    instead of linearly, and for Gaussian-like data makes an old deviation fade with about the configured
    half-life. The MAD update is multiplicative so the spread stays positive; a floor of 1e-3 x the median
    only keeps constant scores from shrinking it towards nothing.
    """

    kind = RobustZThresholdConfig.kind

    def __init__(self, config: RobustZThresholdConfig) -> None:
        super().__init__(config)
        self._rate = math.log(2.0) / config.half_life
        self._grow = math.exp(self._rate)
        self._shrink = math.exp(-self._rate)
        self._median = 0.0
        self._mad = MIN_THRESHOLD

    def _calibrate(self, scores: FloatArray64) -> float:
        median = float(np.median(scores))
        self._median = median
        self._mad = max(float(np.median(np.abs(scores - median))), _spread_floor(median))
        return self._raw()

    def _learn(self, score: float) -> float:
        deviation = abs(score - self._median)
        step = self._rate * _MAD_TO_SIGMA * self._mad
        if score > self._median:
            self._median += step
        elif score < self._median:
            # Scores are >= 0, so their median is too; an overshooting step must not take it below.
            self._median = max(self._median - step, 0.0)
        if deviation > self._mad:
            self._mad *= self._grow
        elif deviation < self._mad:
            self._mad *= self._shrink
        self._mad = max(self._mad, _spread_floor(self._median))
        return self._raw()

    def _raw(self) -> float:
        return self._median + self.config.k * _MAD_TO_SIGMA * self._mad

    def _state(self) -> dict[str, Any]:
        return {"median": self._median, "mad": self._mad}

    def _load_state(self, state: Mapping[str, Any]) -> float:
        median, mad = float(state["median"]), float(state["mad"])
        if not (math.isfinite(median) and median >= 0.0 and math.isfinite(mad) and mad > 0.0):
            raise ValueError("median must be finite >= 0 and mad finite > 0")
        self._median, self._mad = median, mad
        return self._raw()


# -- peaks over threshold (SPOT) -------------------------------------------------------------------------
_MIN_PEAKS_FOR_TAIL = 3
_FALLBACK_SPREADS = 3.0
# Beyond |shape| 0.5 a PWM estimate from <= 64 peaks is mostly sampling noise (its standard error there is
# ~0.15): a spurious positive shape blows z up, a spurious negative one caps it below real tail values.
_STABLE_SHAPE = 0.5
_NEGLIGIBLE_SHAPE = 1e-9


def fit_generalized_pareto(excesses: npt.ArrayLike) -> tuple[float, float]:
    """(shape gamma, scale sigma) of a Generalised Pareto fitted to excesses by probability-weighted moments.

    Why PWM (Hosking & Wallis 1987) rather than Grimshaw's MLE: it is closed form (no root finding on the
    hot path, deterministic to the bit), and for the small samples SPOT keeps (<= 64 peaks) it has lower
    bias and variance than the MLE for shapes in [-0.5, 0.5]. When the estimate is unusable (no spread, or
    a shape outside that band) the exponential tail (gamma = 0, sigma = mean excess, its MLE) is returned.
    Needs at least 3 finite excesses >= 0 with a positive mean.
    """
    ordered = np.sort(np.asarray(excesses, dtype=np.float64).ravel())
    if ordered.size < _MIN_PEAKS_FOR_TAIL or not np.all(np.isfinite(ordered)) or ordered[0] < 0.0:
        raise ValueError(f"need at least {_MIN_PEAKS_FOR_TAIL} finite excesses >= 0")
    mean = float(ordered.mean())
    if mean <= 0.0:
        raise ValueError("excesses must have a positive mean")
    count = ordered.size
    # The unbiased estimator of a1 = E[X (1 - F(X))]; at n = 64 it shifts z_q less than plotting positions.
    survival = (count - np.arange(1, count + 1, dtype=np.float64)) / (count - 1)
    weighted = float(np.mean(ordered * survival))
    denominator = mean - 2.0 * weighted
    if denominator > 0.0:
        shape = 2.0 - mean / denominator
        scale = 2.0 * mean * weighted / denominator
        if abs(shape) <= _STABLE_SHAPE and math.isfinite(scale) and scale > 0.0:
            return shape, scale
    return 0.0, mean


def _compact(excess: float, spread: float) -> float:
    # Peaks are kept in units of the calibration spread with four significant digits: short JSON numbers
    # at any score scale (64 peaks in ~450 bytes) at a relative error of 5e-4, far below a 64-peak fit's
    # sampling error. Rounding at insertion makes memory and snapshot identical, so restores are exact.
    return float(f"{excess / spread:.4g}")


def _tail_quantile(base: float, shape: float, scale: float, ratio: float) -> float:
    """SPOT's z_q = t + (sigma/gamma)((risk n / N_t)^-gamma - 1), with its gamma -> 0 limit."""
    if abs(shape) < _NEGLIGIBLE_SHAPE:
        return base - scale * math.log(ratio)
    return base + scale / shape * (math.pow(ratio, -shape) - 1.0)


class PotThreshold(_GatedThreshold[PotThresholdConfig]):
    """Streaming SPOT: t fixed at calibration, peaks above t refitted as they arrive, n counts all learned.

    With 64 peaks the tail estimate is noisy (shape standard error ~0.15), so the realised exceed rate of
    normal scores scatters around a few times `risk`. Learning only the peaks below the threshold also
    trims the fitted tail; at margin 1 that feeds back when the threshold sits inside the peaks' range
    (risk >= ~1e-3: on exponential scores it settles at ~5x the nominal rate). A margin of ~1.2 stops it.
    """

    kind = PotThresholdConfig.kind

    def __init__(self, config: PotThresholdConfig) -> None:
        super().__init__(config)
        self._base = 0.0
        self._spread = MIN_THRESHOLD
        self._seen = 0
        self._peak_count = 0
        self._peaks: deque[float] = deque(maxlen=config.max_peaks)
        self._tail: tuple[float, float] | None = None

    def _calibrate(self, scores: FloatArray64) -> float:
        base = float(np.quantile(scores, self.config.init_quantile))
        excesses = scores[scores > base] - base
        self._base = base
        self._spread = _robust_spread(scores, base)
        self._seen = int(scores.size)
        self._peak_count = int(excesses.size)
        recent = excesses[-self.config.max_peaks :]
        self._peaks = deque((_compact(float(e), self._spread) for e in recent), self.config.max_peaks)
        self._refit()
        return self._raw()

    def _learn(self, score: float) -> float:
        self._seen += 1
        if score > self._base:
            self._peak_count += 1
            self._peaks.append(_compact(score - self._base, self._spread))
            self._refit()
        return self._raw()

    def _refit(self) -> None:
        if len(self._peaks) < _MIN_PEAKS_FOR_TAIL:
            self._tail = None
            return
        shape, scale_in_spreads = fit_generalized_pareto(np.fromiter(self._peaks, dtype=np.float64))
        self._tail = (shape, scale_in_spreads * self._spread)

    def _raw(self) -> float:
        if self._tail is None:
            # Too few peaks for any tail model: a robust spread above t is the sensible guess.
            return self.config.margin * (self._base + _FALLBACK_SPREADS * self._spread)
        shape, scale = self._tail
        # The GPD describes only the tail above t, so it cannot place the quantile below t: a risk above the
        # observed tail rate gets t itself.
        ratio = min(self.config.risk * self._seen / self._peak_count, 1.0)
        return self.config.margin * _tail_quantile(self._base, shape, scale, ratio)

    def _state(self) -> dict[str, Any]:
        return {
            "t": self._base,
            "spread": self._spread,
            "n": self._seen,
            "n_peaks": self._peak_count,
            "peaks_in_spreads": list(self._peaks),
        }

    def _load_state(self, state: Mapping[str, Any]) -> float:
        base, spread = float(state["t"]), float(state["spread"])
        seen, peak_count = state["n"], state["n_peaks"]
        peaks = [float(p) for p in state["peaks_in_spreads"]]
        if not (math.isfinite(base) and base >= 0.0 and math.isfinite(spread) and spread > 0.0):
            raise ValueError("t must be finite >= 0 and spread finite > 0")
        _check_int("n", seen, 1)
        _check_int("n_peaks", peak_count, len(peaks), seen)
        if len(peaks) > self.config.max_peaks or not all(math.isfinite(p) and p > 0.0 for p in peaks):
            raise ValueError(f"peaks must be at most {self.config.max_peaks} finite positive excesses")
        self._base, self._spread, self._seen, self._peak_count = base, spread, seen, peak_count
        self._peaks = deque(peaks, self.config.max_peaks)
        self._refit()
        return self._raw()


def _robust_spread(scores: FloatArray64, level: float) -> float:
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median)))
    return max(_MAD_TO_SIGMA * mad, _spread_floor(level))


# -- restore ---------------------------------------------------------------------------------------------
def restore_threshold(snapshot: Mapping[str, Any]) -> Threshold:
    """Rebuild a threshold from `snapshot()` output (after a JSON round trip); dispatches on `kind`."""
    config = snapshot.get("config")
    state = snapshot.get("state")
    if not isinstance(config, Mapping) or not isinstance(state, Mapping):
        raise ValueError("threshold snapshot needs 'config' and 'state' objects")
    threshold = threshold_from_dict({**config, "kind": snapshot.get("kind")}).build()
    try:
        threshold._restore(snapshot.get("streak", 0), state)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed {threshold.kind} threshold snapshot: {error!r}") from error
    return threshold
