"""Where alert events go: stdout, a JSONL file, memory (tests), and the dead-letter file; the seam every sink
(webhooks, Alertmanager, InfluxDB) plugs into.

Every sink takes a batch at a time: the alert and data-quality events and the window scores one engine step
produced. Sinks that only want events ignore the scores.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import orjson

from streamwatch.records import AlertEvent, DataQualityEvent, SourcePosition, WindowScore


class Sink(Protocol):
    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AlertStateSink(Protocol):
    """A sink whose receiver holds alerts as state and must keep being told about firing ones
    (Alertmanager). The daemons tell it which streams' alerts it speaks for: none of the old ones at start
    (stream state, where it survives, is restored and adopted), streams taken over and streams handed on."""

    def adopt(self, firing: Iterable[AlertEvent]) -> None: ...

    def release(self, streams: Iterable[str]) -> None: ...

    def release_all(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GroupHealth:
    """How one model group's detector is doing, as the retraining lifecycle sees it (event time `at`)."""

    group: str
    version: str
    at: float
    canary_hit_rate: float | None
    seconds_since_retrain: float | None
    degraded: bool
    retrains_accepted: int
    retrains_rejected: int
    rollbacks: int


@runtime_checkable
class HealthSink(Protocol):
    """A sink that also records detector health (InfluxDB); the daemons hand it figures periodically."""

    def health(self, figures: Sequence[GroupHealth]) -> None: ...


def _line(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body) + b"\n"


def _lines(alerts: Sequence[AlertEvent], quality: Sequence[DataQualityEvent], include_quality: bool) -> bytes:
    chunks = [_line(event.to_json()) for event in alerts]
    if include_quality:
        chunks.extend(_line(event.to_json()) for event in quality)
    return b"".join(chunks)


class StreamSink:
    """JSON lines to a text stream (stdout by default); flushed per batch so alerts show at once."""

    def __init__(self, stream: IO[bytes] | None = None, *, include_quality: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._include_quality = include_quality

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        payload = _lines(alerts, quality, self._include_quality)
        if payload:
            self._stream.write(payload)
            self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


class JsonlSink:
    """Appends JSON lines to a file, flushed per batch (a crash loses at most the batch in flight)."""

    def __init__(self, path: Path, *, include_quality: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab")
        self._include_quality = include_quality

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        payload = _lines(alerts, quality, self._include_quality)
        if payload:
            self._file.write(payload)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class MemorySink:
    """Keeps everything in lists: the test sink, real code with the same contract as the others."""

    def __init__(self, *, keep_scores: bool = False) -> None:
        self.alerts: list[AlertEvent] = []
        self.quality: list[DataQualityEvent] = []
        self.scores: list[WindowScore] = []
        self.closed = False
        self._keep_scores = keep_scores

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        self.alerts.extend(alerts)
        self.quality.extend(quality)
        if self._keep_scores:
            self.scores.extend(scores)

    def close(self) -> None:
        self.closed = True


class DeadLetterFile:
    """Unusable records, unchanged (base64 when not UTF-8), with the reason and where they came from."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab")
        self.count = 0

    def put(self, raw: bytes, reason: str, source: SourcePosition | None = None) -> None:
        body: dict[str, Any] = {"reason": reason}
        try:
            body["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            body["raw_base64"] = base64.b64encode(raw).decode("ascii")
        if source is not None:
            body["source"] = source.to_json()
        self._file.write(_line(body))
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()
