"""Anomalies drawn from a trained autoencoder: disturb what the model believes about a stretch of normal data
and splice the difference into that data.

For each planned segment the windows are normalised with the stream's profile and encoded exactly as the
detector would (clipped, each window's own mean removed). Then one of three perturbations moves the latent
codes:

- `encoder_weights`: Gaussian noise, multiplicative and additive (relative to each tensor's size), on a copy
  of the encoder's parameters; the model itself is never touched;
- `latent_noise`: independent Gaussian noise on every window's latent code;
- `latent_offset`: one constant offset, along a random direction, for the whole segment.

What is spliced in is the *change* the perturbation makes to the decoder's output, added to the original
values. Splicing the decoder's output itself would replace the data's noise and fine detail with the
model's smoother rendering, an anomaly of its own at any severity; adding the change keeps them, keeps each
window's mean (the model never sees it) and makes severity 0 exactly no change.

Severity 0 changes nothing and 1 is clearly anomalous to a human. It sets two things, both measured on the
normal windows of the series, so that it means the same for every kind and model:

- how far the latent codes move: s * `LATENT_SPREADS_AT_SEVERITY_ONE` typical deviations of the normal codes
  per component (for weight noise, the noise scale relative to the weights is searched until the codes move
  that far). This fixes the *shape* of the change, from subtle to far off anything the model has seen;
- how large the change is in the data: s * `VARIATIONS_AT_SEVERITY_ONE` times the normal windows' own
  variation (RMS). Latent distance alone does not fix it: decoders saturate (an LSTM's bounded state capped
  its change near 0.4 normalised units whatever the severity), and it is the data a human looks at.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from streamwatch.codecs import read_csv as read_csv_frame
from streamwatch.core.bootstrap import GroupModel, sliding
from streamwatch.core.detector import model_input
from streamwatch.core.profile import StreamProfile, fit_profile, sampling_interval
from streamwatch.generate.inject import KINDS, MODEL_KINDS, Label, inject
from streamwatch.generate.simulate import Series
from streamwatch.models.runtime import AutoencoderNet, TorchReconstructor, denormals_flushed

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


# Latent displacement at severity 1, in typical deviations of the normal latent codes per component: twice
# as far from a window's own code as normal codes stray from their mean, in a direction normal data need
# not take.
LATENT_SPREADS_AT_SEVERITY_ONE = 2.0
# Size of the change at severity 1 (RMS per sample), in units of the normal windows' own variation around
# their means (RMS of what the model sees). Measured with bench/generated_severity.py on conv models: at 3
# the default detector finds nearly every segment at severity 1 and few at 0.25, as with classic injection.
VARIATIONS_AT_SEVERITY_ONE = 3.0
# Normal windows used to measure the latent spread: enough for a stable standard deviation, few enough to
# encode in a fraction of a second.
_SPREAD_WINDOWS = 2048
# A segment spans one to this many whole windows (fewer when the series is short).
_MAX_SEGMENT_WINDOWS = 4
# Weight-noise scale search: start small enough to stay in the linear regime, stop within this tolerance,
# and never add noise more than a few times the weights' own size (the displacement only saturates there).
_FIRST_WEIGHT_NOISE = 0.02
_WEIGHT_NOISE_TOLERANCE = 0.05
_WEIGHT_NOISE_STEPS = 16
_MAX_WEIGHT_NOISE = 4.0
# A label names the channels that changed at least this share as much as the most changed one: the decoder
# mixes channels, so every channel moves a little, but an operator should be pointed at the ones that moved.
_LABELLED_CHANGE_SHARE = 0.25


# --------------------------------------------------------------------------------------------------------
# Inputs


def read_base(path: Path) -> Series:
    """A normal base series from a CSV (`timestamp,<channel>,...`), its rate from the median spacing."""
    frame = read_csv_frame(path, stream=path.stem)
    rate_hz = 1.0 / sampling_interval(frame.timestamps)
    return Series(frame.timestamps.copy(), frame.channels, frame.values.copy(), rate_hz)


def autoencoder_of(model: GroupModel) -> TorchReconstructor:
    """The model's autoencoder; a model without a latent code (PCA) cannot generate anomalies."""
    reconstructor = model.detector.reconstructor
    if not isinstance(reconstructor, TorchReconstructor):
        kind = getattr(reconstructor, "kind", type(reconstructor).__name__)
        raise ValueError(
            f"model {model.version} is a {kind} model, which has no latent code to perturb; "
            "train a conv or lstm model (detector.model: conv or lstm) to generate anomalies from it"
        )
    return reconstructor


