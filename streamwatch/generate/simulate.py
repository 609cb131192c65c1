"""Realistic normal data for the supported domains, in one go (`simulate`) or as an endless stream.

Each domain is a small generative model with the texture of the real signal: autocorrelated wander, daily
and weekly cycles, benign scheduled events, beat-to-beat variability and measurement noise, not clean sines.
Data is produced in fixed-size blocks whose model state carries from one block to the next, so a stream
read in chunks of any size is sample-for-sample identical to one read in a single call, and `simulate`
returns exactly the first n samples of a fresh anomaly-free `SimulatedStream` with the same generator.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from streamwatch.generate.inject import KINDS, Label, inject_many, max_injections

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

DOMAINS: tuple[str, ...] = ("grid_frequency", "voltage", "ecg", "server", "logs")

_DAY_S = 86_400.0
_HOUR_S = 3_600.0
_SNAPSHOT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Series:
    """A regularly sampled multichannel series: `values[i]` was observed at `timestamps[i]` (epoch s)."""

    timestamps: F64
    channels: tuple[str, ...]
    values: F32
    rate_hz: float

    def __post_init__(self) -> None:
        timestamps = np.asarray(self.timestamps, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float32)
        if timestamps.ndim != 1 or values.ndim != 2 or values.shape != (timestamps.size, len(self.channels)):
            raise ValueError(
                f"values must be shaped (len(timestamps), len(channels))"
                f" = ({timestamps.size}, {len(self.channels)}), got {values.shape}"
            )
        if len(set(self.channels)) != len(self.channels) or not all(self.channels):
            raise ValueError(f"channel names must be distinct and non-empty: {self.channels}")
        if not math.isfinite(self.rate_hz) or self.rate_hz <= 0.0:
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")
        # Frozen: the normalised arrays go in through object.__setattr__.
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.timestamps.size)


def simulate(
    domain: str, *, n: int, start: float, rng: np.random.Generator, rate_hz: float | None = None
) -> Series:
    """`n` samples of normal `domain` data from `start` (epoch s), at the domain's rate unless overridden."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    stream = SimulatedStream("simulated", domain, start=start, rng=rng, rate_hz=rate_hz)
    series, _ = stream.next_chunk(n)
    return series


# --------------------------------------------------------------------------------------------------------
# Shared building blocks


def _decay(tau_s: float, rate_hz: float) -> float:
    """Per-sample AR(1) coefficient of a process that forgets with time constant `tau_s`."""
    return math.exp(-1.0 / (tau_s * rate_hz))


def _ar1(innovations: F64, phi: float, previous: float) -> F64:
    """x[t] = phi * x[t-1] + innovations[t], starting after x[-1] = previous; vectorised."""
    out = np.empty(innovations.size)
    if innovations.size == 0:
        return out
    if phi == 0.0:
        out[:] = innovations
        return out
    # Within a run the recursion is a rescaled cumulative sum. Runs are kept short enough that phi**-run
    # stays below 1e6, so cancellation in the cumulative sum costs at most ~6 of float64's 16 digits.
    run = (
        innovations.size if phi >= 1.0 else max(1, min(innovations.size, int(math.log(1e-6) / math.log(phi))))
    )
    powers = phi ** np.arange(run + 1, dtype=np.float64)
    inverse = 1.0 / powers[:run]
    for begin in range(0, innovations.size, run):
        stop = min(begin + run, innovations.size)
        width = stop - begin
        summed = np.cumsum(innovations[begin:stop] * inverse[:width]) * powers[:width]
        out[begin:stop] = summed + previous * powers[1 : width + 1]
        previous = float(out[stop - 1])
    return out


def _ar_process(
    rng: np.random.Generator, n: int, *, sigma: float, tau_s: float, rate_hz: float, previous: float
) -> F64:
    """Mean-reverting Gaussian noise with stationary std `sigma` and memory `tau_s`, continuing `previous`."""
    phi = _decay(tau_s, rate_hz)
    return _ar1(rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), n), phi, previous)


def _poisson_kicks(rng: np.random.Generator, n: int, *, every_s: float, sigma: float, rate_hz: float) -> F64:
    """Random events (about one per `every_s` seconds) of Gaussian size, zero elsewhere."""
    kicks = np.zeros(n)
    hits = rng.random(n) < 1.0 / (every_s * rate_hz)
    kicks[hits] = rng.normal(0.0, sigma, int(hits.sum()))
    return kicks


