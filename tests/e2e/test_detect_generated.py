"""End to end on generated data: each simulated domain with every anomaly kind injected, the default config.

The detector must find the injected events with few false alarms (event F1 >= 0.9 per domain, pooled over
four seeds). These train real models, so they take a while; they are the quality gate of the product.
"""

from __future__ import annotations

import pytest

from streamwatch.evaluate.generated import SCENARIO_SAMPLES, Scenario, run_scenario, summarise


@pytest.mark.slow
@pytest.mark.parametrize("domain", sorted(SCENARIO_SAMPLES))
def test_injected_events_are_found_with_few_false_alarms(domain: str) -> None:
    results = [run_scenario(Scenario(domain, seed)) for seed in (0, 1, 101, 202)]
    pooled = summarise(results)
    details = [(r.scenario.seed, r.score.found, r.score.labels, r.score.false_alarms) for r in results]
    assert pooled.f1 >= 0.9, f"{domain}: F1 {pooled.f1:.3f} (seed, found, labels, false alarms): {details}"
