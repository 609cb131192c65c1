"""End-to-end Kafka benchmark: the daemon against a real broker, beside bare consume and bare scoring figures.

    python bench/kafka_e2e.py [--bootstrap HOST:PORT] [--streams 1000] [--single-messages 200000]
                              [--columnar-samples 5000] [--live-seconds 30] [--profile]

One run, fresh uniquely named topics (deleted at the end), one conv autoencoder (window 64, hop 16) trained on
a normal prefix of every stream and published on the models topic, exactly-once delivery:

(a) one sample per message, pre-produced: a bare group consumer with the daemon's own consumer settings
    (decoding nothing) against the daemon in-process, records/s.
(b) 100 samples per message (columnar JSON): bare consume samples/s, a bare forward pass of the model at the
    daemon's windows per poll (samples/s = windows/s x hop), and the daemon end to end.
(c) latency: live production from a separate process at a share of the daemon's rate in (b), sample times =
    wall clock at send, level shifts injected into a few streams; a separate read_committed reader stamps
    each alert's arrival. Latency = arrival - the alert's window_end.
(d) changelog state bytes per stream: the latest state/<stream> record, with and without the window buffer,
    and the profile/<stream> record.

Throughput spans run from the first committed poll batch to the last (the first batch, which also starts
every stream, is excluded from both bare and daemon figures alike). Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import math
import multiprocessing
import os
import pstats
import resource
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from streamwatch.config import StreamwatchConfig, parse_config
from streamwatch.core.bootstrap import GroupModel, StreamSeries, sliding, train_group
from streamwatch.core.detector import model_input
from streamwatch.generate.simulate import simulate
from streamwatch.kafka import clients, models_topic, topics
from streamwatch.kafka.changelog import PROFILE, STATE
from streamwatch.offline import reconstructor_factory
from streamwatch.records import FloatArray, parse_iso_utc
from streamwatch.service.kafka_daemon import KafkaDaemon, KafkaStats

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: event time of the simulated history
GROUP = "bench"  # every stream of every phase is scored by this one group's model
LENGTH, HOP = 64, 16
TRAIN_SAMPLES = 1500
# Seconds a phase may take before the benchmark gives up on it (a stuck daemon must not hang the run).
PHASE_TIMEOUT_S = 300.0
# The daemon's progress is sampled this often: the error of each end of a measured span.
WATCH_EVERY_S = 0.005

log = logging.getLogger("bench.kafka_e2e")


# -- settings and names ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap: str
    streams: int
    partitions: int
    domain: str
    single_messages: int
    columnar_samples: int
    samples_per_message: int
    live_seconds: float
    live_fraction: float
    live_samples_per_message: int
    anomaly_every_s: float
    anomaly_streams: int
    max_poll_records: int
    epochs: int
    seed: int
    profile: bool
    keep_topics: bool


@dataclass(frozen=True, slots=True)
class Names:
    """Topic and group names of one run; every name starts with the run's unique prefix."""

    run: str

    @property
    def models(self) -> str:
        return f"{self.run}.models"

    def input(self, phase: str) -> str:
        return f"{self.run}.{phase}.in"

    def state(self, phase: str) -> str:
        return f"{self.run}.{phase}.state"

    def alerts(self, phase: str) -> str:
        return f"{self.run}.{phase}.alerts"

    def dead_letters(self, phase: str) -> str:
        return f"{self.run}.{phase}.deadletter"

    def group(self, phase: str, who: str) -> str:
        return f"{self.run}-{phase}-{who}"


def parse_settings() -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    default_bootstrap = os.environ.get("STREAMWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    parser.add_argument("--bootstrap", default=default_bootstrap)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every input topic")
    parser.add_argument("--domain", default="grid_frequency", choices=("grid_frequency", "voltage"))
    parser.add_argument("--single-messages", type=int, default=200_000, help="(a) one-sample messages")
    parser.add_argument("--columnar-samples", type=int, default=5000, help="(b) samples per stream")
    parser.add_argument("--samples-per-message", type=int, default=100, help="(b) columnar batch size")
    parser.add_argument("--live-seconds", type=float, default=30.0, help="(c) live production time")
    parser.add_argument("--live-fraction", type=float, default=0.5, help="(c) share of the (b) daemon rate")
    parser.add_argument(
        "--live-samples-per-message", type=int, default=0, help="(c) default: as --samples-per-message"
    )
    parser.add_argument("--anomaly-every-s", type=float, default=2.0)
    parser.add_argument("--anomaly-streams", type=int, default=5, help="streams shifted each time")
    parser.add_argument("--max-poll-records", type=int, default=5000, help="the daemon's (and bare) poll")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs cap (also capped at 60 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="cProfile second (a) and (b) daemon runs")
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args()
    return Settings(
        bootstrap=args.bootstrap,
        streams=args.streams,
        partitions=args.partitions,
        domain=args.domain,
        single_messages=args.single_messages,
        columnar_samples=args.columnar_samples,
        samples_per_message=args.samples_per_message,
        live_seconds=args.live_seconds,
        live_fraction=args.live_fraction,
        live_samples_per_message=args.live_samples_per_message or args.samples_per_message,
        anomaly_every_s=args.anomaly_every_s,
        anomaly_streams=args.anomaly_streams,
        max_poll_records=args.max_poll_records,
        epochs=args.epochs,
        seed=args.seed,
        profile=args.profile,
        keep_topics=args.keep_topics,
    )


