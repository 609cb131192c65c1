"""Cooperative cancellation of long work on background threads (model training).

A daemon that stops must not leave a thread inside a torch kernel while the interpreter shuts down (the
process then aborts instead of exiting cleanly). Work run through `cancellable(event)` checks
`stop_requested()` at safe points (every training batch) and raises `CancelledError` once the event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_STOP: ContextVar[threading.Event | None] = ContextVar("streamwatch_stop", default=None)


class CancelledError(Exception):
    """The work was asked to stop."""


@contextmanager
def cancellable(stop: threading.Event) -> Iterator[None]:
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def stop_requested() -> bool:
    stop = _STOP.get()
    return stop is not None and stop.is_set()


def check() -> None:
    """Raise `CancelledError` if the work in progress was asked to stop."""
    if stop_requested():
        raise CancelledError("stopped")
