"""Windows of recent normal data with and without a generator-injected anomaly: what the validation gate
and the canaries test a model's eyesight with.

Each probe is one window cut from a contiguous stretch of normal data; the anomaly covers the window's
second half (a spike a few samples in it), as a live window sees an anomaly that has just begun. Magnitudes
come from the injector's robust scale of the surrounding data, so severity means the same on every stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamwatch.core.bootstrap import StreamSeries
from streamwatch.core.profile import sampling_interval
from streamwatch.generate.inject import inject
from streamwatch.generate.simulate import Series
from streamwatch.records import FloatArray

# Kinds a model must see within one window; drift and dropout need longer spans, correlation_break more
# than one channel.
PROBE_KINDS: tuple[str, ...] = ("spike", "level_shift", "variance_burst", "pattern_change", "flatline")
# Rows of context around a probe window that the injector measures the channel's scale on.
_CONTEXT_WINDOWS = 4


@dataclass(frozen=True, slots=True)
class Probes:
    """Probe windows of one stream: `clean[i]` and `injected[i]` start at `starts[i]` and differ only in
    the anomaly of kind `kinds[i]`."""

    starts: npt.NDArray[np.float64]
    clean: FloatArray
    injected: FloatArray
    kinds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.kinds)


def draw_probes(
    series: StreamSeries,
    *,
    length: int,
    count: int,
    rng: np.random.Generator,
    kinds: tuple[str, ...] = PROBE_KINDS,
    severity: float = 1.0,
) -> Probes:
    """`count` probe windows from the contiguous segments of `series` that hold a whole window (fewer, or
    none, when the data is too short); kinds are dealt in turn, starting at a random one."""
    channels = len(series.channels)
    segments = [(start, stop) for start, stop in series.bounds() if stop - start >= length]
    if not segments or count < 1:
        empty = np.empty((0, length, channels), dtype=np.float32)
        return Probes(np.empty(0), empty, empty.copy(), ())
    sizes = np.asarray([stop - start - length + 1 for start, stop in segments], dtype=np.float64)
    first_kind = int(rng.integers(len(kinds)))
    starts, clean, injected, dealt = [], [], [], []
    for index in range(count):
        segment = int(rng.choice(len(segments), p=sizes / sizes.sum()))
        begin, stop = segments[segment]
        at = begin + int(rng.integers(stop - begin - length + 1))
        kind = kinds[(first_kind + index) % len(kinds)]
        window, anomalous = _probe(series, begin, stop, at, length, kind, rng, severity)
        starts.append(float(series.timestamps[at]))
        clean.append(window)
        injected.append(anomalous)
        dealt.append(kind)
    return Probes(np.asarray(starts), np.stack(clean), np.stack(injected), tuple(dealt))


def _probe(
    series: StreamSeries,
    begin: int,
    stop: int,
    at: int,
    length: int,
    kind: str,
    rng: np.random.Generator,
    severity: float,
) -> tuple[FloatArray, FloatArray]:
    context_begin = max(begin, at - _CONTEXT_WINDOWS * length)
    context_stop = min(stop, at + length + _CONTEXT_WINDOWS * length)
    timestamps = series.timestamps[context_begin:context_stop]
    rate = 1.0 / sampling_interval(timestamps) if len(timestamps) > 1 else 1.0
    context = Series(timestamps, series.channels, series.values[context_begin:context_stop], rate)
    offset = at - context_begin
    onset = offset + length // 2
    changed, _ = inject(context, kind, at=onset, length=offset + length - onset, rng=rng, severity=severity)
    window = slice(offset, offset + length)
    return context.values[window].copy(), changed.values[window].copy()