def daemon_document(
    settings: Settings, names: Names, phase: str, *, reads: str | None = None
) -> dict[str, Any]:
    """The daemon of `phase` (its own group, state and alerts), reading the input of phase `reads`."""
    return {
        "kafka": {"bootstrap_servers": settings.bootstrap, "client_id": f"{names.run}-{phase}"},
        "source": {
            "kind": "kafka",
            "topics": [{"name": names.input(reads or phase)}],
            "group_id": names.group(phase, "daemon"),
            "instance_id": "bench",
            "delivery": "exactly_once",
            "state_topic": names.state(phase),
            "models_topic": names.models,
            "groups": [{"match": "*", "group": GROUP}],
            "max_poll_records": settings.max_poll_records,
        },
        "detector": detector_document(settings),
        "sinks": [{"kind": "kafka", "topic": names.alerts(phase)}],
        "dead_letter": {"kind": "kafka", "topic": names.dead_letters(phase)},
    }


def detector_document(settings: Settings) -> dict[str, Any]:
    return {
        "model": "conv",
        "window": {"length": LENGTH, "hop": HOP},
        "training": {"max_epochs": settings.epochs, "max_seconds": 60},
    }


def daemon_config(
    settings: Settings, names: Names, phase: str, *, reads: str | None = None
) -> StreamwatchConfig:
    return parse_config(daemon_document(settings, names, phase, reads=reads))


# -- data and model -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamData:
    stream: str
    channels: tuple[str, ...]
    timestamps: npt.NDArray[np.float64]
    values: FloatArray  # (N, C)


def generate(settings: Settings, samples: int) -> list[StreamData]:
    """Normal simulated data per stream: the first TRAIN_SAMPLES train the model, the rest is replayed."""
    out = []
    for index in range(settings.streams):
        series = simulate(
            settings.domain, n=samples, start=START, rng=np.random.default_rng(settings.seed + index)
        )
        out.append(
            StreamData(
                f"dev-{index:05d}/{settings.domain}",
                series.channels,
                series.timestamps,
                series.values.astype(np.float32),
            )
        )
    return out


def train_model(settings: Settings, data: list[StreamData]) -> GroupModel:
    detector = daemon_config(settings, Names("probe"), "a").detector
    series = {
        item.stream: StreamSeries(item.channels, item.timestamps[:TRAIN_SAMPLES], item.values[:TRAIN_SAMPLES])
        for item in data
    }
    return train_group(
        series,
        version="conv@1",
        shape=detector.window.shape(),
        plan=detector.training.plan(progress=False),
        factory=reconstructor_factory(detector),
    )


def publish_model(settings: Settings, names: Names, model: GroupModel) -> None:
    models_topic.publish_model(daemon_config(settings, names, "a").kafka, names.models, GROUP, model)


def single_sample_messages(data: list[StreamData], begin: int, count: int) -> list[tuple[bytes, bytes]]:
    """`count` one-sample JSON objects, interleaved across streams in time order."""
    out: list[tuple[bytes, bytes]] = []
    keys = [item.stream.encode() for item in data]
    row = begin
    while len(out) < count:
        for key, item in zip(keys, data, strict=True):
            values = dict(zip(item.channels, item.values[row], strict=True))
            body = {"stream": item.stream, "ts": float(item.timestamps[row]), "values": values}
            out.append((key, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)))
            if len(out) == count:
                break
        row += 1
    return out


def columnar_messages(
    data: list[StreamData], begin: int, per_stream: int, batch: int
) -> list[tuple[bytes, bytes]]:
    """Columnar JSON messages of `batch` samples per stream, interleaved across streams in time order."""
    out: list[tuple[bytes, bytes]] = []
    for first in range(begin, begin + per_stream, batch):
        last = min(first + batch, begin + per_stream)
        for item in data:
            body = {
                "stream": item.stream,
                "ts": item.timestamps[first:last],
                "values": {
                    name: np.ascontiguousarray(item.values[first:last, c])
                    for c, name in enumerate(item.channels)
                },
            }
            out.append((item.stream.encode(), orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)))
    return out


# -- topics and producing -------------------------------------------------------------------------------
def create_topics(settings: Settings, names: Names, phases: Sequence[str]) -> list[str]:
    """Every topic of the run up front (the daemon leaves existing topics as they are), so that readers can
    be assigned before the daemon starts."""
    specs = [topics.models_topic(names.models)]
    for phase in phases:
        specs += [
            topics.TopicSpec(names.input(phase), settings.partitions),
            topics.state_topic(names.state(phase), settings.partitions),
            topics.TopicSpec(names.alerts(phase), settings.partitions),
            topics.TopicSpec(names.dead_letters(phase), settings.partitions),
        ]
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        topics.ensure_topics(admin, specs)
    finally:
        admin.close()
    return [spec.name for spec in specs]


