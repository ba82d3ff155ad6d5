"""Topic replication follows the cluster's size unless set, and a cluster node's configuration follows it too."""

from __future__ import annotations

import pytest

from infra.kafka.broker import LocalKafka, durability_properties
from streams.kafka.topic_admin import Replication, replication_for
from streams.settings import Settings


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [(1, Replication(1, 1)), (2, Replication(2, 1)), (3, Replication(3, 2)), (5, Replication(3, 2))],
)
def test_replication_is_derived_from_the_cluster_size(brokers: int, expected: Replication) -> None:
    assert replication_for(brokers, Settings()) == expected


def test_settings_override_the_derived_replication_and_an_impossible_one_is_refused() -> None:
    assert replication_for(3, Settings(topic_replication_factor=2)) == Replication(2, 1)
    assert replication_for(5, Settings(topic_replication_factor=5, topic_min_insync_replicas=3)) == Replication(5, 3)
    with pytest.raises(ValueError, match="no write could succeed"):
        replication_for(1, Settings(topic_min_insync_replicas=2))


def test_a_cluster_node_names_every_voter_and_replicates_three_times(tmp_path) -> None:  # type: ignore[no-untyped-def]
    voters = ((1, 30001), (2, 30003), (3, 30005))
    node = LocalKafka(port=30002, controller_port=30003, node_id=2, voters=voters, data_dir=tmp_path)
    props = node.server_properties()
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005"
    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    alone = LocalKafka(port=30002, controller_port=30003, data_dir=tmp_path).server_properties()
    assert alone["controller.quorum.voters"] == "1@127.0.0.1:30003"
    assert {k: alone[k] for k in durability_properties(1)} == durability_properties(1)
    assert alone["default.replication.factor"] == alone["min.insync.replicas"] == "1"
    with pytest.raises(ValueError, match="must include this node"):
        LocalKafka(port=30002, controller_port=30009, node_id=2, voters=voters, data_dir=tmp_path)
