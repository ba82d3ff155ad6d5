"""The same processing as the Faust matching and ledger agents, as a plain confluent-kafka loop.

The same services at about a third of Faust's CPU per order (docs/performance.md). Not yet under
the SIGKILL recovery test: consumer errors are skipped here without a word (see docs/performance.md).

    python -m streams.plain_loop            (matching + ledger, settings from NEXUS_*; NEXUS_AGENTS=matching or
                                             settlement runs one of them)

Same services, same replay-on-assignment recovery, same dead letters, same rule: outputs are
acknowledged before the offsets that produced them are committed. `bench/bench_p2p_kafka.py` runs
both and reports what Faust costs.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS, PLATFORM_DEADLETTERS, Topic
from streams import ingress
from streams.gc_policy import HeapPolicy
from streams.kafka_clients import consume_now, consumer_config, produce_bounded, producer_config
from streams.ledger_service import LedgerPartition
from streams.matching_service import MatchingPartition
from streams.partition_log import rebuild_state
from streams.settings import get_settings
from streams.topic_admin import ensure_topics

log = logging.getLogger("nexus.plain")
FACTORIES = {ENERGY_ORDERS.name: MatchingPartition, LEDGER_COMMANDS.name: LedgerPartition}
# The agent each input stands for (NEXUS_AGENTS picks a subset, as for the Faust worker).
ROLES = {"matching": ENERGY_ORDERS, "settlement": LEDGER_COMMANDS}


def inputs_for(agents: str) -> dict[str, Topic]:
    wanted = [name.strip() for name in agents.split(",") if name.strip()] or list(ROLES)
    unknown = sorted(set(wanted) - set(ROLES))
    if unknown:
        raise ValueError(f"the plain loop runs {sorted(ROLES)}; not {unknown}")
    return {ROLES[name].name: ROLES[name] for name in wanted}


BATCH_MAX = 1000
COMMIT_EVERY_S = 0.05


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    ensure_topics(settings)
    bootstrap = settings.bootstrap_servers
    consumer = Consumer(
        consumer_config(
            bootstrap,
            f"{settings.app_id}-plain",
            group_instance_id=f"{settings.worker_instance_id}-plain",
            session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        )
    )
    producer = Producer(producer_config(bootstrap))
    inputs = inputs_for(settings.agents)
    states: dict[tuple[str, int], Any] = {}
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # States are kept across a rebalance, as in streams.replay: a fold over an immutable log stays right,
    # records offered again below `next_offset` are skipped and a gap is rebuilt from the log.
    consumer.subscribe(list(inputs))
    log.info("Worker ready (plain confluent-kafka loop)")

    def emit(topic: Topic, message: Any) -> None:
        produce_bounded(producer, topic.name, topic.encode(message), topic.key_of(message))

    heap = HeapPolicy.from_settings(settings)
    heap.start()
    last_commit = time.monotonic()
    while not stopping:
        heap.maybe_tick()
        batch: list[Message] = consume_now(consumer, 0.05, BATCH_MAX)
        for msg in batch:
            name, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if msg.error() or name is None or partition is None or offset is None:
                continue
            topic = inputs[name]
            state = states.get((name, partition))
            if state is None or offset > state.next_offset:
                state = states[(name, partition)] = rebuild_state(
                    bootstrap, topic, partition, offset, FACTORIES[name], settings.max_ingress_message_bytes
                )
            if offset < state.next_offset:
                continue
            decoded = ingress.validate(topic, msg.key(), msg.value(), settings.max_ingress_message_bytes)
            if isinstance(decoded, ingress.Rejected):
                state.apply(offset, None)
                origin = ingress.Origin(name, partition, offset)
                emit(PLATFORM_DEADLETTERS, ingress.dead_letter(origin, msg.key(), msg.value(), decoded))
                continue
            for out_topic, output in state.apply(offset, decoded):
                emit(out_topic, output)
        producer.poll(0)
        # Outputs flow without waiting for acks; every COMMIT_EVERY_S they are all acknowledged (flush),
        # and only then is the position that produced them committed. Waiting for acks after every
        # batch instead put a produce round trip and a commit round trip on every record's path.
        if time.monotonic() - last_commit >= COMMIT_EVERY_S:
            remaining = producer.flush(30)
            assert remaining == 0, f"{remaining} outputs not delivered"
            consumer.commit(asynchronous=True)
            last_commit = time.monotonic()
    consumer.close()
    producer.flush(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