def _crosses(t: F64, every_s: float, rate_hz: float) -> npt.NDArray[np.bool_]:
    """Samples that are the first at or after a multiple of `every_s` (the full hour, the quarter...)."""
    crossed: npt.NDArray[np.bool_] = np.floor(t / every_s) != np.floor((t - 1.0 / rate_hz) / every_s)
    return crossed


def _hour_of_day(t: F64) -> F64:
    return np.mod(t, _DAY_S) / _HOUR_S


def _minute_of_hour(t: F64) -> F64:
    return np.mod(t, _HOUR_S) / 60.0


def _circular_bump(hours: F64, centre_h: float, width_h: float) -> F64:
    distance = np.mod(hours - centre_h + 12.0, 24.0) - 12.0
    return np.exp(-0.5 * (distance / width_h) ** 2)


def _business_load(t: F64, shift_h: float) -> F64:
    """Traffic shape of a daytime service: 0.25 at 04:00, 1.0 in mid-afternoon, a small lunch dip."""
    hours = _hour_of_day(t) - shift_h
    rising = 0.5 - 0.5 * np.cos(2.0 * np.pi * (hours - 4.0) / 24.0)
    result: F64 = 0.25 + 0.75 * rising**1.4 - 0.06 * _circular_bump(hours, 12.5, 0.7)
    return result


def _residential_load(t: F64) -> F64:
    """Household demand: low at night, a morning peak and a larger evening peak (0.25 .. ~1.0)."""
    hours = _hour_of_day(t)
    morning = 0.45 * _circular_bump(hours, 7.5, 1.3)
    daytime = 0.25 * _circular_bump(hours, 13.0, 3.0)
    evening = 0.7 * _circular_bump(hours, 19.5, 1.8)
    result: F64 = 0.25 + morning + daytime + evening
    return result


def _weekly_factor(t: F64, weekend: float) -> F64:
    # Day 0 of the epoch was a Thursday; with Monday = 0 the weekend is days 5 and 6.
    weekday = np.mod(np.floor(t / _DAY_S) + 3.0, 7.0)
    return np.where(weekday >= 5.0, weekend, 1.0)


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return copy.deepcopy(dict(rng.bit_generator.state))


def _rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator")
    factories = {
        "PCG64": np.random.PCG64,
        "PCG64DXSM": np.random.PCG64DXSM,
        "Philox": np.random.Philox,
        "SFC64": np.random.SFC64,
        "MT19937": np.random.MT19937,
    }
    if name not in factories:
        raise ValueError(f"unsupported bit generator in snapshot: {name!r}")
    bit_generator = factories[name]()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


# --------------------------------------------------------------------------------------------------------
# Domain models


class _Model(ABC):
    """One domain's normal behaviour: parameters drawn once, plus the state carried between blocks.

    `params` and `carry` hold only JSON-friendly values so a snapshot is a plain dict.
    """

    channels: ClassVar[tuple[str, ...]]

    def __init__(
        self, rate_hz: float, params: dict[str, float], carry: dict[str, Any], rng: np.random.Generator
    ):
        self.rate_hz = rate_hz
        self.params = params
        self.carry = carry
        self.rng = rng

    @classmethod
    def create(cls, rate_hz: float, start: float, rng: np.random.Generator) -> Self:
        params = cls.draw_params(rng)
        return cls(rate_hz, params, cls.initial_carry(params, start, rng), rng)

    @classmethod
    def from_state(cls, rate_hz: float, state: dict[str, Any], rng: np.random.Generator) -> Self:
        return cls(rate_hz, dict(state["params"]), copy.deepcopy(state["carry"]), rng)

    def state(self) -> dict[str, Any]:
        return {"params": dict(self.params), "carry": copy.deepcopy(self.carry)}

    @staticmethod
    @abstractmethod
    def draw_params(rng: np.random.Generator) -> dict[str, float]:
        """This instance's personality: base levels, amplitudes, phases."""

    @staticmethod
    @abstractmethod
    def initial_carry(params: dict[str, float], start: float, rng: np.random.Generator) -> dict[str, Any]:
        """Start in the stationary regime, so the first samples show no warm-up transient."""

    @abstractmethod
    def advance(self, t: F64) -> F64:
        """Values (len(t), channels) for the next block of timestamps, updating the carry."""

    def ar(self, key: str, n: int, *, sigma: float, tau_s: float) -> F64:
        """Continue the AR process whose last value is carry[key]."""
        path = _ar_process(
            self.rng, n, sigma=sigma, tau_s=tau_s, rate_hz=self.rate_hz, previous=self.carry[key]
        )
        self.carry[key] = float(path[-1])
        return path

    def filtered(self, key: str, kicks: F64, tau_s: float) -> F64:
        """Kicks passed through an exponential memory whose last value is carry[key]."""
        path = _ar1(kicks, _decay(tau_s, self.rate_hz), self.carry[key])
        self.carry[key] = float(path[-1])
        return path


