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


class _Cluster:
    """Topics on a fake cluster, shared by every AdminClient made on it; ``fail_next`` answers the next
    create_topics for that topic with the error instead of creating it."""

    def __init__(self, brokers: int = 1, default_factor: str | None = "1", replicas: int = 1) -> None:
        self.topics: dict[str, int] = {}
        self.fail_next: dict[str, int] = {}
        self.clients = 0
        self.brokers, self.default_factor, self.replicas = brokers, default_factor, replicas  # None: not readable
        self.made: dict[str, tuple[int, str]] = {}  # replication factor and min.insync.replicas of each topic made
        self.altered: dict[str, dict[str, str]] = {}


def _fake_admin(cluster: _Cluster):  # type: ignore[no-untyped-def]
    from concurrent.futures import Future
    from types import SimpleNamespace

    from confluent_kafka import KafkaError, KafkaException

    def done(value: object = None, error: int | None = None) -> Future[object]:
        future: Future[object] = Future()
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(KafkaException(KafkaError(error, "as librdkafka says")))
        return future

    class Admin:
        def __init__(self, config: dict[str, str]) -> None:
            cluster.clients += 1

        def list_topics(self, timeout: float) -> SimpleNamespace:
            one = SimpleNamespace(replicas=list(range(1, cluster.replicas + 1)))
            topics = {n: SimpleNamespace(partitions=dict.fromkeys(range(p), one)) for n, p in cluster.topics.items()}
            return SimpleNamespace(topics=topics, brokers={b: object() for b in range(1, cluster.brokers + 1)})

        def describe_configs(self, resources: list[object]) -> dict[object, Future[object]]:
            if cluster.default_factor is None:
                return {r: done(error=KafkaError.CLUSTER_AUTHORIZATION_FAILED) for r in resources}
            entry = SimpleNamespace(value=cluster.default_factor)
            return {r: done({"default.replication.factor": entry}) for r in resources}

        def create_topics(self, new: list[object], operation_timeout: float) -> dict[str, Future[object]]:
            answers = {}
            for topic in new:
                name = topic.topic  # type: ignore[attr-defined]
                if name in cluster.fail_next:
                    answers[name] = done(error=cluster.fail_next.pop(name))
                    continue
                cluster.topics[name] = topic.num_partitions  # type: ignore[attr-defined]
                cluster.made[name] = (topic.replication_factor, topic.config["min.insync.replicas"])  # type: ignore[attr-defined]
                answers[name] = done()
            return answers

        def incremental_alter_configs(self, resources: list[object]) -> dict[object, Future[object]]:
            for r in resources:
                entries = r.incremental_configs  # type: ignore[attr-defined]
                cluster.altered[r.name] = {e.name: e.value for e in entries}  # type: ignore[attr-defined]
            return {r: done() for r in resources}

    return Admin


def test_ensure_topics_asks_again_after_a_retired_broker_handle_and_reports_every_topic_it_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a cluster that just started, librdkafka (2.10+) retires its bootstrap broker handles and fails requests
    in flight on them with _DESTROY_BROKER; the platform's start must not die of it (the soak's did)."""
    from confluent_kafka import KafkaError

    from contracts.topics import TOPICS
    from streams.kafka import topic_admin

    cluster = _Cluster()
    cluster.fail_next["energy.orders"] = KafkaError._DESTROY_BROKER
    monkeypatch.setattr(topic_admin, "AdminClient", _fake_admin(cluster))
    monkeypatch.setattr(topic_admin, "ENSURE_RETRY_S", 0.0)
    created = topic_admin.ensure_topics(Settings())
    assert sorted(created) == sorted(TOPICS) == sorted(cluster.topics)
    assert cluster.clients >= 2  # asked again with a new client: the old one's handles are gone


def test_ensure_topics_does_not_retry_an_error_only_an_operator_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import KafkaError

    from streams.kafka import topic_admin

    cluster = _Cluster()
    cluster.fail_next["energy.orders"] = KafkaError.TOPIC_AUTHORIZATION_FAILED
    monkeypatch.setattr(topic_admin, "AdminClient", _fake_admin(cluster))
    monkeypatch.setattr(topic_admin, "ENSURE_RETRY_S", 0.0)
    with pytest.raises(RuntimeError, match=r"could not create topic energy\.orders.*TOPIC_AUTHORIZATION_FAILED"):
        topic_admin.ensure_topics(Settings())
    assert cluster.clients == 1 and "energy.orders" not in cluster.topics


def test_a_broker_missing_from_the_listing_does_not_leave_topics_with_fewer_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3-node cluster whose answering broker had not yet seen the third lists 2: the topics still get the
    cluster's own default of 3 copies (2 in sync), not 2 copies that stop taking writes when either node is lost."""
    from streams.kafka import topic_admin

    cluster = _Cluster(brokers=2, default_factor="3")
    monkeypatch.setattr(topic_admin, "AdminClient", _fake_admin(cluster))
    topic_admin.ensure_topics(Settings())
    assert set(cluster.made.values()) == {(3, "2")}


def test_an_unreadable_default_sizes_replication_for_the_brokers_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.kafka import topic_admin

    cluster = _Cluster(brokers=3, default_factor=None)
    monkeypatch.setattr(topic_admin, "AdminClient", _fake_admin(cluster))
    topic_admin.ensure_topics(Settings())
    assert set(cluster.made.values()) == {(3, "2")}


@pytest.mark.parametrize(("replicas", "min_insync"), [(2, None), (3, "2")])
def test_an_existing_topic_gets_two_in_sync_only_if_it_could_still_lose_a_copy(
    monkeypatch: pytest.MonkeyPatch, replicas: int, min_insync: str | None
) -> None:
    """Two copies with 2 in sync would stop writes at the loss of either node: such a topic is left as it is."""
    from contracts.topics import ENERGY_ORDERS
    from streams.kafka import topic_admin

    cluster = _Cluster(brokers=3, default_factor="3", replicas=replicas)
    cluster.topics[ENERGY_ORDERS.name] = 4
    monkeypatch.setattr(topic_admin, "AdminClient", _fake_admin(cluster))
    topic_admin.ensure_topics(Settings(), [ENERGY_ORDERS])
    assert cluster.altered.get(ENERGY_ORDERS.name, {}).get("min.insync.replicas") == min_insync
