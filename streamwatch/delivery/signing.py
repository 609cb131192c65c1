"""Webhook signatures: HMAC-SHA256 over "<unix seconds>.<body>", sent as

    X-Streamwatch-Timestamp: 1764500000
    X-Streamwatch-Signature: sha256=<64 hex digits>

The timestamp is inside the signed bytes, so a receiver that also refuses old timestamps (`verify` allows
five minutes) cannot be fed a recorded request again. Every retry is signed afresh.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Streamwatch-Timestamp"
SIGNATURE_HEADER = "X-Streamwatch-Signature"
_PREFIX = "sha256="


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def signed_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: bytes,
    *,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver does: the signature matches (compared in constant time) and the timestamp is fresh."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, sent_at, body), signature_header)