def profile_for(model: GroupModel, stream: str, base: Series) -> StreamProfile:
    """The model's own profile of `stream`; for a stream it never saw, a profile fitted on the (normal) base,
    as a new stream joining the group gets one."""
    known = model.profiles.get(stream)
    if known is not None:
        return known
    return fit_profile(base.channels, base.timestamps, base.values)


# --------------------------------------------------------------------------------------------------------
# Perturbing the latent code


@dataclass(frozen=True, slots=True)
class LatentPerturber:
    """An autoencoder with the units of severity measured on normal windows: the spread of its latent codes
    (RMS over components of their standard deviation) and the windows' own variation (RMS of what the
    model sees)."""

    autoencoder: TorchReconstructor
    latent_spread: float
    window_variation: float

    @classmethod
    def calibrated(cls, autoencoder: TorchReconstructor, normalised: F32) -> LatentPerturber:
        """Measure the latent spread on windows of a normal, normalised series (N, C)."""
        length = autoencoder.length
        available = len(normalised) - length + 1
        if available < 2:
            raise ValueError(f"the base series needs at least {length + 1} samples, got {len(normalised)}")
        stride = max(1, math.ceil(available / _SPREAD_WINDOWS))
        inputs = model_input(sliding(normalised, length, stride))
        latent = autoencoder.encode(inputs)
        per_component = latent.reshape(len(latent), -1).astype(np.float64).std(axis=0)
        spread = _rms(per_component)
        if not math.isfinite(spread) or spread <= 0.0:
            raise ValueError("the model encodes every normal window alike; its latent code has no spread")
        variation = _rms(inputs)
        if not math.isfinite(variation) or variation <= 0.0:
            raise ValueError("the base series is constant within every window; there is no shape to perturb")
        return cls(autoencoder, spread, variation)

    def output_change(self, windows: F32, kind: str, severity: float, generator: torch.Generator) -> F32:
        """Normalised windows (B, L, C) -> how the decoder's output moves under the perturbation, each
        window's change with its mean removed (the model never sees the mean, so it must not move it),
        scaled to the size severity asks for."""
        inputs = model_input(windows)
        if severity == 0.0:
            return np.zeros_like(inputs)
        latent = self.autoencoder.encode(inputs)
        target = severity * LATENT_SPREADS_AT_SEVERITY_ONE * self.latent_spread
        moved = _MOVERS[kind](self.autoencoder.net, inputs, latent, target, generator)
        change = self.autoencoder.decode(moved) - self.autoencoder.decode(latent)
        centred = change - change.mean(axis=1, keepdims=True)
        size = _rms(centred)
        if size <= 0.0:
            raise ValueError(f"the model's decoder does not respond to {kind} perturbations")
        # The latent displacement fixed the change's shape; its size is set in the data (module docstring).
        scaled: F32 = (
            centred * (severity * VARIATIONS_AT_SEVERITY_ONE * self.window_variation / size)
        ).astype(np.float32)
        return scaled


_Mover = Callable[[AutoencoderNet, F32, F32, float, torch.Generator], F32]


def _latent_noise(
    net: AutoencoderNet, inputs: F32, latent: F32, target: float, generator: torch.Generator
) -> F32:
    noise = torch.randn(latent.shape, generator=generator).numpy()
    moved: F32 = (latent + target * noise).astype(np.float32)
    return moved


def _latent_offset(
    net: AutoencoderNet, inputs: F32, latent: F32, target: float, generator: torch.Generator
) -> F32:
    direction = torch.randn(latent.shape[1:], generator=generator).numpy().astype(np.float64)
    # Scaled so each component moves by `target` on average, as latent noise does.
    offset = direction * (target / _rms(direction))
    moved: F32 = (latent + offset[None]).astype(np.float32)
    return moved


