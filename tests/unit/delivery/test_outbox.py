from __future__ import annotations

import random
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from transports import ScriptedTransport

from streamwatch.delivery.backoff import Backoff
from streamwatch.delivery.courier import OutboxCourier, RetryPolicy
from streamwatch.delivery.http import DeliveryError
from streamwatch.delivery.metrics import sink_metrics
from streamwatch.delivery.outbox import Outbox, Pending, Queued
from streamwatch.delivery.store import Store
from streamwatch.delivery.undelivered import UndeliveredFile

URL = "http://receiver.test/hook"


def _event(key: str, lane: str) -> Queued:
    return Queued(key, lane, orjson.dumps({"key": key, "lane": lane}))


def _courier(
    outbox: Outbox, transport: ScriptedTransport, dead: Path, *, give_up_after_s: float = 1e9
) -> OutboxCourier:
    def send(event: Pending) -> None:
        transport.post(URL, event.body, {"Idempotency-Key": event.key}, timeout_s=1)

    return OutboxCourier(
        outbox,
        URL,
        send,
        retry=RetryPolicy(Backoff(1.0, 60.0), give_up_after_s),
        undelivered=UndeliveredFile(dead),
        metrics=sink_metrics().receiver("webhook", URL),
        rng=random.Random(0),
    )


def _delivered_keys(transport: ScriptedTransport) -> list[str]:
    return [post.headers["Idempotency-Key"] for post in transport.posts]


def test_a_key_is_queued_once_even_after_delivery(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path / "o.db"))
    assert outbox.put(URL, [_event("a", "s1"), _event("b", "s1")], now=0) == 2
    assert outbox.put(URL, [_event("a", "s1")], now=1) == 0
    transport = ScriptedTransport()
    _courier(outbox, transport, tmp_path / "dead.jsonl").round(2)
    # A replay of delivered events (a crash before the source offsets committed) sends nothing again.
    assert outbox.put(URL, [_event("a", "s1"), _event("b", "s1")], now=3) == 0
    assert outbox.pending(URL) == 0
    # Other receivers keep their own keys.
    assert outbox.put("http://other.test", [_event("a", "s1")], now=3) == 1
    # Once forgotten, a key is new again.
    assert outbox.forget_delivered(before=2.5) == 2
    assert outbox.put(URL, [_event("a", "s1")], now=4) == 1


def test_only_the_head_of_each_lane_is_due(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path / "o.db"))
    outbox.put(URL, [_event("a1", "a"), _event("b1", "b"), _event("a2", "a")], now=0)
    assert [event.key for event in outbox.due(URL, now=0)] == ["a1", "b1"]
    outbox.failed(outbox.due(URL, now=0)[0].seq, error="down", retry_at=10)
    # a1 waits for its retry and a2 waits behind it; lane b is not held up.
    assert [event.key for event in outbox.due(URL, now=5)] == ["b1"]
    assert outbox.next_due(URL) == 0
    assert [event.key for event in outbox.due(URL, now=10)] == ["a1", "b1"]


def test_events_survive_reopening_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db")
    Outbox(store).put(URL, [_event("a", "s"), _event("b", "s")], now=0)
    store.close()
    reopened = Outbox(Store(tmp_path / "o.db"))
    assert reopened.pending(URL) == 2
    assert [event.key for event in reopened.due(URL, now=0)] == ["a"]


def test_a_refused_event_goes_to_the_dead_letters_and_its_lane_goes_on(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path / "o.db"))
    outbox.put(URL, [_event("bad", "s"), _event("good", "s")], now=0)
    transport = ScriptedTransport(next_errors=[DeliveryError("HTTP 400: no", retryable=False)])
    courier = _courier(outbox, transport, tmp_path / "dead.jsonl")
    # "good" became the lane head, due at once: the same round delivers it.
    assert courier.round(0) is None
    assert _delivered_keys(transport) == ["good"]
    [line] = (tmp_path / "dead.jsonl").read_bytes().splitlines()
    dead = orjson.loads(line)
    assert dead["receiver"] == URL and dead["key"] == "bad" and dead["reason"] == "refused: HTTP 400: no"
    assert dead["event"] == {"key": "bad", "lane": "s"}