def delete_run(settings: Settings, topic_names: list[str], groups: list[str]) -> None:
    """Best effort: a failure here leaves litter on a dev broker, never a wrong figure."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        try:
            admin.delete_topics(topic_names, timeout_ms=30_000)
        except Exception as error:  # the figures are printed already; just say what was left behind
            log.warning("could not delete the run's topics (%s)", error)
        try:
            admin.delete_groups(groups)
        except Exception as error:
            log.warning("could not delete the run's consumer groups (%s)", error)
    finally:
        admin.close()


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> float:
    """Send everything and wait for the broker's acks; returns the seconds it took."""
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=16 * 1024 * 1024,
    )
    started = time.perf_counter()
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()
    return time.perf_counter() - started


def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp: int(offset) for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_everything(settings: Settings, group: str, topic: str) -> bool:
    """Whether the group's committed offsets reached the end of every partition of `topic`."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    ends = end_offsets(settings, topic)
    return all(tp in committed and committed[tp].offset >= end for tp, end in ends.items())


# -- throughput -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Throughput:
    """Records and samples over a measured span (after the first batch)."""

    records: int
    samples: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.nan


def measured_span(records: int, samples: int, seconds: float) -> Throughput:
    if records <= 0:
        raise ValueError(
            "everything arrived in the first poll batch, which is not measured: "
            "produce more records or lower --max-poll-records"
        )
    return Throughput(records, samples, seconds)


def bare_consume(
    settings: Settings, names: Names, phase: str, expected: int, samples_per_record: int
) -> Throughput:
    """A group consumer with exactly the daemon's settings (clients.source_consumer), reading the topic once
    and decoding nothing."""
    config = daemon_config(settings, names, phase)
    assert config.source.kind == "kafka"
    source = config.source.model_copy(update={"group_id": names.group(phase, "bare")})
    consumer = clients.source_consumer(config.kafka, source, "bare")
    try:
        wait_for_partitions(consumer, names.input(phase))
        consumer.subscribe(topics=[names.input(phase)])
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        count, first_count, first_at = 0, 0, math.nan
        while count < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare consumer read {count} of {expected} records")
            batch = consumer.poll(timeout_ms=source.poll_timeout_ms, max_records=source.max_poll_records)
            got = sum(len(records) for records in batch.values())
            count += got
            if got and first_count == 0:
                first_count, first_at = count, time.perf_counter()
        seconds = time.perf_counter() - first_at
    finally:
        consumer.close(autocommit=False)
    measured = count - first_count
    return measured_span(measured, measured * samples_per_record, seconds)


def wait_for_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions")
        time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class DaemonRun:
    throughput: Throughput
    stats: KafkaStats
    seconds_total: float  # from start() to the last commit, joining the group included
    profile: str = ""

    @property
    def windows_per_batch(self) -> float:
        return self.stats.windows / max(1, self.stats.batches)


class InProcessDaemon:
    """A KafkaDaemon on a thread of this process (optionally under cProfile), stopped on exit."""

    def __init__(self, config: StreamwatchConfig, *, profiler: cProfile.Profile | None = None) -> None:
        self.daemon = KafkaDaemon(config, sinks=[], dead_letter_file=None, clock=time.time)
        self._stop = threading.Event()
        self._profiler = profiler
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="kafka-daemon", daemon=True)

    def __enter__(self) -> InProcessDaemon:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            if self._profiler is not None:
                self._profiler.enable()  # profiles this thread only: the daemon's own work
            self.daemon.run(self._stop)
        except BaseException as error:  # reported by check(): the watcher must not wait for a dead daemon
            self._errors.append(error)
        finally:
            if self._profiler is not None:
                self._profiler.disable()

    def check(self) -> None:
        if self._errors:
            raise RuntimeError("the daemon died") from self._errors[0]
        if not self._thread.is_alive() and not self._stop.is_set():
            raise RuntimeError("the daemon stopped on its own")

    def settled(self) -> tuple[int, int] | None:
        """(records, samples) when every applied batch is committed, else None (a batch is in flight)."""
        stats = self.daemon.stats
        batches, records, samples = stats.batches, stats.records, stats.samples
        if batches == 0 or stats.transactions != batches or stats.batches != batches:
            return None
        return records, samples

    def wait_for_records(self, expected: int, timeout_s: float = PHASE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            point = self.settled()
            if point is not None and point[0] >= expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon committed {self.daemon.stats.records} of {expected} records")
            time.sleep(WATCH_EVERY_S)


def run_daemon(
    settings: Settings,
    names: Names,
    phase: str,
    expected: int,
    *,
    reads: str | None = None,
    profile: bool = False,
) -> DaemonRun:
    """The daemon over a pre-produced topic, from a fresh group, until it committed `expected` records."""
    profiler = cProfile.Profile() if profile else None
    config = daemon_config(settings, names, phase, reads=reads)
    started = time.perf_counter()
    with InProcessDaemon(config, profiler=profiler) as daemon:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        first: tuple[float, int, int] | None = None
        while True:
            daemon.check()
            point = daemon.settled()
            now = time.perf_counter()
            if point is not None and first is None:
                first = (now, *point)
            if point is not None and point[0] >= expected:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"phase {phase}: the daemon committed {daemon.daemon.stats.records} records"
                )
            time.sleep(WATCH_EVERY_S)
        assert first is not None
        finished = time.perf_counter()
        stats = KafkaStats(**{name: getattr(daemon.daemon.stats, name) for name in KafkaStats.__slots__})
    throughput = measured_span(point[0] - first[1], point[1] - first[2], finished - first[0])
    return DaemonRun(throughput, stats, finished - started, profile_summary(profiler))


def profile_summary(profiler: cProfile.Profile | None, top: int = 25) -> str:
    if profiler is None:
        return ""
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    for order in ("cumulative", "tottime"):
        text.write(f"\n--- top {top} by {order} ---\n")
        stats.sort_stats(order).print_stats(top)
    return text.getvalue()


# -- bare forward pass ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ForwardRates:
    windows_per_pass: int
    reconstruct_windows_per_s: float  # the autoencoder alone, on prepared input (as bench/engine.py)
    score_windows_per_s: float  # the detector's batched scoring (evidence + calibration), as the engine does


def scoring_windows(model: GroupModel, data: list[StreamData], begin: int, count: int) -> FloatArray:
    """`count` real windows at hop 16, normalised with each stream's profile, cycled if there are fewer."""
    parts = []
    for item in data:
        profile = model.profiles[item.stream]
        normalised = profile.normalise(item.timestamps[begin:], item.values[begin:])
        parts.append(sliding(normalised, LENGTH, HOP))
        if sum(len(part) for part in parts) >= count:
            break
    windows = np.concatenate(parts)
    return np.resize(windows, (count, *windows.shape[1:])).astype(np.float32)