def _noisy_encoder(
    net: AutoencoderNet, inputs: F32, latent: F32, target: float, generator: torch.Generator
) -> F32:
    """Latent codes from a copy of the encoder with noisy weights, the noise scaled until the codes move by
    `target` per component (RMS over the segment's windows)."""
    clone = copy.deepcopy(net)
    parameters = clone.encoder_parameters()
    originals = [parameter.detach().clone() for parameter in parameters]
    # One noise draw, then only its scale is searched: the result stays a function of the seed alone.
    relative = [torch.randn(original.shape, generator=generator) for original in originals]
    absolute = [
        torch.randn(original.shape, generator=generator) * _rms(original.numpy()) for original in originals
    ]
    windows = torch.from_numpy(inputs)

    def encoded_with(amount: float) -> F32:
        with torch.no_grad():
            for parameter, original, scaled, added in zip(
                parameters, originals, relative, absolute, strict=True
            ):
                parameter.copy_(original * (1.0 + amount * scaled) + amount * added)
        with torch.inference_mode(), denormals_flushed():
            encoded: F32 = clone.encode(windows).numpy()
        return encoded

    amount = weight_noise_scale(encoded_with, latent, target)
    return encoded_with(amount)


def weight_noise_scale(encoded_with: Callable[[float], F32], latent: F32, target: float) -> float:
    """The weight-noise scale that moves the latent codes by about `target`.

    The displacement grows with the scale, faster than linearly once the noise rivals the weights, so
    proportional steps alone overshoot back and forth; they only find a bracket, which is then halved
    geometrically.
    """
    low, high = 0.0, math.inf
    amount = _FIRST_WEIGHT_NOISE
    for _ in range(_WEIGHT_NOISE_STEPS):
        displacement = _rms(encoded_with(amount) - latent)
        if abs(displacement / target - 1.0) <= _WEIGHT_NOISE_TOLERANCE:
            return amount
        if displacement < target:
            if amount >= _MAX_WEIGHT_NOISE:
                return amount  # saturated: this network cannot be pushed further this way
            low = amount
        else:
            high = amount
        if low > 0.0 and math.isfinite(high):
            amount = math.sqrt(low * high)
        elif displacement > 0.0:
            amount = min(amount * target / displacement, _MAX_WEIGHT_NOISE)
        else:
            amount = min(2.0 * amount, _MAX_WEIGHT_NOISE)  # no measurable effect yet
    return amount


_MOVERS: dict[str, _Mover] = {
    "encoder_weights": _noisy_encoder,
    "latent_noise": _latent_noise,
    "latent_offset": _latent_offset,
}


def _rms(values: npt.ArrayLike) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(array)))) if array.size else 0.0


# --------------------------------------------------------------------------------------------------------
# From window changes to a smooth change of the segment