class _GridFrequency(_Model):
    """Continental-European-style mains frequency around 50 Hz.

    Secondary control leaves a slow mean-reverting wander of a few tens of mHz; faster load noise sits on
    top. Load steps and the scheduled generation changes at full hours and quarters kick the power balance:
    frequency dips or rises within ~20 s (primary control) and settles back over minutes (secondary control).
    """

    channels = ("frequency_hz",)
    _PRIMARY_TAU_S = 6.0
    _SECONDARY_TAU_S = 150.0

    @staticmethod
    def draw_params(rng: np.random.Generator) -> dict[str, float]:
        return {
            "nominal_hz": 50.0,
            "wander_hz": float(rng.uniform(0.016, 0.026)),
            "load_noise_hz": float(rng.uniform(0.004, 0.007)),
            "step_hz": float(rng.uniform(0.010, 0.020)),
            "schedule_hz": float(rng.uniform(0.020, 0.040)),
            "meter_noise_hz": float(rng.uniform(0.0008, 0.0013)),
        }

    @staticmethod
    def initial_carry(params: dict[str, float], start: float, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "wander": float(rng.normal(0.0, params["wander_hz"])),
            "load_noise": float(rng.normal(0.0, params["load_noise_hz"])),
            "secondary": 0.0,
            "primary": 0.0,
        }

    def advance(self, t: F64) -> F64:
        n, p = t.size, self.params
        wander = self.ar("wander", n, sigma=p["wander_hz"], tau_s=300.0)
        load_noise = self.ar("load_noise", n, sigma=p["load_noise_hz"], tau_s=20.0)
        kicks = self._imbalance_kicks(t)
        # Difference of two exponentials: zero at the kick, peaks after ~20 s, gone after a few minutes.
        response = self.filtered("secondary", kicks, self._SECONDARY_TAU_S) - self.filtered(
            "primary", kicks, self._PRIMARY_TAU_S
        )
        meter = self.rng.normal(0.0, p["meter_noise_hz"], n)
        return (p["nominal_hz"] + wander + load_noise + response + meter)[:, None]

    def _imbalance_kicks(self, t: F64) -> F64:
        p = self.params
        kicks = _poisson_kicks(self.rng, t.size, every_s=600.0, sigma=p["step_hz"], rate_hz=self.rate_hz)
        hour = _crosses(t, _HOUR_S, self.rate_hz)
        quarter = _crosses(t, 900.0, self.rate_hz) & ~hour
        kicks[hour] += self.rng.normal(0.0, p["schedule_hz"], int(hour.sum()))
        kicks[quarter] += self.rng.normal(0.0, p["schedule_hz"] / 3.0, int(quarter.sum()))
        return kicks


class _Voltage(_Model):
    """Three-phase low-voltage RMS around 230 V.

    Everything load-driven is shared by the phases (daily demand cycle, slow upstream wander, appliances
    switching), each phase adds its own small imbalance and meter noise, so the phases track each other
    closely and a phase that stops doing so stands out.
    """

    channels = ("v_a", "v_b", "v_c")

    @staticmethod
    def draw_params(rng: np.random.Generator) -> dict[str, float]:
        params = {
            "nominal_v": float(rng.uniform(231.0, 233.0)),
            "daily_drop_v": float(rng.uniform(3.0, 5.0)),
            "wander_v": float(rng.uniform(0.6, 1.0)),
            "flicker_v": float(rng.uniform(0.25, 0.4)),
            "switching_v": float(rng.uniform(0.5, 0.8)),
            "phase_wander_v": float(rng.uniform(0.12, 0.2)),
            "meter_noise_v": float(rng.uniform(0.04, 0.07)),
        }
        for phase in "abc":
            params[f"offset_{phase}"] = float(rng.normal(0.0, 0.5))
            params[f"gain_{phase}"] = float(rng.uniform(0.9, 1.1))
        return params

    @staticmethod
    def initial_carry(params: dict[str, float], start: float, rng: np.random.Generator) -> dict[str, Any]:
        carry: dict[str, Any] = {
            "wander": float(rng.normal(0.0, params["wander_v"])),
            "flicker": float(rng.normal(0.0, params["flicker_v"])),
            "switching": 0.0,
        }
        for phase in "abc":
            carry[f"phase_{phase}"] = float(rng.normal(0.0, params["phase_wander_v"]))
        return carry

    def advance(self, t: F64) -> F64:
        n, p = t.size, self.params
        switching_kicks = _poisson_kicks(
            self.rng, n, every_s=180.0, sigma=p["switching_v"], rate_hz=self.rate_hz
        )
        shared = (
            -p["daily_drop_v"] * _residential_load(t)
            + self.ar("wander", n, sigma=p["wander_v"], tau_s=900.0)
            + self.ar("flicker", n, sigma=p["flicker_v"], tau_s=20.0)
            + self.filtered("switching", switching_kicks, 400.0)
        )
        phases = []
        for phase in "abc":
            own = self.ar(f"phase_{phase}", n, sigma=p["phase_wander_v"], tau_s=300.0)
            meter = self.rng.normal(0.0, p["meter_noise_v"], n)
            phases.append(p["nominal_v"] + p[f"offset_{phase}"] + p[f"gain_{phase}"] * shared + own + meter)
        return np.stack(phases, axis=1)


