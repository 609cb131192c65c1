from __future__ import annotations

import hashlib
import hmac

from streamwatch.delivery.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers, verify

SECRET = b"s3cret"
BODY = b'{"alert_id":"abc","status":"firing"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    headers = signed_headers(SECRET, 1_764_500_000, BODY)
    expected = hmac.new(SECRET, b"1764500000." + BODY, hashlib.sha256).hexdigest()
    assert headers == {TIMESTAMP_HEADER: "1764500000", SIGNATURE_HEADER: f"sha256={expected}"}


def test_a_receiver_accepts_a_fresh_genuine_request_only() -> None:
    headers = signed_headers(SECRET, 1000, BODY)
    stamp, signed = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]

    def check(body: bytes = BODY, secret: bytes = SECRET, now: float = 1100, timestamp: str = stamp) -> bool:
        return verify(secret, timestamp=timestamp, signature_header=signed, body=body, now=now)

    assert check()
    assert not check(body=BODY + b" ")
    assert not check(secret=b"other")
    assert not check(now=1000 + 301)
    # The timestamp is signed: moving it forward to look fresh breaks the signature.
    assert not check(now=5000, timestamp="5000")
    assert not check(timestamp="soon")
