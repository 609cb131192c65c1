from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.delivery.backoff import Backoff


def test_the_cap_doubles_from_initial_up_to_max() -> None:
    backoff = Backoff(initial_s=1.0, max_s=10.0)
    assert [backoff.cap(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.cap(10_000) == 10.0


@given(
    attempts=st.integers(1, 200),
    at_least=st.floats(0, 1000),
    seed=st.integers(0, 2**32),
)
def test_a_delay_is_jittered_below_its_cap_but_never_before_retry_after(
    attempts: int, at_least: float, seed: int
) -> None:
    backoff = Backoff(initial_s=0.5, max_s=60.0)
    delay = backoff.delay(attempts, random.Random(seed), at_least=at_least)
    assert at_least <= delay
    assert delay <= max(at_least, backoff.cap(attempts))


def test_full_jitter_spreads_retries_of_events_that_failed_together() -> None:
    rng = random.Random(1)
    delays = [Backoff(1.0, 300.0).delay(5, rng) for _ in range(200)]
    # Uniform over [0, 16): both halves well used, not one instant.
    assert sum(d < 8 for d in delays) > 60 and sum(d >= 8 for d in delays) > 60


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=5, max_s=1)
    with pytest.raises(ValueError, match="attempts"):
        Backoff().cap(0)