# One textbook lead-II beat as Gaussian waves: (offset from the R peak s, width s, amplitude per mV of R).
_ECG_WAVES = {
    "P": (-0.20, 0.025, 0.12),
    "Q": (-0.035, 0.010, -0.10),
    "R": (0.0, 0.011, 1.0),
    "S": (0.035, 0.011, -0.22),
    "T": (0.28, 0.060, 0.25),
}
# How far a beat reaches before and after its R peak (P and T waves out to ~4 widths).
_BEAT_BEFORE_S = 0.35
_BEAT_AFTER_S = 0.75


class _Ecg(_Model):
    """Single-lead ECG in mV: PQRST beats with heart-rate variability, respiration and noise.

    RR intervals follow a slowly drifting heart rate, respiratory sinus arrhythmia and short-term
    variability; QT stretches with RR (Bazett). Respiration also modulates beat amplitude and the baseline,
    which additionally wanders slowly; sensor noise and a trace of mains hum finish it.
    """

    channels = ("ecg_mv",)

    @staticmethod
    def draw_params(rng: np.random.Generator) -> dict[str, float]:
        return {
            "heart_rate_bpm": float(rng.uniform(62.0, 78.0)),
            "r_mv": float(rng.uniform(0.9, 1.4)),
            "t_gain": float(rng.uniform(0.8, 1.3)),
            "resp_hz": float(rng.uniform(0.2, 0.3)),
            "resp_phase": float(rng.uniform(0.0, 2.0 * np.pi)),
            "resp_baseline_mv": float(rng.uniform(0.04, 0.1)),
            "wander_mv": float(rng.uniform(0.03, 0.06)),
            "noise_mv": float(rng.uniform(0.008, 0.015)),
            "hum_mv": float(rng.uniform(0.0, 0.006)),
            "hum_phase": float(rng.uniform(0.0, 2.0 * np.pi)),
        }

    @staticmethod
    def initial_carry(params: dict[str, float], start: float, rng: np.random.Generator) -> dict[str, Any]:
        mean_rr = 60.0 / params["heart_rate_bpm"]
        return {
            "origin": start,  # phases are computed from here: epoch seconds are too large for 50 Hz sines
            "next_r": start - float(rng.uniform(0.0, mean_rr)),
            "rate_drift_bpm": float(rng.normal(0.0, 3.0)),
            "short_term": 0.0,
            "wander": float(rng.normal(0.0, params["wander_mv"])),
            "beats": [],  # [r_time, amplitude, rr] of drawn beats that still reach future samples
        }

    def advance(self, t: F64) -> F64:
        n, p = t.size, self.params
        elapsed = t - float(self.carry["origin"])
        beats = self._beats_until(float(t[-1]) + _BEAT_BEFORE_S)
        trace = _render_beats(float(t[0]), 1.0 / self.rate_hz, n, beats, p)
        self.carry["beats"] = [beat for beat in beats if beat[0] > float(t[-1]) - _BEAT_AFTER_S]
        breathing = p["resp_baseline_mv"] * np.sin(2.0 * np.pi * p["resp_hz"] * elapsed + p["resp_phase"])
        wander = self.ar("wander", n, sigma=p["wander_mv"], tau_s=4.0)
        hum = p["hum_mv"] * np.sin(2.0 * np.pi * 50.0 * elapsed + p["hum_phase"])
        noise = self.rng.normal(0.0, p["noise_mv"], n)
        return (trace + breathing + wander + hum + noise)[:, None]

    def _beats_until(self, horizon: float) -> list[list[float]]:
        """Carried beats plus newly drawn ones with R peaks up to `horizon`."""
        p, carry = self.params, self.carry
        beats: list[list[float]] = [list(beat) for beat in carry["beats"]]
        while carry["next_r"] <= horizon:
            r_time = float(carry["next_r"])
            breath = 2.0 * np.pi * p["resp_hz"] * (r_time - carry["origin"]) + p["resp_phase"]
            # Heart rate drifts slowly (sigma ~3 bpm); short-term variability forgets within a few beats.
            carry["rate_drift_bpm"] = 0.98 * carry["rate_drift_bpm"] + float(self.rng.normal(0.0, 0.6))
            carry["short_term"] = 0.8 * carry["short_term"] + float(self.rng.normal(0.0, 0.012))
            heart_rate = max(40.0, p["heart_rate_bpm"] + carry["rate_drift_bpm"])
            rr = 60.0 / heart_rate * (1.0 + 0.035 * math.sin(breath) + carry["short_term"])
            amplitude = 1.0 + 0.06 * math.cos(breath) + float(self.rng.normal(0.0, 0.02))
            beats.append([r_time, amplitude, rr])
            carry["next_r"] = r_time + rr
        return beats


