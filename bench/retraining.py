"""What retraining costs: scoring latency and throughput while a retrain runs in the background, and how
long a retrain takes for the conv and the LSTM autoencoder on 10k windows.

    python bench/retraining.py [--streams 200] [--samples-per-batch 64] [--windows 10000]

Part 1 (one run, side by side): the daemon's scoring step (engine + lifecycle, as `service.daemon` runs it)
on `--streams` simulated voltage streams, batch after batch; first with no retrain running, then while a
conv retrain of the group runs on the background thread the daemon uses, then without again. Printed: p50
and p99 batch latency and samples/s for each phase, and during ÷ without.

Part 2: `run_job` (training plus the validation gate) for conv and lstm on one stream whose buffer holds
enough data for `--windows` training windows; wall time, epochs, and whether the time limit cut it short.
"""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import replace

import numpy as np

from streamwatch.config import StreamwatchConfig, parse_config
from streamwatch.core.bootstrap import GroupModel, StreamSeries, start_stream, train_group
from streamwatch.core.engine import Engine
from streamwatch.core.model_history import MemoryHistory
from streamwatch.core.retraining import Lifecycle, RetrainJob, run_job
from streamwatch.generate.simulate import Series, simulate
from streamwatch.offline import reconstructor_factory
from streamwatch.service.background import Background

START = 1_767_225_600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--samples-per-batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=10_000)
    args = parser.parse_args()
    scoring_during_retrain(args.streams, args.samples_per_batch)
    retrain_times(args.windows)


def _config(model: str) -> StreamwatchConfig:
    return parse_config({"detector": {"model": model}})


def _streams(count: int, samples: int) -> dict[str, Series]:
    return {
        f"s{index}": simulate("voltage", n=samples, start=START, rng=np.random.default_rng(index))
        for index in range(count)
    }


def scoring_during_retrain(streams: int, per_batch: int) -> None:
    config = _config("conv")
    history = 6000
    data = _streams(streams, history + 400 * per_batch)
    detector = config.detector
    plan = detector.training.plan(progress=False)
    series = {
        name: StreamSeries(item.channels, item.timestamps[:history], item.values[:history])
        for name, item in data.items()
    }
    model = train_group(
        dict(list(series.items())[:8]),
        version="conv@1",
        shape=detector.window.shape(),
        plan=plan,
        factory=reconstructor_factory(detector),
    )
    engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build())
    engine.register("g", model)
    lifecycle = Lifecycle(
        engine,
        config.retraining.policy(),
        kind="conv",
        threshold=config.threshold_config(),
        plan=plan,
        history=MemoryHistory(),
    )
    for name, item in series.items():
        engine.start_stream(name, "g", model.start_of(name) or start_stream(model, item, plan))
        engine.warm_up(name, item.timestamps, item.values)
        lifecycle.buffer.seed(name, lifecycle.shape_of(name), item.timestamps, item.values)

    position = history

    def batch() -> tuple[float, int]:
        nonlocal position
        blocks = [
            (
                name,
                item.timestamps[position : position + per_batch],
                item.values[position : position + per_batch],
            )
            for name, item in data.items()
        ]
        position += per_batch
        started = time.perf_counter()
        lifecycle.observe(blocks, engine.process_arrays(blocks))
        return time.perf_counter() - started, sum(len(block[1]) for block in blocks)

    for _ in range(5):  # warm-up: first calls pay for allocation and torch's lazy set-up
        batch()
    phases: dict[str, list[tuple[float, int]]] = {"without": [], "during": [], "after": []}
    for _ in range(40):
        phases["without"].append(batch())
    job = _job(model, dict(list(series.items())[:8]), "conv@2")
    background = Background("bench-retrain")
    future = background.submit(
        functools.partial(
            run_job,
            factory=reconstructor_factory(detector),
            plan=plan,
            gate=lifecycle.policy.gate,
            threshold=config.threshold_config(),
        ),
        job,
    )
    while (
        not future.done()
        and position + per_batch < len(next(iter(data.values())).timestamps) - 40 * per_batch
    ):
        phases["during"].append(batch())
    outcome = future.result()
    for _ in range(40):
        phases["after"].append(batch())
    background.stop()
    print(
        f"scoring: {streams} voltage streams, {per_batch} samples each per batch; a conv retrain "
        f"({sum(len(item.timestamps) for item in job.train.values())} samples, "
        f"{outcome.challenger.fit_report.epochs if outcome.challenger else 0} epochs) ran for "
        f"{len(phases['during'])} batches"
    )
    figures = {name: _figures(values) for name, values in phases.items()}
    for name, (p50, p99, rate) in figures.items():
        print(f"  {name:<8} p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  {rate:10.0f} samples/s")
    base_p99 = (figures["without"][1] + figures["after"][1]) / 2
    base_rate = (figures["without"][2] + figures["after"][2]) / 2
    print(
        f"  during / without: p99 latency x{figures['during'][1] / base_p99:.2f}, "
        f"throughput x{figures['during'][2] / base_rate:.2f}"
    )


