"""The local Kafka broker (infra/kafka/broker.py) really starts, serves clients and stops cleanly."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

from infra.kafka.broker import JARS_DIR, MARKER_NAME, LocalKafka, LocalKafkaError, find_free_ports


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def local_kafka(tmp_path: Path) -> LocalKafka:
    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    if not (JARS_DIR / MARKER_NAME).exists() and shutil.which("mvn") is None:
        pytest.skip("Kafka jars are not cached and mvn is not installed to fetch them")
    port, controller_port = find_free_ports(2)
    return LocalKafka(port=port, controller_port=controller_port, data_dir=tmp_path / "kafka")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_kafka_start_produce_consume_stop(local_kafka: LocalKafka) -> None:
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    kafka = local_kafka
    try:
        ready_s = kafka.start(timeout_s=120)
        pid = kafka.pid
        assert pid is not None and kafka.is_running()
        assert ready_s > 0
        assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"
        assert kafka.pid_file.read_text().strip() == str(pid)

        # A second start of the same broker is refused with an actionable message; reuse=True attaches to it.
        with pytest.raises(LocalKafkaError, match="already running"):
            kafka.start()
        assert kafka.start(reuse=True) >= 0

        # Another instance (other data dir) on the same ports is detected and reported, not started.
        intruder = LocalKafka(port=kafka.port, controller_port=kafka.controller_port, data_dir=kafka.dir / "x")
        with pytest.raises(LocalKafkaError, match="held by another local Kafka broker of ours"):
            intruder.start()
        assert intruder.stop() is False  # an object only stops the broker it owns
        assert kafka.is_running()

        topic = f"broker-test-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            future.result(timeout=30)

        producer = ck.Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "enable.idempotence": True})
        producer.produce(topic, key=b"settlement-1", value=b'{"amount": "42.00"}')
        assert producer.flush(30) == 0

        consumer = ck.Consumer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "group.id": f"broker-test-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            msg = None
            while time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is not None and msg.error() is None:
                    break
            assert msg is not None and msg.error() is None, "no message consumed within 60s"
            assert (msg.key(), msg.value()) == (b"settlement-1", b'{"amount": "42.00"}')
            consumer.commit(message=msg, asynchronous=False)
        finally:
            consumer.close()
    finally:
        stopped = kafka.stop()

    assert stopped is True
    assert not kafka.is_running()
    assert not _pid_exists(pid), f"broker process {pid} still exists after stop()"
    assert not kafka.pid_file.exists()
    assert not _port_open(kafka.port)
    assert not _port_open(kafka.controller_port)
    assert kafka.stop() is False  # idempotent

    kafka.wipe()
    assert not kafka.dir.exists()