def _render_beats(
    t0: float, period: float, n: int, beats: list[list[float]], params: dict[str, float]
) -> F64:
    """Sum every beat's Gaussian waves onto the n-sample grid starting at t0."""
    if not beats:
        return np.zeros(n)
    table = np.asarray(beats, dtype=np.float64)
    r_times, amplitudes, rrs = table[:, 0], table[:, 1], table[:, 2]
    reach = math.ceil((_BEAT_BEFORE_S + _BEAT_AFTER_S) / period) + 1
    first = np.ceil((r_times - _BEAT_BEFORE_S - t0) / period).astype(np.int64)
    index = first[:, None] + np.arange(reach)[None, :]
    since_r = t0 + index * period - r_times[:, None]
    qt_stretch = np.sqrt(rrs)[:, None]  # Bazett: QT grows with the square root of RR
    shape: F64 = np.zeros(index.shape)
    for wave, (offset, width, gain) in _ECG_WAVES.items():
        stretch = qt_stretch if wave == "T" else 1.0
        height = gain * params["t_gain"] if wave == "T" else gain
        centre, spread = offset * stretch, width * stretch
        shape = shape + height * amplitudes[:, None] * np.exp(-0.5 * ((since_r - centre) / spread) ** 2)
    inside = (index >= 0) & (index < n)
    # With weights bincount already returns float64; asarray only tells the type checker so.
    return np.asarray(
        np.bincount(index[inside], weights=shape[inside] * params["r_mv"], minlength=n), np.float64
    )


