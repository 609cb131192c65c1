"""Scoring throughput with every outbound sink on ÷ with them off, and the same while every receiver is down.

    python bench/sinks.py [--streams 200] [--batches 60] [--samples-per-batch 64] [--rounds 3] [--model pca]
                          [--anomalous-share 0.25] [--alertmanager URL] [--influx URL]

One model is trained on simulated grid frequency (window 64, hop 16) and serves every stream; a share of the
streams carries injected anomalies, so firing and resolved alert events keep coming. Each batch hands the
engine `samples-per-batch` new samples of every stream, and its output goes to the sinks the way the daemon
hands it on (`sink.emit(alerts, quality, scores)` for every sink). The sinks are built by the product's own
`build_outputs` from a parsed config: a webhook (to a loopback receiver this bench runs in a child process,
answering 200), an Alertmanager sink and an InfluxDB sink (bucket streamwatch/autogen, org "-").
Without --alertmanager / --influx the bench starts throwaway dev servers (deploy/dev-alertmanager,
deploy/dev-influxdb) in a temporary directory and stops them at the end.

Three phases, interleaved over `--rounds` rounds (off, on, down, off, on, down...), each scoring the same
batches on a fresh engine: sinks off (none configured); all sinks on, receivers up; all sinks on, every
receiver down (closed loopback ports: connection refused). Event time ends when the run starts, as in a live
daemon. Printed: samples/s and windows/s (median over rounds), p50/p99 batch latency (scoring plus emit, all
rounds pooled), the emit part of a batch (p50), the scoring thread's CPU time ÷ wall time (below 100%: it
waited for the GIL or a core), the ratios on ÷ off and down ÷ off, and for on and down the delivery counters
of each receiver at the end of scoring and after `Outputs.close()` with the time the close took. The InfluxDB
sink's close_timeout_s is set to 2 s here (default 10 s): a down InfluxDB makes close wait that long before
counting the held points as dropped.

The receivers run on the same machine: in the "on" phase their CPU use competes with the scoring.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from streamwatch.config import StreamwatchConfig, parse_config
from streamwatch.core.bootstrap import GroupModel, StreamSeries, train_group
from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.generate.inject import inject_many, max_injections
from streamwatch.generate.simulate import Series, simulate
from streamwatch.io.sinks import Sink
from streamwatch.offline import reconstructor_factory
from streamwatch.records import FloatArray
from streamwatch.service.outputs import build_outputs

REPO = Path(__file__).resolve().parents[1]
# The throwaway dev servers are started the way the tests start them.
sys.path.insert(0, str(REPO / "tests" / "support"))
from dev_servers import dev_server  # noqa: E402

TRAIN_SAMPLES = 8000
WINDOW, HOP = 64, 16
GROUP = "grid"
PHASES = ("off", "on", "down")
# Short, so that closing with a down InfluxDB costs seconds, not the default 10 s.
INFLUX_CLOSE_TIMEOUT_S = 2.0
# Enough quiet samples after an anomaly for its alert to resolve (the window passing it, then 8 calm windows
# of 16 samples) and for the cooldown (8 windows) to pass before the next one.
ANOMALY_GAP = WINDOW + 16 * HOP
ANOMALY_LENGTHS = (16, 96)

Chunk = tuple[str, npt.NDArray[np.float64], FloatArray]
Batch = list[Chunk]
ReceiverKey = tuple[str, str]  # (sink kind, receiver URL): the label pair of the delivery metrics
METRICS = ("delivered", "retries", "dropped", "dead_letters", "queued")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--samples-per-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="pca", choices=("pca", "conv"))
    parser.add_argument("--anomalous-share", type=float, default=0.25)
    parser.add_argument("--alertmanager", help="Alertmanager URL (default: start a throwaway dev server)")
    parser.add_argument("--influx", help="InfluxDB URL (default: start a throwaway dev server)")
    args = parser.parse_args()
    # The sinks log outages and drops: marked, so they read apart from the figures.
    logging.basicConfig(level=logging.WARNING, format="  [log %(levelname)s] %(message)s")

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamwatch-bench-sinks-")))
        webhook = stack.enter_context(webhook_receiver())
        alertmanager = args.alertmanager or stack.enter_context(
            dev_server("alertmanager", workdir / "alertmanager")
        ).url
        influx = args.influx or stack.enter_context(dev_server("influx", workdir / "influx")).url
        detector = {
            "model": args.model,
            "window": {"length": WINDOW, "hop": HOP},
            "training": {"max_epochs": 10, "max_seconds": 60},
        }
        sinks = {
            "off": [],
            "on": sink_configs(f"{webhook.url}/alerts", alertmanager, influx),
            "down": sink_configs(f"{closed_port_url()}/alerts", closed_port_url(), closed_port_url()),
        }
        # Event time ends now (grid frequency is sampled at 1 Hz), as in a live daemon: the Alertmanager
        # sink compares alert end times with the wall clock.
        live_samples = args.samples_per_batch * (args.batches + 1)
        live_start = float(int(time.time()) - live_samples)
        model = trained_model(parse_config({"detector": detector}), start=live_start - TRAIN_SAMPLES)
        streams = [f"pmu-{index}/frequency" for index in range(args.streams)]
        serve_all(model, streams)
        anomalous = round(args.streams * args.anomalous_share)
        warm, batches = live_batches(streams, anomalous, args.batches, args.samples_per_batch, live_start)
        print(
            f"streams {args.streams} ({anomalous} with injected anomalies), window {WINDOW}, hop {HOP}; "
            f"{args.batches} batches of {args.samples_per_batch} samples per stream per phase, "
            f"{args.rounds} rounds"
        )
        print(
            f"receivers: webhook {webhook.url} (this bench), alertmanager {alertmanager}, influxdb {influx}"
        )
        runs: dict[str, list[PhaseRun]] = {phase: [] for phase in PHASES}
        for round_index in range(args.rounds):
            for phase in PHASES:
                config = parse_config(
                    {
                        "detector": detector,
                        "sinks": sinks[phase],
                        "delivery": {
                            "dir": str(workdir / f"{phase}-{round_index}" / "outbox"),
                            "dead_letter": str(workdir / f"{phase}-{round_index}" / "undelivered.jsonl"),
                        },
                    }
                )
                runs[phase].append(run_phase(config, model, warm, batches, webhook))
            print(
                f"round {round_index + 1}: "
                + ", ".join(f"{phase} {sum(runs[phase][-1].latencies):.2f} s" for phase in PHASES)
            )
        report(runs)


# -- receivers -------------------------------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    url: str
    _requests: Synchronized[int]

    @property
    def requests(self) -> int:
        """Requests answered so far."""
        return int(self._requests.value)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A loopback HTTP server answering every POST with 200, in a child process so that its work does not
    take the GIL from the scoring it measures."""
    context = multiprocessing.get_context("spawn")  # forking a process that has started torch is unsafe
    port: Synchronized[int] = context.Value(ctypes.c_int, 0)
    requests: Synchronized[int] = context.Value(ctypes.c_long, 0)
    ready = context.Event()
    process = context.Process(target=serve_webhook, args=(port, requests, ready), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the webhook receiver did not start (exit code {process.exitcode})")
        yield WebhookReceiver(f"http://127.0.0.1:{port.value}", requests)
    finally:
        process.terminate()
        process.join(10)


def serve_webhook(port: Synchronized[int], requests: Synchronized[int], ready: Event) -> None:
    class Counting(BaseHTTPRequestHandler):
        # Keep-alive, as a real receiver would: a new connection per event would measure connection set-up.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with requests.get_lock():
                requests.value += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would be the loudest thing in the benchmark

    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    server.daemon_threads = True
    port.value = server.server_address[1]
    ready.set()
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a receiver that is down (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


def sink_configs(webhook: str, alertmanager: str, influx: str) -> list[dict[str, Any]]:
    return [
        {"kind": "webhook", "url": webhook},
        {"kind": "alertmanager", "urls": [alertmanager]},
        {
            "kind": "influxdb",
            "url": influx,
            "org": "-",
            "bucket": "streamwatch/autogen",
            "close_timeout_s": INFLUX_CLOSE_TIMEOUT_S,
        },
    ]


# -- model and data --------------------------------------------------------------------------------------


def trained_model(config: StreamwatchConfig, start: float) -> GroupModel:
    detector = config.detector
    train = simulate("grid_frequency", n=TRAIN_SAMPLES, start=start, rng=np.random.default_rng(0))
    started = time.perf_counter()
    model = train_group(
        {"s0": StreamSeries(train.channels, train.timestamps, train.values)},
        version=f"{detector.model}@1",
        shape=detector.window.shape(),
        plan=detector.training.plan(progress=False),
        factory=reconstructor_factory(detector),
    )
    print(
        f"trained {model.version} in {time.perf_counter() - started:.1f}s ({model.fit_report.epochs} epochs)"
    )
    return model


def serve_all(model: GroupModel, streams: Sequence[str]) -> None:
    """Let the model trained on one stream serve all of them (same profile, threshold start and level)."""
    profile, initial, level = model.profiles["s0"], model.initial_scores["s0"], model.level_references["s0"]
    model.profiles = dict.fromkeys(streams, profile)
    model.initial_scores = dict.fromkeys(streams, initial)
    model.level_references = dict.fromkeys(streams, level)


def live_batches(
    streams: Sequence[str], anomalous: int, batches: int, per_batch: int, start: float
) -> tuple[Batch, list[Batch]]:
    """The warm-up batch (fills the windows) and the measured batches: normal grid frequency for every
    stream (one series, shifted per stream), with anomalies injected into the first `anomalous` streams."""
    rng = np.random.default_rng(1)
    total = per_batch * (batches + 1)
    live = simulate("grid_frequency", n=total + WINDOW, start=start, rng=rng)
    timestamps = live.timestamps[:total]
    offsets = rng.integers(0, WINDOW, size=len(streams))
    values = [live.values[offset : offset + total] for offset in offsets]
    for index in range(anomalous):
        normal = Series(timestamps, live.channels, values[index], live.rate_hz)
        values[index] = with_anomalies(normal, per_batch, np.random.default_rng(100 + index)).values
    chunked = [
        [
            (stream, timestamps[begin : begin + per_batch], values[index][begin : begin + per_batch])
            for index, stream in enumerate(streams)
        ]
        for begin in range(0, total, per_batch)
    ]
    return chunked[0], chunked[1:]


def with_anomalies(series: Series, warm: int, rng: np.random.Generator) -> Series:
    """About half as many anomalies as fit with room to resolve between them, none in the warm-up part."""
    most = max_injections(len(series), min_gap=ANOMALY_GAP, length_range=ANOMALY_LENGTHS, protect_prefix=warm)
    anomalous, _ = inject_many(
        series,
        rng=rng,
        count=max(1, most // 2),
        min_gap=ANOMALY_GAP,
        length_range=ANOMALY_LENGTHS,
        protect_prefix=warm,
    )
    return anomalous


# -- one phase -------------------------------------------------------------------------------------------


@dataclass
class PhaseRun:
    latencies: list[float] = field(default_factory=list)  # per batch: scoring plus emit
    emit_latencies: list[float] = field(default_factory=list)  # per batch: the emit part
    # CPU time of the scoring thread over all batches: below the wall time when it waited (for the GIL held
    # by a delivery thread, or for a core taken by another process) rather than worked.
    thread_cpu_s: float = 0.0
    samples: int = 0
    windows: int = 0
    firing: int = 0
    resolved: int = 0
    quality: int = 0
    webhook_requests: int = 0
    close_s: float = 0.0
    # Delivery counters per receiver at the end of scoring and after close.
    scored: dict[ReceiverKey, dict[str, float]] = field(default_factory=dict)
    closed: dict[ReceiverKey, dict[str, float]] = field(default_factory=dict)

    @property
    def work(self) -> tuple[int, int, int, int]:
        return self.windows, self.firing, self.resolved, self.quality


def run_phase(
    config: StreamwatchConfig, model: GroupModel, warm: Batch, batches: list[Batch], webhook: WebhookReceiver
) -> PhaseRun:
    """Score every batch on a fresh engine and hand each output to the configured sinks; then close them."""
    engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build())
    engine.install(GROUP, model)
    engine.process_arrays(warm)  # fills the windows: not timed, not emitted
    registry = CollectorRegistry()
    receivers = receivers_of(config)
    requests_before = webhook.requests
    outputs = build_outputs(config, metrics=registry)
    run = PhaseRun()
    try:
        for chunks in batches:
            started, started_cpu = time.perf_counter(), time.thread_time()
            out = engine.process_arrays(chunks)
            scored = time.perf_counter()
            emit(outputs.sinks, out)
            run.latencies.append(time.perf_counter() - started)
            run.emit_latencies.append(time.perf_counter() - scored)
            run.thread_cpu_s += time.thread_time() - started_cpu
            tally_work(run, chunks, out)
        run.scored = delivery_figures(registry, receivers)
    finally:
        started = time.perf_counter()
        outputs.close()
        run.close_s = time.perf_counter() - started
    run.closed = delivery_figures(registry, receivers)
    run.webhook_requests = webhook.requests - requests_before
    return run


def emit(sinks: Sequence[Sink], out: EngineOutput) -> None:
    """What the daemon does with an engine step's output (service.daemon `_emit`, no health alerts here)."""
    if out.alerts or out.quality or out.scores:
        for sink in sinks:
            sink.emit(out.alerts, out.quality, out.scores)


def tally_work(run: PhaseRun, chunks: Batch, out: EngineOutput) -> None:
    run.samples += sum(len(timestamps) for _, timestamps, _ in chunks)
    run.windows += len(out.scores)
    run.firing += sum(event.status == "firing" for event in out.alerts)
    run.resolved += sum(event.status == "resolved" for event in out.alerts)
    run.quality += len(out.quality)


def receivers_of(config: StreamwatchConfig) -> list[ReceiverKey]:
    """The (sink, receiver) label pairs the configured outbound sinks report their deliveries under."""
    found: list[ReceiverKey] = []
    for item in config.sinks:
        if item.kind == "webhook":
            found.append(("webhook", item.url))
        elif item.kind == "alertmanager":
            found.extend(("alertmanager", url) for url in item.urls)
        elif item.kind == "influxdb":
            found.append(("influxdb", item.url))
    return found


def delivery_figures(
    registry: CollectorRegistry, receivers: list[ReceiverKey]
) -> dict[ReceiverKey, dict[str, float]]:
    """The delivery counters of each receiver, read back through the registry as a scrape would."""
    figures: dict[ReceiverKey, dict[str, float]] = {}
    for sink, receiver in receivers:
        labels = {"sink": sink, "receiver": receiver}
        figures[sink, receiver] = {
            name: registry.get_sample_value(
                f"streamwatch_sink_{name}" if name == "queued" else f"streamwatch_sink_{name}_total", labels
            )
            or 0.0
            for name in METRICS
        }
    return figures


# -- report ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    samples_per_s: float
    windows_per_s: float
    p50_s: float
    p99_s: float
    emit_p50_s: float
    busy: float  # scoring thread's CPU time ÷ wall time


def figures_of(runs: list[PhaseRun]) -> Figures:
    """Rates: median over rounds; latencies: percentiles of all batches of all rounds."""
    latencies = np.asarray([latency for run in runs for latency in run.latencies])
    return Figures(
        samples_per_s=float(np.median([rate(run) for run in runs])),
        windows_per_s=float(np.median([run.windows / sum(run.latencies) for run in runs])),
        p50_s=float(np.percentile(latencies, 50)),
        p99_s=float(np.percentile(latencies, 99)),
        emit_p50_s=float(np.median([latency for run in runs for latency in run.emit_latencies])),
        busy=float(np.median([run.thread_cpu_s / sum(run.latencies) for run in runs])),
    )


def rate(run: PhaseRun) -> float:
    """Samples scored (and emitted) per second of the run."""
    return run.samples / sum(run.latencies)


def report(runs: dict[str, list[PhaseRun]]) -> None:
    first = runs["off"][0]
    identical = all(run.work == first.work for phase_runs in runs.values() for run in phase_runs)
    print(
        f"work per phase: {first.windows:,} windows scored, {first.firing + first.resolved:,} alert events "
        f"({first.firing:,} firing, {first.resolved:,} resolved), {first.quality:,} data-quality events; "
        f"{'identical in every phase and round' if identical else 'NOT IDENTICAL across phases:'}"
    )
    if not identical:
        for phase, phase_runs in runs.items():
            print(f"  {phase}: " + "; ".join(str(run.work) for run in phase_runs))
    figures = {phase: figures_of(phase_runs) for phase, phase_runs in runs.items()}
    print(
        f"{'phase':<6} {'samples/s':>12} {'windows/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'of which emit p50 ms':>21} {'thread CPU/wall':>16}"
    )
    for phase, item in figures.items():
        print(
            f"{phase:<6} {item.samples_per_s:12,.0f} {item.windows_per_s:11,.0f} "
            f"{item.p50_s * 1000:8.1f} {item.p99_s * 1000:8.1f} {item.emit_p50_s * 1000:21.1f} "
            f"{item.busy:16.0%}"
        )
    base = figures["off"]
    for phase in ("on", "down"):
        item = figures[phase]
        # Each round's phases ran back to back: their ratio is the least disturbed by a noisy machine.
        paired = [rate(run) / rate(off) for off, run in zip(runs["off"], runs[phase], strict=True)]
        print(
            f"{phase} ÷ off: throughput x{item.samples_per_s / base.samples_per_s:.3f} (paired by round: "
            f"median x{np.median(paired):.3f} of {' '.join(f'{ratio:.3f}' for ratio in paired)}), "
            f"p50 latency x{item.p50_s / base.p50_s:.2f}, p99 latency x{item.p99_s / base.p99_s:.2f}"
        )
    for phase in ("on", "down"):
        print_delivery(phase, runs[phase])


def print_delivery(phase: str, runs: list[PhaseRun]) -> None:
    print(
        f"delivery, {phase} (per round; {'/'.join(METRICS)} at the end of scoring -> after close; "
        "close time):"
    )
    for round_index, run in enumerate(runs):
        print(
            f"  round {round_index + 1}: Outputs.close() {run.close_s:.2f} s; "
            f"the webhook receiver answered {run.webhook_requests} requests"
        )
        for receiver, scored in run.scored.items():
            closed = run.closed[receiver]
            print(
                f"    {receiver[0]:<12} {receiver[1]:<34} "
                f"{'/'.join(f'{scored[name]:.0f}' for name in METRICS)} -> "
                f"{'/'.join(f'{closed[name]:.0f}' for name in METRICS)}"
            )


if __name__ == "__main__":
    main()
