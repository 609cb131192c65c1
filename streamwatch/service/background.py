"""Work off the scoring loop: training and retraining run here, one job at a time."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from streamwatch import cancel

T = TypeVar("T")


class Background:
    """Runs jobs one at a time on a daemon thread. Unlike a ThreadPoolExecutor's workers it does not hold up
    the process's exit: `stop` cancels the job in progress at its next safe point (see streamwatch.cancel)
    and waits briefly for the thread; a stopped daemon trains again after its restart."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, function, args))
        return future

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Cancel what runs, drop what waits; True if the thread is gone within `timeout_s`."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _work(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                return
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with cancel.cancellable(self._stopping):
                    future.set_result(function(*args))
            except BaseException as error:  # handed to whoever collects the future
                future.set_exception(error)