class _Server(_Model):
    """One web service, per-minute: requests drive CPU and latency.

    Requests follow a business-day cycle, quieter weekends and autocorrelated traffic swings, counted with
    overdispersion. CPU is idle load plus work per request plus an hourly cron and a nightly batch job;
    latency grows like a queue, 1 / (1 - utilisation), so it bends upward at high load.
    """

    channels = ("cpu_pct", "latency_ms", "requests")

    @staticmethod
    def draw_params(rng: np.random.Generator) -> dict[str, float]:
        base_rpm = float(rng.uniform(600.0, 1400.0))
        return {
            "base_rpm": base_rpm,
            "capacity_rpm": base_rpm * float(rng.uniform(1.9, 2.4)),
            "shift_h": float(rng.uniform(-1.5, 1.5)),
            "weekend": float(rng.uniform(0.55, 0.8)),
            "idle_cpu_pct": float(rng.uniform(3.0, 8.0)),
            "cpu_per_util_pct": float(rng.uniform(65.0, 85.0)),
            "base_latency_ms": float(rng.uniform(25.0, 60.0)),
            "cron_cpu_pct": float(rng.uniform(4.0, 8.0)),
            "batch_hour": float(rng.integers(1, 4)),
        }

    @staticmethod
    def initial_carry(params: dict[str, float], start: float, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "traffic_slow": float(rng.normal(0.0, 0.08)),
            "traffic_fast": float(rng.normal(0.0, 0.07)),
            "cpu_noise": float(rng.normal(0.0, 0.8)),
            "latency_noise": float(rng.normal(0.0, 0.05)),
        }

    def advance(self, t: F64) -> F64:
        n, p = t.size, self.params
        minutes = 1.0 / (60.0 * self.rate_hz)  # minutes per sample
        swing = self.ar("traffic_slow", n, sigma=0.08, tau_s=4 * _HOUR_S) + self.ar(
            "traffic_fast", n, sigma=0.07, tau_s=600.0
        )
        expected = p["base_rpm"] * minutes * _business_load(t, p["shift_h"]) * _weekly_factor(t, p["weekend"])
        # Gamma-mixed Poisson (negative binomial): real request counts are burstier than Poisson.
        requests = self.rng.poisson(expected * np.exp(swing) * self.rng.gamma(400.0, 1.0 / 400.0, n)).astype(
            np.float64
        )
        hour, minute = _hour_of_day(t), _minute_of_hour(t)
        batch = np.where((hour >= p["batch_hour"]) & (hour < p["batch_hour"] + 0.5), 0.15, 0.0)
        utilisation = requests / (p["capacity_rpm"] * minutes) + batch
        cron = np.where(minute < 2.0, p["cron_cpu_pct"], 0.0)
        cpu = (
            p["idle_cpu_pct"]
            + p["cpu_per_util_pct"] * utilisation
            + cron
            + self.ar("cpu_noise", n, sigma=0.8, tau_s=900.0)
            + self.rng.normal(0.0, 0.4, n)
        )
        queueing = (1.0 + 0.3 * utilisation) / (1.0 - np.minimum(utilisation, 0.93))
        jitter = np.exp(self.ar("latency_noise", n, sigma=0.05, tau_s=1800.0) + self.rng.normal(0.0, 0.05, n))
        latency = p["base_latency_ms"] * queueing * jitter
        return np.stack((np.clip(cpu, 0.0, 100.0), np.maximum(latency, 0.1), requests), axis=1)


class _Logs(_Model):
    """Per-minute log-line counts by level, as a log-line counter reports them.

    The overall rate follows the service's day and week; each level is a gamma-mixed Poisson count.
    Warnings and errors share a "trouble" factor (retries, timeouts) so they rise together, errors and
    criticals are rare, and an hourly job writes a burst of info lines. `total` is the sum of the levels.
    """

    channels = ("debug", "info", "warn", "error", "critical", "total")
    # level -> (share of lines, gamma shape: smaller is burstier)
    _LEVELS: ClassVar[dict[str, tuple[float, float]]] = {
        "debug": (0.36, 20.0),
        "info": (0.60, 30.0),
        "warn": (0.03, 6.0),
        "error": (0.004, 3.0),
        "critical": (0.0002, 2.0),
    }

    @staticmethod
    def draw_params(rng: np.random.Generator) -> dict[str, float]:
        return {
            "base_lpm": float(rng.uniform(250.0, 600.0)),
            "shift_h": float(rng.uniform(-1.5, 1.5)),
            "weekend": float(rng.uniform(0.55, 0.8)),
            "job_lines": float(rng.uniform(80.0, 200.0)),
        }

    @staticmethod
    def initial_carry(params: dict[str, float], start: float, rng: np.random.Generator) -> dict[str, Any]:
        return {"volume": float(rng.normal(0.0, 0.12)), "trouble": float(rng.normal(0.0, 0.35))}

    def advance(self, t: F64) -> F64:
        n, p = t.size, self.params
        minutes = 1.0 / (60.0 * self.rate_hz)
        volume = np.exp(self.ar("volume", n, sigma=0.12, tau_s=3 * _HOUR_S))
        lines = (
            p["base_lpm"]
            * minutes
            * _business_load(t, p["shift_h"])
            * _weekly_factor(t, p["weekend"])
            * volume
        )
        # Mean-one lognormal, so "trouble" changes the texture but not the average error rate.
        trouble = np.exp(self.ar("trouble", n, sigma=0.35, tau_s=900.0) - 0.5 * 0.35**2)
        counts = []
        for level, (share, shape) in self._LEVELS.items():
            expected = lines * share * (trouble if level in ("warn", "error") else 1.0)
            counts.append(
                self.rng.poisson(expected * self.rng.gamma(shape, 1.0 / shape, n)).astype(np.float64)
            )
        job = np.where(_minute_of_hour(t) < 2.0, p["job_lines"] * minutes, 0.0)
        counts[1] += self.rng.poisson(job)
        return np.stack((*counts, np.sum(counts, axis=0)), axis=1)


# --------------------------------------------------------------------------------------------------------
# Domain table