def bare_forward(model: GroupModel, windows: FloatArray, min_seconds: float = 3.0) -> ForwardRates:
    reconstructor, detector = model.detector.reconstructor, model.detector
    prepared = model_input(windows)
    reconstructor.reconstruct(prepared[:256])  # warm-up (allocations, thread pool)

    def rate(action: Callable[[], object]) -> float:
        passes, started = 0, time.perf_counter()
        while passes < 3 or time.perf_counter() - started < min_seconds:
            action()
            passes += 1
        return passes * len(windows) / (time.perf_counter() - started)

    return ForwardRates(
        len(windows),
        rate(lambda: reconstructor.reconstruct(prepared)),
        rate(lambda: detector.score_parts(windows)),
    )


# -- live latency ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LiveSpec:
    """Everything the producer process needs (pickled into it)."""

    bootstrap: str
    topic: str
    streams: list[str]
    channels: tuple[str, ...]
    values: FloatArray  # (streams, samples, channels): normal data, shifted where anomalies are injected
    scales: FloatArray  # (streams, channels): each stream's normal spread, the unit of a shift
    per_stream_hz: float
    samples_per_message: int
    seconds: float
    anomaly_every_s: float
    anomaly_streams: int
    anomaly_samples: int  # how long a shift lasts (whole messages: at least this many samples)
    shift_sigmas: float
    warmup_s: float
    seed: int


@dataclass(frozen=True, slots=True)
class LiveReport:
    total_messages: int  # the primer included
    messages: int  # after `go`
    samples: int  # after `go`
    seconds: float
    cpu_s: float  # the producer process's CPU time after `go`
    anomalies: int
    max_behind_s: float


# Samples of one message are stamped this far apart, the last with the wall clock at send: every sample is
# "produced" when it is sent, so a window closing anywhere in a message closes at (nearly) its send time.
SAMPLE_SPACING_S = 1e-6
PRODUCER_LINGER_MS = 5


def live_producer(spec: LiveSpec, primed: Event, go: Event, reports: Queue[LiveReport]) -> None:
    """Producer process: one primer message per stream (so the daemon joins its group and starts every
    stream before timing), then on `go` messages spread evenly in time over the streams in turn, as
    independent devices would send them, each sample stamped with the wall clock right at send."""
    # A few ms of linger batch the fleet's messages into far fewer requests: without it kafka-python spends
    # about half a core on one request per message, taken from the daemon on a small machine.
    producer = KafkaProducer(bootstrap_servers=spec.bootstrap, acks="all", linger_ms=PRODUCER_LINGER_MS)
    rng = np.random.default_rng(spec.seed)
    count, per_message = len(spec.streams), spec.samples_per_message
    keys = [stream.encode() for stream in spec.streams]
    offsets = SAMPLE_SPACING_S * np.arange(1 - per_message, 1, dtype=np.float64)
    sent = np.zeros(count, dtype=np.int64)
    shift_left = np.zeros(count, dtype=np.int64)

    def send(stream: int) -> None:
        begin = int(sent[stream]) * per_message
        values = spec.values[stream, begin : begin + per_message].copy()
        if shift_left[stream] > 0:
            values += spec.shift_sigmas * spec.scales[stream]
            shift_left[stream] -= per_message
        columns = {name: values[:, c] for c, name in enumerate(spec.channels)}
        body = {"stream": spec.streams[stream], "ts": time.time() + offsets, "values": columns}
        producer.send(
            spec.topic, key=keys[stream], value=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        )
        sent[stream] += 1

    for stream in range(count):
        send(stream)
    producer.flush()
    primed.set()
    go.wait(PHASE_TIMEOUT_S)
    every_s = per_message / spec.per_stream_hz / count  # between two messages of the whole fleet
    total = int(spec.seconds / every_s)
    cpu_before, started = time.process_time(), time.time()
    next_anomaly, anomalies, behind, done = started + spec.warmup_s, 0, 0.0, 0
    while done < total:
        now = time.time()
        if now >= next_anomaly:
            quiet = np.flatnonzero(shift_left <= 0)
            chosen = rng.choice(quiet, size=min(spec.anomaly_streams, len(quiet)), replace=False)
            shift_left[chosen] = spec.anomaly_samples
            anomalies += len(chosen)
            next_anomaly += spec.anomaly_every_s
        due = min(total, int((now - started) / every_s) + 1)
        if due > done:
            behind = max(behind, now - (started + done * every_s))
        for message in range(done, due):
            send(message % count)
        done = due
        time.sleep(max(0.0, started + done * every_s - time.time()))
    producer.flush()
    seconds, cpu = time.time() - started, time.process_time() - cpu_before
    producer.close()
    reports.put(LiveReport(total + count, total, total * per_message, seconds, cpu, anomalies, behind))


