"""The daemon's own HTTP endpoints, on loopback by default (`http.listen`):

    GET /metrics   Prometheus text format, everything on the daemon's registry
    GET /healthz   200 while the process serves: alive
    GET /readyz    200 when ready, 503 with the reasons when not (see service.health)

A standard-library threading server: three tiny endpoints need no framework, and a slow scraper holds up
only its own thread, never the scoring loop.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamwatch.service.health import Readiness

log = logging.getLogger(__name__)


class StatusServer:
    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, readiness: Readiness) -> None:
        """Binds at once: a port already taken fails the start with OSError, naming the address."""
        handler = _handler(registry, readiness)
        try:
            self._server = ThreadingHTTPServer(address, handler)
        except OSError as error:
            raise OSError(
                f"http.listen {address[0]}:{address[1]}: {error.strerror}; choose a free port "
                "(http.listen) or turn the endpoints off (http.enabled: false)"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="streamwatch-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StatusServer:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz at %s", self.url)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "streamwatch"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "alive"})
            elif path == "/readyz":
                verdict = readiness.check()
                body = {"ready": verdict.ready, "reasons": verdict.reasons}
                self._json(200 if verdict.ready else 503, body)
            else:
                self._json(404, {"error": "not found", "endpoints": ["/metrics", "/healthz", "/readyz"]})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, orjson.dumps(body) + b"\n", "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every 15 s would drown the daemon's own log.
            log.debug("http: " + format, *args)

    return Handler