@dataclass(frozen=True, slots=True)
class _DomainSpec:
    model: type[_Model]
    default_rate_hz: float
    rate_limits_hz: tuple[float, float]
    block_s: float  # generation block: long enough to hold several anomalies and their context
    event_s: tuple[float, float]  # durations of anomalies the stream injects


_SPECS: dict[str, _DomainSpec] = {
    "grid_frequency": _DomainSpec(_GridFrequency, 1.0, (0.01, 100.0), _HOUR_S, (20.0, 300.0)),
    "voltage": _DomainSpec(_Voltage, 1.0, (0.01, 100.0), _HOUR_S, (30.0, 600.0)),
    "ecg": _DomainSpec(_Ecg, 250.0, (100.0, 360.0), 60.0, (2.0, 8.0)),
    "server": _DomainSpec(_Server, 1.0 / 60.0, (1.0 / 3600.0, 1.0), _DAY_S, (900.0, 5400.0)),
    "logs": _DomainSpec(_Logs, 1.0 / 60.0, (1.0 / 3600.0, 1.0), _DAY_S, (600.0, 3600.0)),
}

_MIN_BLOCK = 64


def _spec(domain: str) -> _DomainSpec:
    if domain not in _SPECS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    return _SPECS[domain]


def resolve_rate(domain: str, rate_hz: float | None) -> float:
    spec = _spec(domain)
    rate = spec.default_rate_hz if rate_hz is None else float(rate_hz)
    low, high = spec.rate_limits_hz
    if not math.isfinite(rate) or not low <= rate <= high:
        raise ValueError(f"{domain} rate must lie in [{low:g}, {high:g}] Hz, got {rate_hz}")
    return rate


# --------------------------------------------------------------------------------------------------------
# Endless stream


