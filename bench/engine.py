"""In-process engine throughput for many streams with the conv AE, against a bare torch forward pass.

    python bench/engine.py [--streams 1000] [--batches 20] [--samples-per-batch 64] [--model conv]

One model is trained on simulated grid frequency (window 64, hop 16) and serves every stream. Each batch
hands the engine `samples-per-batch` new samples of every stream (so streams x samples/hop windows close per
batch, scored in one pass). Printed in one run, side by side: engine points/s and windows/s, the bare
forward pass of the same model at the same batch size, their ratio, and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from streamwatch.config import DetectorConfig, StreamwatchConfig, TrainingConfig, WindowConfig
from streamwatch.core.bootstrap import StreamSeries, TrainingPlan, WindowShape, train_group
from streamwatch.core.detector import model_input
from streamwatch.core.engine import Engine
from streamwatch.generate.simulate import simulate
from streamwatch.offline import reconstructor_factory

START = 1_767_225_600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--samples-per-batch", type=int, default=64)
    parser.add_argument("--model", default="conv", choices=("conv", "lstm", "pca"))
    args = parser.parse_args()

    config = StreamwatchConfig(
        detector=DetectorConfig(
            model=args.model,
            window=WindowConfig(length=64, hop=16),
            training=TrainingConfig(max_epochs=10, max_seconds=60),
        )
    )
    rng = np.random.default_rng(0)
    train = simulate("grid_frequency", n=8000, start=START, rng=rng)
    started = time.perf_counter()
    model = train_group(
        {"s0": StreamSeries(train.channels, train.timestamps, train.values)},
        version=f"{args.model}@1",
        shape=WindowShape(length=64, hop=16),
        plan=TrainingPlan(),
        factory=reconstructor_factory(config.detector),
    )
    print(
        f"trained {model.version} in {time.perf_counter() - started:.1f}s ({model.fit_report.epochs} epochs)"
    )
    streams = [f"pmu-{i}/frequency" for i in range(args.streams)]
    profile, initial = model.profiles["s0"], model.initial_scores["s0"]
    model.profiles = dict.fromkeys(streams, profile)
    model.initial_scores = dict.fromkeys(streams, initial)
    model.level_references = dict.fromkeys(streams, model.level_references["s0"])
    engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build())
    engine.install("grid", model)

    per_batch = args.samples_per_batch
    total = per_batch * (args.batches + 1)
    live = simulate("grid_frequency", n=total + 64, start=START + 8000, rng=rng)
    # Every stream gets the same normal data shifted in time, so all see identical work.
    offsets = rng.integers(0, 64, size=args.streams)

    def batch(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        begin = index * per_batch
        return [
            (
                stream,
                live.timestamps[begin : begin + per_batch],
                live.values[begin + int(offsets[i]) : begin + int(offsets[i]) + per_batch],
            )
            for i, stream in enumerate(streams)
        ]

    engine.process_arrays(batch(0))  # fills the windows; not timed
    prepared = [batch(i) for i in range(1, args.batches + 1)]
    windows = 0
    started = time.perf_counter()
    for chunks in prepared:
        windows += len(engine.process_arrays(chunks).scores)
    engine_seconds = time.perf_counter() - started
    points = args.streams * per_batch * args.batches

    windows_per_batch = windows // args.batches
    bare_input = model_input(rng.normal(size=(windows_per_batch, 64, 1)).astype(np.float32))
    reconstructor = model.detector.reconstructor
    reconstructor.reconstruct(bare_input)  # warm-up
    started = time.perf_counter()
    for _ in range(args.batches):
        reconstructor.reconstruct(bare_input)
    bare_seconds = time.perf_counter() - started

    engine_rate = windows / engine_seconds
    bare_rate = windows_per_batch * args.batches / bare_seconds
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"streams {args.streams}, window 64, hop 16, {windows_per_batch} windows per scoring pass")
    print(f"engine:        {points / engine_seconds:12,.0f} points/s  {engine_rate:10,.0f} windows/s")
    print(f"bare forward:  {'':12s}           {bare_rate:10,.0f} windows/s")
    print(f"engine / bare forward (windows/s): {engine_rate / bare_rate:.2f}")
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
