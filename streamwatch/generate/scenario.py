"""Labelled test series as `generate` writes them and the quality gate scores them: one rule for both."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamwatch.generate.inject import Label, inject_many
from streamwatch.generate.simulate import Series


def inject_spread(
    series: Series,
    *,
    rng: np.random.Generator,
    kinds: Sequence[str],
    count: int,
    severity: float,
    normal_fraction: float,
) -> tuple[Series, list[Label]]:
    """`count` anomalies spread over the part after the anomaly-free `normal_fraction`, each up to a quarter
    of its share of that part long; kinds that need several channels are skipped on one channel."""
    usable = tuple(kinds)
    if series.values.shape[1] == 1:
        usable = tuple(kind for kind in usable if kind != "correlation_break")
    samples = len(series.timestamps)
    protect = int(samples * normal_fraction)
    longest = max(16, (samples - protect) // (4 * max(count, 1)))
    return inject_many(
        series,
        rng=rng,
        kinds=usable,
        count=count,
        min_gap=longest,
        length_range=(max(8, longest // 4), longest),
        severity=severity,
        protect_prefix=protect,
    )


def levels_only(series: Series) -> Series:
    """A logs-domain series without `total`: log lines carry levels and the total is recounted from them,
    so anomalies must go into the levels to show in rendered lines."""
    keep = [i for i, name in enumerate(series.channels) if name != "total"]
    return Series(
        series.timestamps, tuple(series.channels[i] for i in keep), series.values[:, keep], series.rate_hz
    )