@dataclass(frozen=True, slots=True)
class _StreamConfig:
    stream: str
    domain: str
    start: float
    rate_hz: float
    anomaly_rate_per_hour: float
    anomaly_free_s: float

    @property
    def block_len(self) -> int:
        return max(_MIN_BLOCK, round(_spec(self.domain).block_s * self.rate_hz))

    @property
    def event_lengths(self) -> tuple[int, int]:
        low_s, high_s = _spec(self.domain).event_s
        longest = max(1, min(round(high_s * self.rate_hz), self.block_len // 8))
        return min(max(1, round(low_s * self.rate_hz)), longest), longest


class SimulatedStream:
    """An endless source of `domain` data for the daemon, with optional labelled anomalies.

    Anomalies arrive as a Poisson process at `anomaly_rate_per_hour` (capped by what fits at the required
    spacing) and never within the first `anomaly_free_s` seconds, which leaves a clean warm-up to train on.
    The normal data does not depend on the anomaly settings: an anomalous stream differs from the clean one
    with the same generator only inside its labels.
    """

    def __init__(
        self,
        stream: str,
        domain: str,
        *,
        start: float,
        rng: np.random.Generator,
        rate_hz: float | None = None,
        anomaly_rate_per_hour: float = 0.0,
        anomaly_free_s: float = 0.0,
    ) -> None:
        if not math.isfinite(anomaly_rate_per_hour) or anomaly_rate_per_hour < 0.0:
            raise ValueError(f"anomaly_rate_per_hour must be >= 0, got {anomaly_rate_per_hour}")
        if not math.isfinite(anomaly_free_s) or anomaly_free_s < 0.0:
            raise ValueError(f"anomaly_free_s must be >= 0, got {anomaly_free_s}")
        config = _StreamConfig(
            stream,
            domain,
            float(start),
            resolve_rate(domain, rate_hz),
            anomaly_rate_per_hour,
            anomaly_free_s,
        )
        # Separate generators keep the normal data independent of whether anomalies are drawn.
        model_seed, anomaly_seed = (int(seed) for seed in rng.integers(0, 2**63, size=2))
        model_rng = np.random.default_rng(model_seed)
        model = _spec(domain).model.create(config.rate_hz, config.start, model_rng)
        self._setup(config, model, np.random.default_rng(anomaly_seed), block_index=0)

    def _setup(
        self, config: _StreamConfig, model: _Model, anomaly_rng: np.random.Generator, block_index: int
    ) -> None:
        self._config = config
        self._model = model
        self._anomaly_rng = anomaly_rng
        self._block_index = block_index
        self._offset = 0
        self._generate_block()

    @property
    def stream(self) -> str:
        return self._config.stream

    @property
    def domain(self) -> str:
        return self._config.domain

    @property
    def channels(self) -> tuple[str, ...]:
        return self._model.channels

    @property
    def rate_hz(self) -> float:
        return self._config.rate_hz

    def next_chunk(self, n: int) -> tuple[Series, list[Label]]:
        """The next `n` samples, and the labels of anomalies that start within them."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        stamps: list[F64] = [np.empty(0)]
        values: list[F32] = [np.empty((0, len(self.channels)), dtype=np.float32)]
        labels: list[Label] = []
        remaining = n
        while remaining > 0:
            if self._offset == len(self._block):
                self._block_index += 1
                self._offset = 0
                self._generate_block()
            stop = min(self._offset + remaining, len(self._block))
            stamps.append(self._block.timestamps[self._offset : stop])
            values.append(self._block.values[self._offset : stop])
            labels.extend(label for index, label in self._labels if self._offset <= index < stop)
            remaining -= stop - self._offset
            self._offset = stop
        series = Series(np.concatenate(stamps), self.channels, np.concatenate(values), self._config.rate_hz)
        return series, labels

    def snapshot(self) -> dict[str, Any]:
        """Compact, JSON-serialisable: the state at the start of the current block plus the read position."""
        config = self._config
        return {
            "version": _SNAPSHOT_VERSION,
            "stream": config.stream,
            "domain": config.domain,
            "start": config.start,
            "rate_hz": config.rate_hz,
            "anomaly_rate_per_hour": config.anomaly_rate_per_hour,
            "anomaly_free_s": config.anomaly_free_s,
            "block_index": self._block_index,
            "offset": self._offset,
            "block_start": copy.deepcopy(self._block_start),
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> SimulatedStream:
        """A stream that continues exactly where the snapshotted one was."""
        if snapshot.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported SimulatedStream snapshot version {snapshot.get('version')!r}")
        config = _StreamConfig(
            str(snapshot["stream"]),
            str(snapshot["domain"]),
            float(snapshot["start"]),
            resolve_rate(str(snapshot["domain"]), float(snapshot["rate_hz"])),
            float(snapshot["anomaly_rate_per_hour"]),
            float(snapshot["anomaly_free_s"]),
        )
        block_start = snapshot["block_start"]
        model_rng = _rng_from_state(block_start["model_rng"])
        model = _spec(config.domain).model.from_state(config.rate_hz, block_start["model"], model_rng)
        restored = cls.__new__(cls)
        # Replaying the current block from its start state regenerates it bit for bit.
        restored._setup(
            config, model, _rng_from_state(block_start["anomaly_rng"]), int(snapshot["block_index"])
        )
        offset = int(snapshot["offset"])
        if not 0 <= offset <= len(restored._block):
            raise ValueError(f"snapshot offset {offset} outside the block")
        restored._offset = offset
        return restored

    def _generate_block(self) -> None:
        config = self._config
        self._block_start = {
            "model": self._model.state(),
            "model_rng": _rng_state(self._model.rng),
            "anomaly_rng": _rng_state(self._anomaly_rng),
        }
        first = self._block_index * config.block_len
        timestamps = (
            config.start + np.arange(first, first + config.block_len, dtype=np.float64) / config.rate_hz
        )
        values = self._model.advance(timestamps).astype(np.float32)
        clean = Series(timestamps, self._model.channels, values, config.rate_hz)
        self._block, labels = self._with_anomalies(clean, first)
        self._labels = [(int(np.searchsorted(timestamps, label.start)), label) for label in labels]

    def _with_anomalies(self, block: Series, first: int) -> tuple[Series, list[Label]]:
        config = self._config
        if config.anomaly_rate_per_hour == 0.0:
            return block, []
        shortest, longest = config.event_lengths
        gap = longest
        # Half a gap of margin at both block ends keeps anomalies in neighbouring blocks a full gap apart.
        margin = math.ceil(gap / 2)
        warm_up = math.ceil(config.anomaly_free_s * config.rate_hz) - first
        prefix = max(margin, warm_up)
        hours = len(block) / config.rate_hz / _HOUR_S
        wanted = int(self._anomaly_rng.poisson(config.anomaly_rate_per_hour * hours))
        fits = max_injections(
            len(block),
            min_gap=gap,
            length_range=(shortest, longest),
            protect_prefix=prefix,
            protect_suffix=margin,
        )
        count = min(wanted, fits)
        if count == 0:
            return block, []
        return inject_many(
            block,
            rng=self._anomaly_rng,
            kinds=KINDS,
            count=count,
            min_gap=gap,
            length_range=(shortest, longest),
            protect_prefix=prefix,
            protect_suffix=margin,
        )
