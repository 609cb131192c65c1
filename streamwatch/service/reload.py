"""Live reload (SIGHUP): thresholds, alert rules and sinks change without losing model or stream state.

The signal only sets a flag; the daemon's loop takes it between two batches. The file is read and checked
first, and the new sinks built (a secret that cannot be read fails here); then the engine takes the new
threshold and alert settings (all streams or none); only then are the sinks swapped and the old ones
closed. Anything that fails on the way refuses the whole reload with one log line saying why, and the
running configuration stays. Sections that cannot change in a running daemon (the source, the detector,
Kafka, retraining, HTTP, dead letters, Kafka sinks) refuse it too, naming them: those need a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamwatch.config import ConfigError, StreamwatchConfig, load_config
from streamwatch.core.engine import Engine
from streamwatch.io.sinks import AlertStateSink, Sink
from streamwatch.service.outputs import Outputs

log = logging.getLogger(__name__)

LIVE_SECTIONS = frozenset({"threshold", "alerts", "sinks", "delivery"})


@dataclass
class Reload:
    """A checked new configuration, and its sinks when they changed (None: keep the running ones)."""

    config: StreamwatchConfig
    outputs: Outputs | None


class Reloader:
    def __init__(
        self, path: Path | None, outputs: Outputs, build: Callable[[StreamwatchConfig], Outputs]
    ) -> None:
        """`build` makes the sinks of a new configuration without starting their deliveries."""
        self.path = path
        self.outputs = outputs
        self._build = build
        self._requested = threading.Event()

    def request(self) -> None:
        """Ask for a reload (safe from a signal handler: it only sets a flag)."""
        self._requested.set()

    def prepare(self, current: StreamwatchConfig) -> Reload | None:
        """If a reload was asked for: the new configuration, checked, with its sinks built; None when there
        is nothing to do or it was refused (logged)."""
        if not self._requested.is_set():
            return None
        self._requested.clear()
        if self.path is None:
            log.error("reload refused: started without -c, there is no configuration file to read again")
            return None
        try:
            new = load_config(self.path)
        except ConfigError as error:
            _refused(str(error))
            return None
        fixed = _changed_sections(current, new) - LIVE_SECTIONS
        if _kafka_sinks(current) != _kafka_sinks(new):
            fixed.add("sinks (kind: kafka)")
        if fixed:
            _refused(f"{', '.join(sorted(fixed))} changed; these need a restart (nothing was reloaded)")
            return None
        if new == current:
            log.info("reload: %s is unchanged", self.path)
            return None
        outputs = None
        if (new.sinks, new.delivery) != (current.sinks, current.delivery):
            try:
                outputs = self._build(new)
            except (ConfigError, OSError) as error:
                _refused(str(error))
                return None
        return Reload(new, outputs)

    def take(
        self,
        current: StreamwatchConfig,
        engine: Engine,
        use_sinks: Callable[[Sequence[Sink]], None],
        now: float,
    ) -> StreamwatchConfig:
        """Between two batches: apply a reload asked for, if it checks out; returns the configuration in
        force afterwards. The engine takes the new threshold and alert settings (all streams or none);
        then `use_sinks` gets the new sinks, and the receivers that hold alerts as state are told the
        alerts open now (their outbox may be a new one)."""
        reload = self.prepare(current)
        if reload is None:
            return current
        config = reload.config
        try:
            engine.reconfigure(threshold=config.threshold_config(), alerts=config.alerts.build())
        except ValueError as error:
            self.abandon(reload, str(error))
            return current
        if reload.outputs is not None:
            sinks = reload.outputs.sinks
            use_sinks(sinks)
            firing = engine.open_alerts(engine.streams(), now)
            for sink in sinks:
                if isinstance(sink, AlertStateSink):
                    sink.adopt(firing)
        self.commit(reload)
        return config

    def commit(self, reload: Reload) -> None:
        """The daemon now uses `reload`: close the sinks it replaced, then start the new ones (built
        unstarted), so no receiver's queue is ever delivered by two threads at once."""
        if reload.outputs is not None:
            replaced, self.outputs = self.outputs, reload.outputs
            replaced.close()
            reload.outputs.start()
        log.info("reloaded %s", self.path)

    def abandon(self, reload: Reload, reason: str) -> None:
        """The daemon could not apply `reload`: drop what was built for it; the running setup stays."""
        if reload.outputs is not None:
            reload.outputs.close()
        _refused(reason)


def _refused(reason: str) -> None:
    log.error("reload refused: %s; the running configuration stays", reason)


def _changed_sections(old: StreamwatchConfig, new: StreamwatchConfig) -> set[str]:
    before, after = old.model_dump(), new.model_dump()
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def _kafka_sinks(config: StreamwatchConfig) -> list[Any]:
    return [sink for sink in config.sinks if sink.kind == "kafka"]
