"""The pure parts of the standby region and its failover: MM2's configuration, its checkpoint keys, the caught-up
check, which groups move, how far they rewind, and when a region counts as down."""

from __future__ import annotations

import struct

import pytest

from domain.replication import Tail
from infra.kafka.failover import DownDetector, platform_group, rewind_offsets
from infra.kafka.mirror import decode_checkpoint_key, lagging_partitions, mirror_properties, mirrored


def _props(target_size: int = 3) -> dict[str, str]:
    return mirror_properties(("primary", "p:1"), ("standby", "s:1,s:2,s:3"), target_size)


def test_the_mirror_keeps_topic_names_and_copies_one_way_only() -> None:
    props = _props()
    assert props["replication.policy.class"].endswith(".IdentityReplicationPolicy")
    assert props["primary->standby.enabled"] == "true"
    assert props["standby->primary.enabled"] == "false"  # identity names cannot tell a record that came back
    assert props["primary.bootstrap.servers"] == "p:1" and props["standby.bootstrap.servers"] == "s:1,s:2,s:3"


def test_the_mirror_reads_committed_and_translates_group_offsets_on_the_target() -> None:
    props = _props()
    assert props["primary.consumer.isolation.level"] == "read_committed"
    assert props["sync.group.offsets.enabled"] == props["emit.checkpoints.enabled"] == "true"
    assert int(props["offset.lag.max"]) <= 10
    assert props["offset-syncs.topic.location"] == "target"  # translation survives the source region
    assert props["sync.topic.configs.enabled"] == "true"  # a compacted topic stays compacted


@pytest.mark.parametrize(("size", "replicas"), [(1, "1"), (3, "3"), (5, "3")])
def test_what_the_mirror_creates_is_replicated_as_the_targets_size_allows(size: int, replicas: str) -> None:
    props = _props(size)
    keys = [k for k in props if k.endswith("replication.factor")]
    assert len(keys) >= 7 and {props[k] for k in keys} == {replicas}


@pytest.mark.parametrize(
    ("topic", "copied"),
    [
        ("energy.orders", True),
        ("ledger.commands", True),
        ("nexus-settlement-balances-changelog", True),  # Faust's internal topics move with the workers
        ("__consumer_offsets", False),
        ("__transaction_state", False),
        ("primary.checkpoints.internal", False),
        ("mm2-offset-syncs.standby.internal", False),
        ("heartbeats", False),
    ],
)
def test_every_topic_is_mirrored_but_kafkas_and_mm2s_own(topic: str, copied: bool) -> None:
    assert mirrored(topic) is copied


def _string(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def test_a_checkpoint_key_names_its_group_topic_and_partition() -> None:
    key = _string("nexus-dr-1-plain") + _string("energy.orders") + struct.pack(">i", 3)
    assert decode_checkpoint_key(key) == ("nexus-dr-1-plain", "energy.orders", 3)
    with pytest.raises(ValueError, match="not a checkpoint key"):
        decode_checkpoint_key(struct.pack(">h", 40) + b"short")


def test_a_partition_is_caught_up_once_its_last_record_is_on_the_target() -> None:
    last, older = Tail(2_000, b"k", b"v2"), Tail(1_000, b"k", b"v1")
    source = {("energy.orders", 0): last, ("energy.orders", 1): last, ("ledger.commands", 0): None}
    target = {("energy.orders", 0): [older, last], ("energy.orders", 1): [older]}
    assert lagging_partitions(source, target) == [("energy.orders", 1)]  # an empty source partition is never behind
    assert lagging_partitions(source, {**target, ("energy.orders", 1): [last]}) == []
    # The same value written at another time is another record.
    assert lagging_partitions({("t", 0): last}, {("t", 0): [Tail(2_001, b"k", b"v2")]}) == [("t", 0)]


@pytest.mark.parametrize(
    ("group", "moves"),
    [
        ("nexus-settlement", True),  # Faust's group is the app id
        ("nexus-settlement-plain", True),
        ("nexus-settlement-payouts", True),
        ("nexus-settlementX", False),
        ("other-app-plain", False),
        ("test-recon-1", False),
    ],
)
def test_the_platforms_groups_are_named_after_its_app_id(group: str, moves: bool) -> None:
    assert platform_group(group, "nexus-settlement") is moves


def test_groups_rewind_to_the_replay_start_and_never_forward() -> None:
    orders, ledger, idle = ("energy.orders", 0), ("ledger.commands", 0), ("energy.orders", 1)
    committed = {orders: 500, ledger: 900, idle: 40}
    at_time = {orders: 320, ledger: 950, idle: -1}  # idle: no record since the replay start
    ends = {orders: 510, ledger: 1_000, idle: 40}
    moved = rewind_offsets(committed, at_time, ends)
    assert moved == {orders: 320, ledger: 900, idle: 40}  # ledger: already behind the window, keeps its offset


def test_a_partition_unknown_to_the_time_lookup_keeps_no_later_offset_than_its_end() -> None:
    assert rewind_offsets({("t", 0): 70}, {}, {("t", 0): 60}) == {("t", 0): 60}


def test_a_region_is_down_only_after_failing_for_the_whole_period() -> None:
    detector = DownDetector(down_after_s=3.0)
    assert not detector.observe(False, 10.0)
    assert not detector.observe(False, 12.9)
    assert not detector.observe(True, 13.0)  # one answer resets: a flapping region is not failed over from
    assert not detector.observe(False, 14.0)
    assert not detector.observe(False, 16.5)
    assert detector.observe(False, 17.0)


def test_the_mirror_compresses_what_it_copies_and_takes_a_record_over_a_megabyte() -> None:
    """A record the source took compressed can be several MB uncompressed (the demo's 3 MB gzip order): MM2 copies
    it compressed again, with a request large enough for one (its task died on it before)."""
    props = _props()
    assert props["standby.producer.compression.type"] != "none"
    assert int(props["standby.producer.max.request.size"]) >= 8 * 1024 * 1024
