"""The compacted state changelog: each stream's latest state, restored by whoever owns its partition next.

Three records per stream, all keyed by it: `state/<stream>` (windows, threshold, alert machine and level;
written with every transaction that changed it), `profile/<stream>` (its normalisation, written when the
stream starts or moves to a new model) and `buffer/<stream>` (its recent normal data for retraining, written
every few minutes because it is large). A stream's records go to the changelog
partition `input partition % changelog partitions` and name the input topic and partition, so that the owner
of an input partition reads one changelog partition and keeps what is its own.

Every transaction also writes a `checkpoint/<topic>/<partition>` record per input partition it commits offsets
for, holding that offset. Commit markers reach the changelog a moment after the commit returns, so a reader
that merely reads to the end could miss the latest transaction; the restore reads until it has seen the
checkpoint of the committed offset it resumes from, which makes state and offsets one moment in time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

STATE = "state/"
PROFILE = "profile/"
BUFFER = "buffer/"
CHECKPOINT = "checkpoint/"
FORMAT_VERSION = 1


@dataclass(slots=True)
class RestoredStream:
    origin: TopicPartition
    state: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    buffer: dict[str, Any] | None = None


@dataclass(slots=True)
class Restored:
    streams: dict[str, RestoredStream] = field(default_factory=dict)
    checkpoints: dict[TopicPartition, int] = field(default_factory=dict)
    # Per input partition: one past the last record processed (at or after the committed offset, which stays
    # at the first sample still waiting for its stream to start).
    processed: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0

    def consistent_with(self, committed: Mapping[TopicPartition, int | None]) -> bool:
        """Whether the state read so far is that of the committed offsets (None: nothing committed yet)."""
        return all(offset is None or self.checkpoints.get(tp) == offset for tp, offset in committed.items())


def state_value(origin: TopicPartition, snapshot: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"v": FORMAT_VERSION, "topic": origin.topic, "partition": origin.partition, "state": snapshot},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def profile_value(origin: TopicPartition, profile: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"v": FORMAT_VERSION, "topic": origin.topic, "partition": origin.partition, "profile": profile},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def buffer_value(origin: TopicPartition, snapshot: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"v": FORMAT_VERSION, "topic": origin.topic, "partition": origin.partition, "buffer": snapshot},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def checkpoint_key(origin: TopicPartition) -> bytes:
    return f"{CHECKPOINT}{origin.topic}/{origin.partition}".encode()


def checkpoint_value(origin: TopicPartition, offset: int, processed: int) -> bytes:
    body = {
        "v": FORMAT_VERSION,
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": offset,
        "processed": processed,
    }
    return orjson.dumps(body)


def changelog_partition(origin: TopicPartition, partitions: int) -> int:
    return int(origin.partition) % partitions


def restore(
    consumer: KafkaConsumer,
    topic: str,
    partitions: int,
    committed: Mapping[TopicPartition, int | None],
    *,
    exact: bool = True,
    timeout_s: float = 60,
) -> Restored:
    """Read the changelog partitions holding the state of the `committed` input partitions, until both the end
    and (with `exact`, for transactional writers) the checkpoint of each committed offset have been read.

    `consumer` is group-less and read_committed: an open transaction of a crashed owner is not read (it is
    aborted when that owner's successor fences it, or when it times out).
    """
    owned_set = set(committed)
    wanted = sorted({TopicPartition(topic, changelog_partition(tp, partitions)) for tp in owned_set})
    result = Restored()
    if not wanted:
        return result
    consumer.assign(wanted)
    consumer.seek_to_beginning(*wanted)
    deadline = time.monotonic() + timeout_s
    while True:
        ends = consumer.end_offsets(wanted)
        while any(consumer.position(tp) < ends[tp] for tp in wanted):
            _check_deadline(deadline, topic, timeout_s)
            for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
                for record in records:
                    result.records += 1
                    _apply(record.key, record.value, owned_set, result)
        if not exact or result.consistent_with(committed):
            return result
        # The last transaction's commit markers are on their way: its records become readable in a moment.
        _check_deadline(deadline, topic, timeout_s)
        time.sleep(0.05)


def _check_deadline(deadline: float, topic: str, timeout_s: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(
            f"state restore from {topic} did not reach the committed offsets within {timeout_s:.0f}s"
        )


def _apply(key: bytes | None, value: bytes | None, owned: set[TopicPartition], result: Restored) -> None:
    if key is None or value is None:
        return
    try:
        name = key.decode()
        document = orjson.loads(value)
        origin = TopicPartition(document["topic"], int(document["partition"]))
    except (UnicodeDecodeError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        result.unreadable += 1
        return
    if origin not in owned:
        return
    if name.startswith(STATE):
        entry = result.streams.setdefault(name[len(STATE) :], RestoredStream(origin))
        entry.origin, entry.state = origin, document.get("state")
    elif name.startswith(PROFILE):
        entry = result.streams.setdefault(name[len(PROFILE) :], RestoredStream(origin))
        entry.origin, entry.profile = origin, document.get("profile")
    elif name.startswith(BUFFER):
        entry = result.streams.setdefault(name[len(BUFFER) :], RestoredStream(origin))
        entry.origin, entry.buffer = origin, document.get("buffer")
    elif name.startswith(CHECKPOINT):
        result.checkpoints[origin] = int(document["offset"])
        result.processed[origin] = int(document.get("processed", document["offset"]))
