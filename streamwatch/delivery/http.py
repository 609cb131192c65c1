"""The one place outbound HTTP happens, and the two ways it fails.

urllib3 (already here through influxdb-client) gives pooled keep-alive connections and per-request timeouts;
its own retries are off, because the outbox decides when to try again. Every failure leaves this module as a
`DeliveryError` that says whether trying again can help, so the delivery logic never sees urllib3.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import urllib3

# Worth another try: timeouts, too early, rate limits and server errors; any other 4xx is the request's own
# fault and would fail the same way again.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_MAX_BODY_IN_ERROR = 200


class DeliveryError(Exception):
    """A request that did not succeed: `retryable` when a later attempt may (network, 5xx, 429);
    `unreachable` when no answer came at all (refused, timed out), so other requests would fail alike."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.unreachable = unreachable


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


class Transport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float) -> Response:
        """POST and return a 2xx response, or raise DeliveryError."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    def __init__(self, *, max_connections_per_host: int = 2) -> None:
        self._pool = urllib3.PoolManager(maxsize=max_connections_per_host, retries=False)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float) -> Response:
        try:
            answer = self._pool.request(
                "POST", url, body=body, headers=dict(headers), timeout=timeout_s, redirect=False
            )
        except urllib3.exceptions.HTTPError as error:
            raise DeliveryError(f"POST {url}: {_reason(error)}", retryable=True, unreachable=True) from None
        if 200 <= answer.status < 300:
            return Response(answer.status, answer.data)
        raise status_error(url, answer.status, answer.data, answer.headers.get("Retry-After"))

    def close(self) -> None:
        self._pool.clear()


def status_error(url: str, status: int, body: bytes, retry_after: str | None) -> DeliveryError:
    """The DeliveryError for a non-2xx answer."""
    text = body[:_MAX_BODY_IN_ERROR].decode("utf-8", "replace").strip()
    message = f"POST {url}: HTTP {status}" + (f": {text}" if text else "")
    return DeliveryError(
        message, retryable=retryable_status(status), retry_after_s=retry_after_seconds(retry_after)
    )


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status may pass by trying again later."""
    return status >= 500 or status in _RETRYABLE_STATUSES


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _reason(error: urllib3.exceptions.HTTPError) -> str:
    # MaxRetryError wraps the real cause (refused, timed out, name not known).
    cause = getattr(error, "reason", None)
    return str(cause if cause is not None else error)
