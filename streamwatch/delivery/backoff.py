"""When to try again: exponential backoff with full jitter, the randomness passed in.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the retries of many events that failed
together, so a receiver coming back is not hit by all of them at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 1.0
    max_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s} and {self.max_s}")

    def cap(self, attempts: int) -> float:
        """The longest wait after `attempts` failed attempts (1 or more)."""
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        # 2**60 overflows nothing and is far past any max_s.
        return min(self.max_s, self.initial_s * 2.0 ** min(attempts - 1, 60))

    def delay(self, attempts: int, rng: random.Random, *, at_least: float = 0.0) -> float:
        """Seconds to wait before the next attempt; never less than `at_least` (a receiver's Retry-After)."""
        return max(at_least, rng.uniform(0.0, self.cap(attempts)))