def window_offsets(length: int, window: int) -> list[int]:
    """Window starts covering a segment, half a window apart, the last one ending with the segment."""
    stride = max(1, window // 2)
    offsets = list(range(0, length - window + 1, stride))
    if offsets[-1] != length - window:
        offsets.append(length - window)
    return offsets


def overlap_add(changes: F32, offsets: Sequence[int], length: int) -> F64:
    """Per-window changes (B, L, C) at `offsets` -> one change (length, C): a weighted average where windows
    overlap (each window counts least at its own edges, where the decoder is least sure), faded in and out
    over a quarter window at the segment's ends so that the splice adds no step of its own, and with no
    mean over the segment."""
    window = changes.shape[1]
    weights = np.sin(np.pi * (np.arange(window) + 0.5) / window) ** 2
    total = np.zeros((length, changes.shape[2]))
    weight_sum = np.zeros(length)
    for change, offset in zip(changes, offsets, strict=True):
        total[offset : offset + window] += weights[:, None] * change
        weight_sum[offset : offset + window] += weights
    fade = _edge_fade(length, max(1, window // 4))[:, None]
    faded: F64 = total / weight_sum[:, None] * fade
    # Fading makes the change lopsided where it was cut off; taking the rest of its mean out along the fade
    # keeps the segment's mean and leaves the ends untouched.
    centred: F64 = faded - fade * (faded.sum(axis=0) / fade.sum())
    return centred


def _edge_fade(length: int, ramp: int) -> F64:
    steps = np.arange(length) + 0.5
    distance_to_edge = np.minimum(steps, length - steps)
    fade: F64 = np.sin(0.5 * np.pi * np.minimum(distance_to_edge / ramp, 1.0)) ** 2
    return fade


# --------------------------------------------------------------------------------------------------------
# Planning


def plan_segments(
    n_samples: int, *, count: int, window: int, hop: int, protect: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """`count` (start, length) segments of whole windows after the first `protect` samples, sorted.

    Each lies in its own equal share of the rest, at least one window before the next share begins (so no
    detector window sees two anomalies), starting on the detector's hop grid where the share allows it.
    """
    if count < 0 or window < 1 or hop < 1 or not 0 <= protect <= n_samples:
        raise ValueError("count, window, hop and the protected prefix must be sensible sizes")
    if count == 0:
        return []
    share = (n_samples - protect) // count
    if share < 2 * window:
        raise ValueError(
            f"{count} anomalies of at least one window ({window} samples) and a window apart need "
            f"{2 * window * count} samples after the normal prefix, there are {n_samples - protect}: "
            "ask for fewer anomalies, a smaller normal fraction or a longer series"
        )
    most_windows = max(1, min(_MAX_SEGMENT_WINDOWS, share // (4 * window)))
    spans = []
    for index in range(count):
        length = window * int(rng.integers(1, most_windows + 1))
        first = protect + index * share
        last = first + share - window - length
        lowest, highest = -(-first // hop), last // hop
        start = hop * int(rng.integers(lowest, highest + 1)) if highest >= lowest else first
        spans.append((start, length))
    return spans


def deal_kinds(kinds: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` kinds, as evenly split as possible (which kinds get one more is random), in random order."""
    order = rng.permutation(len(kinds))
    dealt = [kinds[int(order[index % len(kinds)])] for index in range(count)]
    return [dealt[int(index)] for index in rng.permutation(count)]


def usable_kinds(kinds: Sequence[str], n_channels: int) -> list[str]:
    """The requested kinds without repeats, minus correlation_break on one channel; ValueError on unknown."""
    for kind in kinds:
        if kind not in MODEL_KINDS and kind not in KINDS:
            raise ValueError(
                f"unknown anomaly kind {kind!r}; model kinds: {', '.join(MODEL_KINDS)}; "
                f"classic kinds: {', '.join(KINDS)}"
            )
    usable = [kind for kind in dict.fromkeys(kinds) if kind != "correlation_break" or n_channels >= 2]
    if not usable:
        raise ValueError("none of the requested anomaly kinds applies to this series")
    return usable


# --------------------------------------------------------------------------------------------------------
# Generating


@dataclass(frozen=True, slots=True)
class _Anomaly:
    kind: str
    at: int
    length: int
    seed: int  # its own seed: the same plan gives the same noise at every severity


@dataclass(frozen=True, slots=True)
class _Splicer:
    """What every model-kind anomaly of one series needs."""

    base: Series
    profile: StreamProfile
    normalised: F32
    perturber: LatentPerturber
    nonnegative: npt.NDArray[np.bool_]

    def rewrite(self, work: F64, anomaly: _Anomaly, severity: float) -> Label:
        at, stop = anomaly.at, anomaly.at + anomaly.length
        window = self.perturber.autoencoder.length
        offsets = window_offsets(anomaly.length, window)
        windows = np.stack([self.normalised[at + offset : at + offset + window] for offset in offsets])
        generator = torch.Generator().manual_seed(anomaly.seed)
        changes = self.perturber.output_change(windows, anomaly.kind, severity, generator)
        change = overlap_add(changes, offsets, anomaly.length)
        moved = self.normalised[at:stop].astype(np.float64) + change
        raw = self.profile.denormalise(self.base.timestamps[at:stop], moved)
        # A channel that was never negative (a latency, a percentage) has a physical floor at zero.
        work[at:stop] = np.where(self.nonnegative, np.maximum(raw, 0.0), raw)
        names = tuple(self.base.channels[index] for index in _changed_channels(change))
        return _label(self.base, anomaly, severity, names)


def generate_from_model(
    model: GroupModel,
    base: Series,
    *,
    stream: str,
    rng: np.random.Generator,
    kinds: Sequence[str] = MODEL_KINDS,
    count: int,
    severity: float,
    normal_fraction: float,
) -> tuple[Series, list[Label]]:
    """A copy of the normal `base` with `count` labelled anomalies after its `normal_fraction`, and their
    labels in time order.

    Model kinds (MODEL_KINDS) are drawn from the model's autoencoder; classic kinds (inject.KINDS) are
    injected as `generate` without a model would, on the same window-aligned segments. `stream` picks the
    model's profile for normalisation (a stream the model does not know gets one fitted on `base`).
    Severity 0 changes nothing: its labels (naming every channel) mark where the anomalies would be, the
    chance level for detection rates. The model is never modified.
    """
    _check_request(model, base, severity, normal_fraction)
    autoencoder = autoencoder_of(model)
    usable = usable_kinds(kinds, len(base.channels))
    spans = plan_segments(
        len(base),
        count=count,
        window=model.spec.length,
        hop=model.spec.hop,
        protect=int(len(base) * normal_fraction),
        rng=rng,
    )
    dealt = deal_kinds(usable, len(spans), rng)
    seeds = rng.integers(0, 2**62, size=len(spans))
    anomalies = [
        _Anomaly(kind, at, length, int(seed))
        for kind, (at, length), seed in zip(dealt, spans, seeds, strict=True)
    ]
    if severity == 0.0:
        unchanged = replace(base, values=base.values.copy())
        return unchanged, [_label(base, anomaly, 0.0, base.channels) for anomaly in anomalies]
    profile = profile_for(model, stream, base)
    normalised = profile.normalise(base.timestamps, base.values)
    splicer = _Splicer(
        base,
        profile,
        normalised,
        LatentPerturber.calibrated(autoencoder, normalised),
        np.all(base.values >= 0.0, axis=0),
    )
    work = base.values.astype(np.float64)
    labels = [_apply(splicer, work, anomaly, severity) for anomaly in anomalies]
    return replace(base, values=work.astype(np.float32)), labels


def _apply(splicer: _Splicer, work: F64, anomaly: _Anomaly, severity: float) -> Label:
    if anomaly.kind in MODEL_KINDS:
        return splicer.rewrite(work, anomaly, severity)
    # Classic kinds are computed on the clean base, as inject_many does, and only their span is copied.
    injected, label = inject(
        splicer.base,
        anomaly.kind,
        at=anomaly.at,
        length=anomaly.length,
        rng=np.random.default_rng(anomaly.seed),
        severity=severity,
    )
    stop = anomaly.at + anomaly.length
    work[anomaly.at : stop] = injected.values[anomaly.at : stop]
    return label


def _changed_channels(change: F64) -> tuple[int, ...]:
    per_channel = np.sqrt(np.mean(change**2, axis=0))
    largest = float(per_channel.max())
    if largest <= 0.0:
        return tuple(range(change.shape[1]))
    return tuple(int(index) for index in np.flatnonzero(per_channel >= _LABELLED_CHANGE_SHARE * largest))


def _label(base: Series, anomaly: _Anomaly, severity: float, channels: tuple[str, ...]) -> Label:
    return Label(
        start=float(base.timestamps[anomaly.at]),
        end=float(base.timestamps[anomaly.at + anomaly.length - 1]),
        kind=anomaly.kind,
        channels=channels,
        severity=float(severity),
    )


def _check_request(model: GroupModel, base: Series, severity: float, normal_fraction: float) -> None:
    if not math.isfinite(severity) or severity < 0.0:
        raise ValueError(f"severity must be a finite number >= 0, got {severity}")
    if not 0.0 <= normal_fraction < 1.0:
        raise ValueError(f"the normal fraction must be in [0, 1), got {normal_fraction}")
    if base.channels != model.channels:
        raise ValueError(
            f"the model expects channels {list(model.channels)}, the base series has {list(base.channels)}"
        )
