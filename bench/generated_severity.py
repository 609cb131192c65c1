"""Detection rate of anomalies drawn from a trained model (`generate --from-model`), severity x kind.

    python bench/generated_severity.py [--models conv,lstm] [--domains voltage,grid_frequency,server]
        [--severities 0,0.25,0.5,1,2] [--seeds 0,1,2] [--kinds encoder_weights,latent_noise,latent_offset]

Per model and domain: train with the default config on the first 30 % of a simulated normal series, then per
seed put 6 anomalies of one kind at one severity into the rest of that series and run the offline engine
with the same model. Each cell is the detection rate (labelled anomalies an alert overlapped, pooled over
the seeds) and, after the slash, the alerts that overlapped no anomaly. Classic kinds (spike, level_shift,
...) may be added to --kinds for comparison; severity 0 changes nothing, so its row is the chance level.
"""

from __future__ import annotations

import argparse
import time

from streamwatch.config import DetectorConfig, StreamwatchConfig
from streamwatch.evaluate.model_generated import TrainedSeries, score_generated, train_on_simulated
from streamwatch.generate.inject import MODEL_KINDS

SAMPLES = {"grid_frequency": 12_000, "voltage": 12_000, "server": 8_640, "ecg": 30_000, "logs": 8_640}
# The normal series is simulated from its own seed, apart from the anomaly seeds.
BASE_SEED = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="conv,lstm", help="comma-separated: conv, lstm")
    parser.add_argument("--domains", default="voltage,grid_frequency,server")
    parser.add_argument("--severities", default="0,0.25,0.5,1,2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kinds", default=",".join(MODEL_KINDS))
    args = parser.parse_args()
    severities = [float(text) for text in args.severities.split(",")]
    seeds = [int(text) for text in args.seeds.split(",")]
    kinds = args.kinds.split(",")
    started = time.perf_counter()
    for model in args.models.split(","):
        config = StreamwatchConfig(detector=DetectorConfig.model_validate({"model": model}))
        for domain in args.domains.split(","):
            trained = train_on_simulated(domain, samples=SAMPLES[domain], seed=BASE_SEED, config=config)
            _print_table(trained, config, severities=severities, seeds=seeds, kinds=kinds)
    print(f"seeds {args.seeds}, 6 anomalies per series, {time.perf_counter() - started:.0f}s")


def _print_table(
    trained: TrainedSeries,
    config: StreamwatchConfig,
    *,
    severities: list[float],
    seeds: list[int],
    kinds: list[str],
) -> None:
    model = trained.model
    print(
        f"\n{model.version} on {trained.stream}: window {model.spec.length}/{model.spec.hop}, "
        f"{model.fit_report.epochs} epochs in {model.fit_report.seconds:.1f}s; detection rate / false alarms"
    )
    print(f"{'severity':>8s} " + " ".join(f"{kind:>17s}" for kind in kinds))
    for severity in severities:
        cells = []
        for kind in kinds:
            scores = [
                score_generated(trained, config, kinds=[kind], severity=severity, seed=seed).score
                for seed in seeds
            ]
            found = sum(item.found for item in scores)
            labels = sum(item.labels for item in scores)
            false_alarms = sum(item.false_alarms for item in scores)
            cells.append(f"{found / labels:6.2f} ({found:2d}/{labels:2d}) /{false_alarms:2d}")
        print(f"{severity:8.2f} " + " ".join(f"{cell:>17s}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
