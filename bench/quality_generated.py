"""Event-level detection quality on generated data, per domain and anomaly kind, with the default config.

    python bench/quality_generated.py [--seeds 0,1,101,202] [--model conv|lstm|pca] [--domains ecg,...]

Prints one line per scenario (with the kinds it missed) and one row per domain pooled over the seeds:
labels found, alerts, false alarms, event F1 and mean time to detect.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from streamwatch.config import DetectorConfig, StreamwatchConfig
from streamwatch.evaluate.events import Span
from streamwatch.evaluate.generated import SCENARIO_SAMPLES, Scenario, ScenarioResult, run_scenario, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,101,202", help="comma-separated seeds (default: the test's)")
    parser.add_argument("--model", default="conv", choices=("conv", "lstm", "pca"))
    parser.add_argument("--domains", default=",".join(SCENARIO_SAMPLES))
    parser.add_argument("--severity", type=float, default=1.0)
    parser.add_argument(
        "--threshold", help="threshold as KIND or KIND:FLOOR (default: the configuration's default)"
    )
    args = parser.parse_args()
    config = StreamwatchConfig(detector=DetectorConfig(model=args.model))
    if args.threshold:
        kind, _, floor = args.threshold.partition(":")
        rule: dict[str, object] = {"kind": kind} | ({"floor": float(floor)} if floor else {})
        config = config.model_copy(update={"threshold": rule})
    results: list[ScenarioResult] = []
    started = time.perf_counter()
    for domain in args.domains.split(","):
        for seed in (int(text) for text in args.seeds.split(",")):
            item = run_scenario(Scenario(domain, seed, severity=args.severity), config)
            results.append(item)
            missed = [
                label.kind
                for label in item.labels
                if not any(
                    Span(label.start, label.end).overlaps(
                        span,
                        item.result.model.spec.length
                        * next(iter(item.result.model.profiles.values())).interval_s,
                    )
                    for span, _ in _spans(item)
                )
            ]
            print(
                f"{domain:15s} seed {seed}: found {item.score.found}/{item.score.labels} "
                f"alerts {item.score.alerts} false {item.score.false_alarms} F1 {item.score.f1:.3f} "
                f"window {item.result.model.spec.length}/{item.result.model.spec.hop} missed {missed}",
                flush=True,
            )
    print()
    print(f"{'domain':15s} {'found':>9s} {'alerts':>6s} {'false':>5s} {'F1':>6s} {'delay_s':>8s}")
    by_domain: dict[str, list[ScenarioResult]] = defaultdict(list)
    for item in results:
        by_domain[item.scenario.domain].append(item)
    for domain, items in by_domain.items():
        pooled = summarise(items)
        print(
            f"{domain:15s} {pooled.found:4d}/{pooled.labels:<4d} {pooled.alerts:6d} {pooled.false_alarms:5d} "
            f"{pooled.f1:6.3f} {pooled.mean_delay_s:8.1f}"
        )
    total = summarise(results)
    print(
        f"{'all':15s} {total.found:4d}/{total.labels:<4d} {total.alerts:6d} {total.false_alarms:5d} "
        f"{total.f1:6.3f}"
    )
    print(f"model {args.model}, seeds {args.seeds}, {time.perf_counter() - started:.0f}s")


def _spans(item: ScenarioResult) -> list[tuple[Span, float]]:
    from streamwatch.evaluate.events import alert_spans

    end = item.result.scores[-1].end if item.result.scores else 0.0
    return alert_spans(item.result.alerts, end_of_data=end)


if __name__ == "__main__":
    main()