def test_retries_back_off_honour_retry_after_and_give_up_in_the_end(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path / "o.db"))
    outbox.put(URL, [_event("e", "s")], now=0)
    transport = ScriptedTransport()
    transport.down(URL)
    courier = _courier(outbox, transport, tmp_path / "dead.jsonl", give_up_after_s=100)
    metrics = courier.metrics
    now, waits = 0.0, []
    while (next_due := courier.round(now)) is not None:
        waits.append(next_due - now)
        now = next_due
    assert transport.attempts == len(waits) + 1 and now >= 100
    assert all(0 <= w <= 60 for w in waits) and max(waits) > 8  # the cap grew past the first ones
    [line] = (tmp_path / "dead.jsonl").read_bytes().splitlines()
    assert orjson.loads(line)["reason"].startswith("still failing after")
    assert metrics.value("retries") == len(waits) and metrics.value("dead_letters") == 1
    # A Retry-After longer than the backoff is honoured.
    outbox.put(URL, [_event("f", "s")], now=now)
    transport.next_errors.append(DeliveryError("HTTP 429", retryable=True, retry_after_s=500))
    assert courier.round(now) == now + 500


def test_an_unreachable_receiver_is_probed_once_per_backoff_step_not_once_per_lane(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path / "o.db"))
    outbox.put(URL, [_event(f"e{lane}", lane) for lane in "abcdef"], now=0)
    transport = ScriptedTransport()
    transport.down(URL)
    courier = _courier(outbox, transport, tmp_path / "dead.jsonl")
    paused_until = courier.round(0)
    assert transport.attempts == 1 and paused_until is not None
    assert courier.round(paused_until / 2) == paused_until and transport.attempts == 1
    transport.up(URL)
    courier.round(paused_until)
    assert sorted(_delivered_keys(transport)) == [f"e{lane}" for lane in "abcdef"]


def test_an_error_answer_holds_back_only_its_own_lane(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path / "o.db"))
    outbox.put(URL, [_event("poison", "a"), _event("a2", "a"), _event("b1", "b"), _event("c1", "c")], now=0)
    transport = ScriptedTransport(next_errors=[DeliveryError("HTTP 500", retryable=True)])
    courier = _courier(outbox, transport, tmp_path / "dead.jsonl")
    courier.round(0)
    assert _delivered_keys(transport) == ["b1", "c1"]


@settings(max_examples=60, deadline=None)
@given(
    lanes=st.lists(st.sampled_from("abcd"), min_size=1, max_size=30),
    failures=st.lists(st.booleans(), min_size=1, max_size=20),
    replay_at=st.integers(0, 30),
)
def test_each_lane_is_delivered_in_order_exactly_once_whatever_fails(
    lanes: list[str], failures: list[bool], replay_at: int
) -> None:
    outbox = Outbox(Store(Path(":memory:")))
    events = [_event(f"{lane}{i}", lane) for i, lane in enumerate(lanes)]
    transport = ScriptedTransport()
    pattern = iter(failures * 100)
    dead = Path("/dev/null")
    courier = _courier(outbox, transport, dead)
    original = transport.post

    def flaky(url: str, body: bytes, headers: object, *, timeout_s: float) -> object:
        if next(pattern, False):
            raise DeliveryError("flaky", retryable=True)
        return original(url, body, headers, timeout_s=timeout_s)  # type: ignore[arg-type]

    transport.post = flaky  # type: ignore[method-assign,assignment]
    now = 0.0
    outbox.put(URL, events[:replay_at], now)
    for step in range(10_000):
        if step == 3:
            # Everything queued again (a replay) plus the rest: nothing is sent twice.
            outbox.put(URL, events, now)
        next_due = courier.round(now)
        if next_due is None and step >= 3:
            break
        now = max(now, next_due or now) + 0.001
    delivered = _delivered_keys(transport)
    assert sorted(delivered) == sorted(event.key for event in events)
    for lane in set(lanes):
        mine = [key for key in delivered if key.startswith(lane)]
        assert mine == [event.key for event in events if event.lane == lane]