def _figures(values: list[tuple[float, int]]) -> tuple[float, float, float]:
    seconds = np.asarray([value[0] for value in values])
    samples = sum(value[1] for value in values)
    return (
        float(np.percentile(seconds, 50)),
        float(np.percentile(seconds, 99)),
        samples / float(seconds.sum()),
    )


def _job(champion: GroupModel, series: dict[str, StreamSeries], version: str) -> RetrainJob:
    """A retrain of `series`: the newest fifth of each held back for the gate, as the lifecycle does."""
    train, held_back = {}, {}
    for name, item in series.items():
        cut = int(len(item.timestamps) * 0.8)
        train[name] = StreamSeries(item.channels, item.timestamps[:cut], item.values[:cut])
        held_back[name] = StreamSeries(item.channels, item.timestamps[cut:], item.values[cut:])
    profiles = {name: champion.profiles[name] for name in series}
    due = max(float(item.timestamps[-1]) for item in series.values())
    return RetrainJob("g", version, 1, due, "bench", champion, profiles, train, held_back)


def retrain_times(windows: int) -> None:
    for kind in ("conv", "lstm"):
        config = _config(kind)
        detector = config.detector
        plan = replace(detector.training.plan(progress=False), max_train_windows=windows)
        # Window 64 (voltage): with `windows` training windows allowed, every sample of the training part
        # starts one; the job holds back a fifth for the gate and training a fifth for calibration.
        train_rows = int(windows / (1 - plan.held_out_share)) + 63
        total = int(train_rows / 0.8)
        item = simulate("voltage", n=total, start=START, rng=np.random.default_rng(99))
        first = StreamSeries(item.channels, item.timestamps[:4000], item.values[:4000])
        champion = train_group(
            {"s": first},
            version=f"{kind}@1",
            shape=detector.window.shape(),
            plan=detector.training.plan(progress=False),
            factory=reconstructor_factory(detector),
        )
        job = _job(champion, {"s": StreamSeries(item.channels, item.timestamps, item.values)}, f"{kind}@2")
        started = time.perf_counter()
        outcome = run_job(
            job,
            factory=reconstructor_factory(detector),
            plan=plan,
            gate=config.retraining.policy().gate,
            threshold=config.threshold_config(),
        )
        wall = time.perf_counter() - started
        assert outcome.challenger is not None and outcome.report is not None
        fit = outcome.challenger.fit_report
        seen = fit.extra.get("train_windows", 0) + fit.extra.get("validation_windows", 0)
        print(
            f"retrain {kind}: {seen:.0f} windows, "
            f"{fit.epochs} epochs, training {fit.seconds:.1f} s"
            f"{' (time limit reached)' if fit.extra.get('timed_out') else ''}, with the gate {wall:.1f} s "
            f"wall; gate {'accepted' if outcome.report.accepted else 'rejected: ' + outcome.report.reason}"
        )


if __name__ == "__main__":
    main()