def alert_reader(
    bootstrap: str,
    topic: str,
    partitions: int,
    ready: Event,
    stop: Event,
    out: Queue[list[tuple[float, bytes]]],
) -> None:
    """Reader process: every committed alert with the wall-clock time its poll returned it."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=5,
    )
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    consumer.poll(timeout_ms=100)
    ready.set()
    arrivals: list[tuple[float, bytes]] = []
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=50)
        now = time.time()
        arrivals += [(now, record.value) for records in batch.values() for record in records]
    consumer.close()
    out.put(arrivals)


@dataclass(frozen=True, slots=True)
class Latency:
    rate_samples_per_s: float  # the producer's target
    samples_per_message: int
    report: LiveReport
    drain_s: float  # after the producer's last send until the daemon committed everything
    daemon_cpu_s: float  # this process (the daemon and its Kafka threads) while the producer ran
    firing: int
    # Per firing event, in window_end order:
    to_detected_ms: npt.NDArray[np.float64]  # window_end -> detected_at (poll, decode, score)
    to_arrival_ms: npt.NDArray[np.float64]  # window_end -> readable by a read_committed reader
    stats: KafkaStats


def live_latency(settings: Settings, names: Names, data: list[StreamData], rate: float) -> Latency:
    per_stream = rate / settings.streams
    per_message = settings.live_samples_per_message
    messages_per_stream = math.ceil(settings.live_seconds * per_stream / per_message) + 2
    needed = messages_per_stream * per_message
    values = np.stack(
        [np.resize(item.values[TRAIN_SAMPLES:], (needed, item.values.shape[1])) for item in data]
    )
    scales = np.stack([item.values[:TRAIN_SAMPLES].std(axis=0) for item in data]).astype(np.float32)
    spec = LiveSpec(
        bootstrap=settings.bootstrap,
        topic=names.input("c"),
        streams=[item.stream for item in data],
        channels=data[0].channels,
        values=values,
        scales=scales,
        per_stream_hz=per_stream,
        samples_per_message=per_message,
        seconds=settings.live_seconds,
        anomaly_every_s=settings.anomaly_every_s,
        anomaly_streams=settings.anomaly_streams,
        anomaly_samples=LENGTH,
        shift_sigmas=10.0,
        warmup_s=2.0,
        seed=settings.seed,
    )
    context = multiprocessing.get_context("spawn")
    primed, go, reader_ready, reader_stop = context.Event(), context.Event(), context.Event(), context.Event()
    reports: Queue[LiveReport] = context.Queue()
    alerts: Queue[list[tuple[float, bytes]]] = context.Queue()
    reader = context.Process(
        target=alert_reader,
        args=(settings.bootstrap, names.alerts("c"), settings.partitions, reader_ready, reader_stop, alerts),
        daemon=True,
    )
    producer = context.Process(target=live_producer, args=(spec, primed, go, reports), daemon=True)
    reader.start()
    try:
        with InProcessDaemon(daemon_config(settings, names, "c")) as daemon:
            wait_for_event(reader_ready, reader, "the alert reader to start")
            producer.start()
            wait_for_event(primed, producer, "the live producer to send its primer")
            daemon.wait_for_records(settings.streams)
            cpu_before, live_start = process_cpu_s(), time.time()
            go.set()
            report = reports.get(timeout=settings.live_seconds + PHASE_TIMEOUT_S)
            sent_at, daemon_cpu = time.perf_counter(), process_cpu_s() - cpu_before
            daemon.wait_for_records(report.total_messages)
            drain = time.perf_counter() - sent_at
            time.sleep(1.0)  # the last transaction's alerts reach the reader
            stats = KafkaStats(**{name: getattr(daemon.daemon.stats, name) for name in KafkaStats.__slots__})
        reader_stop.set()
        arrivals = alerts.get(timeout=60)
    finally:
        reader_stop.set()
        go.set()
        for process in (producer, reader):
            process.join(30)
            if process.is_alive():
                process.terminate()
    return summarise_latency(
        rate, per_message, report, (drain, daemon_cpu), stats, arrivals, after=live_start + spec.warmup_s
    )


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_event(event: Event, process: BaseProcess, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not event.wait(0.1):
        if not process.is_alive():
            raise RuntimeError(
                f"gave up waiting for {what}: the process ended (exit code {process.exitcode})"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f}s")


def summarise_latency(
    rate: float,
    per_message: int,
    report: LiveReport,
    drain_and_cpu: tuple[float, float],
    stats: KafkaStats,
    arrivals: list[tuple[float, bytes]],
    *,
    after: float,
) -> Latency:
    """Firing events only (a resolved event's window_end is its last exceeding window, not a fresh one),
    of windows that closed after the warm-up."""
    events = []
    for arrival, value in arrivals:
        event = orjson.loads(value)
        window_end = parse_iso_utc(event["window_end"])
        if event["status"] == "firing" and window_end >= after:
            events.append((window_end, parse_iso_utc(event["detected_at"]), arrival))
    events.sort()
    times = np.asarray(events, dtype=np.float64).reshape(-1, 3)
    return Latency(
        rate,
        per_message,
        report,
        *drain_and_cpu,
        len(events),
        1000 * (times[:, 1] - times[:, 0]),
        1000 * (times[:, 2] - times[:, 0]),
        stats,
    )


# -- changelog state sizes ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sizes:
    values: list[int] = field(default_factory=list)

    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    def max(self) -> int:
        return max(self.values, default=0)


@dataclass(frozen=True, slots=True)
class StateSizes:
    streams: int
    state: Sizes
    state_without_window: Sizes
    window_buffer_samples: Sizes
    parts: dict[str, Sizes]  # bytes of each part of the state (windower without its buffer, threshold...)
    profile: Sizes


def read_latest(settings: Settings, topic: str) -> dict[bytes, bytes]:
    """The latest committed value of every key of `topic` (what compaction would keep)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        wait_for_partitions(consumer, topic)
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key is not None and record.value is not None:
                        latest[record.key] = record.value
        return latest
    finally:
        consumer.close()


def state_sizes(settings: Settings, topic: str) -> StateSizes:
    latest = read_latest(settings, topic)
    sizes = StateSizes(0, Sizes(), Sizes(), Sizes(), {}, Sizes())
    streams = 0
    for key, value in latest.items():
        name = key.decode()
        if name.startswith(PROFILE):
            sizes.profile.values.append(len(value))
        if not name.startswith(STATE):
            continue
        streams += 1
        document = orjson.loads(value)
        sizes.state.values.append(len(value))
        windower = document["state"]["windower"]
        sizes.window_buffer_samples.values.append(len(windower["times"]))
        windower["times"], windower["values"] = [], []
        sizes.state_without_window.values.append(len(orjson.dumps(document)))
        for part, content in document["state"].items():
            sizes.parts.setdefault(part, Sizes()).values.append(len(orjson.dumps(content)))
    return StateSizes(
        streams,
        sizes.state,
        sizes.state_without_window,
        sizes.window_buffer_samples,
        sizes.parts,
        sizes.profile,
    )


# -- client settings ------------------------------------------------------------------------------------
CONSUMER_KEYS = (
    "isolation_level",
    "enable_auto_commit",
    "max_poll_records",
    "fetch_min_bytes",
    "fetch_max_wait_ms",
    "fetch_max_bytes",
    "max_partition_fetch_bytes",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "max_poll_interval_ms",
    "group_instance_id",
    "auto_offset_reset",
)
PRODUCER_KEYS = (
    "transactional_id",
    "transaction_timeout_ms",
    "enable_idempotence",
    "acks",
    "linger_ms",
    "batch_size",
    "retry_backoff_ms",
    "max_request_size",
    "compression_type",
)


def daemon_client_settings(settings: Settings, names: Names) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings streamwatch.kafka.clients gives the daemon's source consumer and transactional producer,
    read back from real clients built by the same functions."""
    config = daemon_config(settings, names, "a")
    assert config.source.kind == "kafka"
    consumer = clients.source_consumer(config.kafka, config.source, "bench")
    producer = clients.transactional_producer(config.kafka, config.source, "settings")
    try:
        return (
            {key: consumer.config.get(key) for key in CONSUMER_KEYS},
            {key: producer.config.get(key) for key in PRODUCER_KEYS},
        )
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=0)


# -- the run --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Results:
    train_s: float = math.nan
    train_epochs: int = 0
    produce_a_s: float = math.nan
    produce_b_s: float = math.nan
    bare_a: Throughput | None = None
    daemon_a: DaemonRun | None = None
    bare_b: Throughput | None = None
    daemon_b: DaemonRun | None = None
    forward: ForwardRates | None = None
    latency: Latency | None = None
    state: StateSizes | None = None
    consumer_settings: dict[str, Any] = field(default_factory=dict)
    producer_settings: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)


def run(settings: Settings) -> Results:
    names = Names(f"swbench-{uuid.uuid4().hex[:10]}")
    results = Results()
    single_rows = math.ceil(settings.single_messages / settings.streams)
    started = time.perf_counter()
    data = generate(settings, TRAIN_SAMPLES + max(single_rows, settings.columnar_samples))
    say(
        f"setup: {settings.streams} streams of {settings.domain} simulated "
        f"in {time.perf_counter() - started:.1f}s"
    )
    started = time.perf_counter()
    model = train_model(settings, data)
    results.train_s, results.train_epochs = time.perf_counter() - started, model.fit_report.epochs
    say(f"setup: trained {model.version} on {len(model.profiles)} streams in {results.train_s:.1f}s")
    phases = ["a", "b", "c", *(["pa", "pb"] if settings.profile else [])]
    topic_names = create_topics(settings, names, phases)
    groups = [names.group(phase, who) for phase in phases for who in ("daemon", "bare")]
    try:
        publish_model(settings, names, model)
        say(f"setup: model published on {names.models}; topics prefixed {names.run}")
        measure_single(settings, names, data, results)
        measure_columnar(settings, names, data, model, results)
        if settings.profile:
            profile_daemons(settings, names, results)
        assert results.daemon_b is not None
        rate = settings.live_fraction * results.daemon_b.throughput.samples_per_s
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"no live rate to produce at ({rate} samples/s)")
        say(f"(c) live for {settings.live_seconds:.0f}s at {rate:,.0f} samples/s")
        results.latency = live_latency(settings, names, data, rate)
        say("(d) reading the (b) state changelog")
        results.state = state_sizes(settings, names.state("b"))
        results.consumer_settings, results.producer_settings = daemon_client_settings(settings, names)
    finally:
        if not settings.keep_topics:
            delete_run(settings, topic_names, groups)
    return results


def profile_daemons(settings: Settings, names: Names, results: Results) -> None:
    """Second daemon runs over the (a) and (b) topics under cProfile (profiling slows them: not timed)."""
    say("profiling second daemon runs of (a) and (b)")
    columnar = settings.streams * math.ceil(settings.columnar_samples / settings.samples_per_message)
    for phase, reads, expected in (("pa", "a", settings.single_messages), ("pb", "b", columnar)):
        run = run_daemon(settings, names, phase, expected, reads=reads, profile=True)
        results.profiles[reads] = run.profile


def measure_single(settings: Settings, names: Names, data: list[StreamData], results: Results) -> None:
    topic = names.input("a")
    messages = single_sample_messages(data, TRAIN_SAMPLES, settings.single_messages)
    results.produce_a_s = produce(settings, topic, messages)
    del messages
    say(f"(a) produced {settings.single_messages:,} one-sample messages in {results.produce_a_s:.1f}s")
    results.bare_a = bare_consume(settings, names, "a", settings.single_messages, 1)
    say(f"(a) bare consume: {results.bare_a.records_per_s:,.0f} records/s")
    results.daemon_a = run_daemon(settings, names, "a", settings.single_messages)
    say(f"(a) daemon: {results.daemon_a.throughput.records_per_s:,.0f} records/s")
    if not committed_everything(settings, names.group("a", "daemon"), topic):
        raise RuntimeError("(a) the daemon's committed offsets do not reach the end of the input")


def measure_columnar(
    settings: Settings, names: Names, data: list[StreamData], model: GroupModel, results: Results
) -> None:
    topic, batch = names.input("b"), settings.samples_per_message
    messages = columnar_messages(data, TRAIN_SAMPLES, settings.columnar_samples, batch)
    count = len(messages)
    results.produce_b_s = produce(settings, topic, messages)
    del messages
    say(f"(b) produced {count:,} messages of {batch} samples in {results.produce_b_s:.1f}s")
    results.bare_b = bare_consume(settings, names, "b", count, batch)
    say(f"(b) bare consume: {results.bare_b.samples_per_s:,.0f} samples/s")
    results.daemon_b = run_daemon(settings, names, "b", count)
    say(f"(b) daemon: {results.daemon_b.throughput.samples_per_s:,.0f} samples/s")
    if not committed_everything(settings, names.group("b", "daemon"), topic):
        raise RuntimeError("(b) the daemon's committed offsets do not reach the end of the input")
    windows = scoring_windows(model, data, TRAIN_SAMPLES, round(results.daemon_b.windows_per_batch))
    results.forward = bare_forward(model, windows)
    say(f"(b) bare forward: {results.forward.reconstruct_windows_per_s * HOP:,.0f} samples/s")


def say(text: str) -> None:
    print(text, flush=True)


# -- report ---------------------------------------------------------------------------------------------
def report(settings: Settings, results: Results, wall_s: float) -> None:
    import torch

    print()
    print("== settings ==")
    print(
        f"streams {settings.streams} ({settings.domain}), {settings.partitions} partitions per input topic, "
        f"conv AE window {LENGTH} hop {HOP}, exactly-once, max_poll_records {settings.max_poll_records}, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    print(
        f"model: trained on {TRAIN_SAMPLES} samples x {settings.streams} streams, "
        f"{results.train_epochs} epochs, {results.train_s:.1f}s"
    )
    print_throughput(settings, results)
    print_latency(results.latency)
    print_state(results.state)
    print()
    print("== daemon client settings (streamwatch/kafka/clients.py) ==")
    print("source consumer:      " + format_settings(results.consumer_settings))
    print("transactional producer: " + format_settings(results.producer_settings))
    for phase, profile in results.profiles.items():
        print()
        print(
            f"== cProfile of the daemon thread over the ({phase}) topic (a second run, not the timed one) =="
        )
        print(profile)
    print(f"wall time {wall_s:.0f}s")


def print_throughput(settings: Settings, results: Results) -> None:
    bare_a, daemon_a = results.bare_a, results.daemon_a
    bare_b, daemon_b, forward = results.bare_b, results.daemon_b, results.forward
    assert bare_a is not None and daemon_a is not None
    assert bare_b is not None and daemon_b is not None and forward is not None
    print()
    print(f"== (a) one sample per message, {settings.single_messages:,} messages ==")
    ratio_a = daemon_a.throughput.records_per_s / bare_a.records_per_s
    print(f"bare consume         {bare_a.records_per_s:>12,.0f} records/s")
    print(
        f"daemon end to end    {daemon_a.throughput.records_per_s:>12,.0f} records/s   "
        f"ratio {ratio_a:.2f} (goal >= 0.8)"
    )
    print(daemon_line(daemon_a))
    print()
    total = settings.streams * settings.columnar_samples
    print(f"== (b) {settings.samples_per_message} samples per message, {total:,} samples ==")
    forward_rate = forward.reconstruct_windows_per_s * HOP
    score_rate = forward.score_windows_per_s * HOP
    smaller = min(bare_b.samples_per_s, forward_rate)
    rate_b = daemon_b.throughput.samples_per_s
    print(
        f"bare consume         {bare_b.samples_per_s:>12,.0f} samples/s "
        f"({bare_b.records_per_s:,.0f} records/s)"
    )
    print(
        f"bare forward         {forward_rate:>12,.0f} samples/s "
        f"({forward.reconstruct_windows_per_s:,.0f} windows/s, "
        f"{forward.windows_per_pass:,} windows per pass)"
    )
    print(f"bare detector score  {score_rate:>12,.0f} samples/s (forward + window statistics + calibration)")
    print(
        f"daemon end to end    {rate_b:>12,.0f} samples/s   goal >= 500,000; "
        f"ratio to the smaller bare figure {rate_b / smaller:.2f} (goal >= 0.4); "
        f"to the detector score {rate_b / min(bare_b.samples_per_s, score_rate):.2f}"
    )
    print(daemon_line(daemon_b))


def daemon_line(run: DaemonRun) -> str:
    stats = run.stats
    return (
        f"  daemon: {stats.records:,} records, {stats.samples:,} samples, {stats.windows:,} windows, "
        f"{stats.alerts} alert events, {stats.dead_letters} dead letters, {stats.batches} batches = "
        f"{stats.transactions} transactions, {run.windows_per_batch:,.0f} windows per batch; "
        f"measured {run.throughput.seconds:.2f}s after the first batch, {run.seconds_total:.1f}s from start"
    )


def print_latency(latency: Latency | None) -> None:
    assert latency is not None
    live = latency.report
    print()
    print("== (c) latency, live ==")
    print(
        f"target {latency.rate_samples_per_s:,.0f} samples/s, achieved {live.samples / live.seconds:,.0f} "
        f"({live.messages:,} messages of {latency.samples_per_message} samples in {live.seconds:.1f}s; "
        f"producer at most {live.max_behind_s * 1000:.0f} ms behind schedule); {live.anomalies} level shifts"
    )
    print(
        f"CPU while producing: producer process {live.cpu_s / live.seconds:.2f} cores, daemon process "
        f"{latency.daemon_cpu_s / live.seconds:.2f} cores; the daemon committed the last record "
        f"{latency.drain_s * 1000:.0f} ms after the last send; {latency.stats.transactions} transactions, "
        f"{latency.stats.windows:,} windows, {latency.stats.alerts} alert events"
    )
    if latency.firing == 0:
        print("no firing alerts arrived")
        return
    arrival, detected = latency.to_arrival_ms, latency.to_detected_ms
    print(
        f"window close -> alert readable (read_committed): p50 {np.percentile(arrival, 50):.0f} ms, "
        f"p99 {np.percentile(arrival, 99):.0f} ms, max {arrival.max():.0f} ms over {latency.firing} firing "
        f"events (goal p99 <= 150 ms)"
    )
    third = max(1, len(arrival) // 3)
    print(
        f"  of which window close -> scored (detected_at): p50 {np.percentile(detected, 50):.0f} ms, "
        f"p99 {np.percentile(detected, 99):.0f} ms; p50 of the first / last third of the run: "
        f"{np.median(arrival[:third]):.0f} / {np.median(arrival[-third:]):.0f} ms"
    )
    print(
        "  includes: the producer's send and the broker append, the daemon's fetch and poll, decoding, "
        "windowing, scoring, alert lifecycle, the transaction (alerts + state + offsets) and its commit "
        f"markers, and the reader's fetch (fetch_max_wait 5 ms); also up to {PRODUCER_LINGER_MS} ms of the "
        "producer's linger; ISO times are truncated to ms"
    )


def print_state(state: StateSizes | None) -> None:
    assert state is not None
    print()
    print(f"== (d) changelog state per stream, latest of each of {state.streams} streams after (b) ==")
    print(f"state record          mean {state.state.mean():,.0f} B, max {state.state.max():,} B")
    print(
        f"  without window buffer mean {state.state_without_window.mean():,.0f} B, "
        f"max {state.state_without_window.max():,} B (goal <= 2048 B); "
        f"buffer holds {state.window_buffer_samples.mean():.0f} samples"
    )
    parts = ", ".join(f"{name} {sizes.mean():,.0f}" for name, sizes in state.parts.items())
    print(f"  parts (mean bytes; windower without its buffer): {parts}")
    print(f"profile record        mean {state.profile.mean():,.0f} B, max {state.profile.max():,} B")


def format_settings(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python warns of retries on fresh topics and of slow event-loop turns on a busy machine: noise.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = parse_settings()
    started = time.perf_counter()
    results = run(settings)
    report(settings, results, time.perf_counter() - started)


if __name__ == "__main__":
    main()
