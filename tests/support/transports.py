"""An in-memory HTTP transport for the delivery tests: real code with the Transport contract, whose answers
the test scripts (accept, fail with a retryable error, refuse)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamwatch.delivery.http import DeliveryError, Response


@dataclass(frozen=True)
class Post:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class ScriptedTransport:
    # Per URL: None accepts, else the error raised.
    failures: dict[str, DeliveryError] = field(default_factory=dict)
    # Errors for the next posts, whatever the URL (consumed first).
    next_errors: list[DeliveryError] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    attempts: int = 0
    closed: bool = False

    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float) -> Response:
        self.attempts += 1
        if self.next_errors:
            raise self.next_errors.pop(0)
        error = self.failures.get(url)
        if error is not None:
            raise error
        self.posts.append(Post(url, body, dict(headers)))
        return Response(200, b"")

    def down(self, url: str) -> None:
        self.failures[url] = DeliveryError(
            f"POST {url}: connection refused", retryable=True, unreachable=True
        )

    def up(self, url: str) -> None:
        self.failures.pop(url, None)

    def close(self) -> None:
        self.closed = True
