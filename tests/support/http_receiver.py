"""A real HTTP server on loopback that records what it is sent: the webhook receiver of the sink tests.

It can be taken down (the port closes: connection refused) and brought back on the same port, answer with a
chosen status, or answer slowly, so the tests see what an outage, a refusal and a slow receiver do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    # While set to an unset Event, requests hang until it is set (a receiver that stopped answering).
    hold: threading.Event | None = None


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.behaviour = Behaviour()
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                behaviour = receiver.behaviour
                if behaviour.delay_s:
                    time.sleep(behaviour.delay_s)
                if behaviour.hold is not None:
                    behaviour.hold.wait(60)
                if 200 <= behaviour.status < 300:
                    receiver._record(Request(self.path, dict(self.headers.items()), body))
                self.send_response(behaviour.status)
                for name, value in behaviour.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name=f"receiver {self.port}", daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def wait_for(self, count: int, timeout_s: float = 30.0, path: str | None = None) -> list[Request]:
        """The accepted requests (to `path`, if given) once there are at least `count`; fails on timeout."""

        def chosen(requests: list[Request]) -> list[Request]:
            return [r for r in requests if path is None or r.path == path]

        self.wait_until(lambda requests: len(chosen(requests)) >= count, timeout_s, f"{count} requests")
        return chosen(self.requests)

    def wait_until(self, condition: Callable[[list[Request]], bool], timeout_s: float, what: str) -> None:
        """Block until `condition(accepted requests)` holds; fails (naming `what`) on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not condition(list(self.requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{what}: not within {timeout_s:.0f}s ({len(self.requests)} requests)"
                    )
                self._lock.wait(left)

    def close(self) -> None:
        self.down()
