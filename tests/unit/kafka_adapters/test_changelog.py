from __future__ import annotations

from kafka import TopicPartition

from streamwatch.kafka import changelog

MINE = TopicPartition("samples", 2)
OTHER = TopicPartition("samples", 6)  # the same changelog partition (6 % 4 == 2 % 4), another owner


def _restored(records: list[tuple[bytes, bytes]]) -> changelog.Restored:
    result = changelog.Restored()
    for key, value in records:
        changelog._apply(key, value, {MINE}, result)
    return result


def test_latest_state_profile_and_checkpoint_of_owned_partitions_are_restored() -> None:
    result = _restored(
        [
            (b"state/s1", changelog.state_value(MINE, {"seq": 1})),
            (b"profile/s1", changelog.profile_value(MINE, {"centre": [1.0]})),
            (b"state/s1", changelog.state_value(MINE, {"seq": 2})),
            (b"state/s9", changelog.state_value(OTHER, {"seq": 7})),
            (changelog.checkpoint_key(MINE), changelog.checkpoint_value(MINE, 40, 55)),
            (b"state/broken", b"{not json"),
        ]
    )
    assert set(result.streams) == {"s1"}
    assert result.streams["s1"].state == {"seq": 2}
    assert result.streams["s1"].profile == {"centre": [1.0]}
    assert result.checkpoints == {MINE: 40} and result.processed == {MINE: 55}
    assert result.unreadable == 1
    assert changelog.changelog_partition(OTHER, 4) == changelog.changelog_partition(MINE, 4) == 2


def test_state_is_consistent_only_with_the_checkpoint_of_the_committed_offset() -> None:
    result = _restored([(changelog.checkpoint_key(MINE), changelog.checkpoint_value(MINE, 40, 40))])
    assert result.consistent_with({MINE: 40})
    # The commit markers of a later transaction have not arrived yet: keep reading.
    assert not result.consistent_with({MINE: 90})
    # Nothing committed yet: any state read is fine.
    assert result.consistent_with({MINE: None})
