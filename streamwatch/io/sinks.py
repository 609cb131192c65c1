"""Where alert events go: stdout, a JSONL file, memory (tests), and the dead-letter file.

Every sink takes a batch at a time, so transactional sinks (Kafka, later) fit the same seam.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from streamwatch.records import AlertEvent, DataQualityEvent, SourcePosition


class Sink(Protocol):
    def emit(self, alerts: Sequence[AlertEvent], quality: Sequence[DataQualityEvent]) -> None: ...

    def close(self) -> None: ...


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

    def emit(self, alerts: Sequence[AlertEvent], quality: Sequence[DataQualityEvent]) -> None:
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

    def emit(self, alerts: Sequence[AlertEvent], quality: Sequence[DataQualityEvent]) -> None:
        payload = _lines(alerts, quality, self._include_quality)
        if payload:
            self._file.write(payload)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class MemorySink:
    """Keeps everything in lists: the test sink, real code with the same contract as the others."""

    def __init__(self) -> None:
        self.alerts: list[AlertEvent] = []
        self.quality: list[DataQualityEvent] = []
        self.closed = False

    def emit(self, alerts: Sequence[AlertEvent], quality: Sequence[DataQualityEvent]) -> None:
        self.alerts.extend(alerts)
        self.quality.extend(quality)

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
