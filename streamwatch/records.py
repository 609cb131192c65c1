"""Frozen value objects that travel through the pipeline.

Time is event time in seconds since the Unix epoch (UTC) as a float. A float keeps the per-sample hot path
free of datetime objects; conversion to aware ISO-8601 happens only at the edges (`iso_utc`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

AlertStatus = Literal["firing", "resolved"]
AlertKind = Literal["anomaly", "detector-degraded"]


def iso_utc(ts: float) -> str:
    """ISO-8601 UTC with millisecond precision and a trailing Z, e.g. 2026-03-02T02:34:40.000Z."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso_utc(text: str) -> float:
    """Parse ISO-8601 (naive means UTC) into epoch seconds. Raises ValueError on anything else."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of a stream: event time and one value per channel."""

    stream: str
    ts: float
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Consecutive samples of one stream as arrays: what bulk decoders produce and the engine's bulk path
    takes. `values[i]` (one column per channel, in `channels` order) was observed at `timestamps[i]`."""

    stream: str
    channels: tuple[str, ...]
    timestamps: npt.NDArray[np.float64]  # (N,)
    values: FloatArray  # (N, len(channels)), float32

    def __len__(self) -> int:
        return int(self.timestamps.size)


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a record came from, carried into alert events (Kafka topic/partition/offset, file line...)."""

    topic: str
    partition: int = 0
    offset: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of one stream, `data` shaped (length, channels), raw values (not normalised)."""

    stream: str
    seq: int
    start: float
    end: float
    channels: tuple[str, ...]
    data: FloatArray
    source: SourcePosition | None = None


@dataclass(frozen=True, slots=True)
class WindowScore:
    """The verdict on one window: combined score, the threshold it met, and each channel's evidence (`shares`,
    relative: alert events report them normalised to sum 1)."""

    stream: str
    seq: int
    start: float
    end: float
    score: float
    threshold: float
    shares: Mapping[str, float]
    model_version: str
    source: SourcePosition | None = None

    @property
    def exceeds(self) -> bool:
        return self.score > self.threshold


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert lifecycle transition, following the alert contract (schemas/alert-event.schema.json)."""

    alert_id: str
    stream: str
    status: AlertStatus
    severity: str
    window_start: float
    window_end: float
    score: float
    threshold: float
    model_version: str
    channels: Mapping[str, float]
    detected_at: float
    source: SourcePosition | None = None
    # "anomaly" for a stream's alert; "detector-degraded" when canaries find a group's model half blind
    # (then `stream` names the stream group, `score` is the canary hit rate and `threshold` its floor).
    kind: AlertKind = "anomaly"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "alert_id": self.alert_id,
            "stream": self.stream,
            "status": self.status,
            "severity": self.severity,
            "window_start": iso_utc(self.window_start),
            "window_end": iso_utc(self.window_end),
            "score": _finite(self.score),
            "threshold": _finite(self.threshold),
            "model_version": self.model_version,
            "channels": {name: _finite(share) for name, share in self.channels.items()},
            "detected_at": iso_utc(self.detected_at),
        }
        if self.source is not None:
            body["source"] = self.source.to_json()
        if self.kind != "anomaly":
            body["kind"] = self.kind
        return body


@dataclass(frozen=True, slots=True)
class DataQualityEvent:
    """Not an anomaly: something about the data itself (a gap, a late record) worth telling an operator."""

    stream: str
    kind: Literal["gap", "late", "reset"]
    start: float
    end: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "data_quality",
            "stream": self.stream,
            "kind": self.kind,
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, kept unchanged with the reason."""

    raw: bytes
    reason: str
    source: SourcePosition | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _finite(value: float) -> float:
    # The contract promises finite numbers; JSON has no NaN/Inf anyway.
    if math.isfinite(value):
        return float(value)
    return 1e308 if value > 0 else -1e308
