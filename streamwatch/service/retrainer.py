"""The daemons' side of retraining: due retrains run in the background, their outcomes are applied between
two batches (the swap is atomic for the scoring loop), and a rollback made from the CLI is picked up."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import Future

from streamwatch.config import StreamwatchConfig
from streamwatch.core.retraining import Lifecycle, RetrainJob, RetrainOutcome, run_job
from streamwatch.offline import reconstructor_factory
from streamwatch.service.background import Background

log = logging.getLogger("streamwatch.retraining")


class Retrainer:
    def __init__(self, lifecycle: Lifecycle, config: StreamwatchConfig, background: Background) -> None:
        self._lifecycle = lifecycle
        self._config = config
        self._background = background
        self._running: dict[str, tuple[RetrainJob, Future[RetrainOutcome]]] = {}

    @property
    def running(self) -> list[str]:
        """Groups with a retrain in progress."""
        return sorted(self._running)

    def step(self) -> None:
        """Apply what finished, then start what is due (call between batches)."""
        for group, (job, future) in list(self._running.items()):
            if not future.done():
                continue
            del self._running[group]
            try:
                outcome = future.result()
            except Exception as error:  # a failed retrain must not take the daemon down
                log.exception("group %s: retraining %s failed", group, job.version)
                outcome = RetrainOutcome(job, None, None, f"training failed: {error!r}")
            self._lifecycle.complete(outcome)
        for job in self._lifecycle.due():
            self._running[job.group] = (job, self._background.submit(self._train(), job))

    def _train(self) -> functools.partial[RetrainOutcome]:
        detector = self._config.detector
        return functools.partial(
            run_job,
            factory=reconstructor_factory(detector),
            plan=detector.training.plan(progress=False),
            gate=self._lifecycle.policy.gate,
            threshold=self._config.threshold_config(),
        )
