"""The auto-payout service's process: a plain confluent-kafka loop around :class:`PayoutService`.

    python -m streams.payouts          (settings from NEXUS_* and NEXUS_PAYOUTS_*)

**One instance.** The service is a fold over *every* partition of its inputs (a holder's balance comes from all of
``ledger.transfers``' partitions, its rules and KYC from others), so it assigns itself all of them instead of
joining a group that would split them. Run one. A second one would decide the same payouts under the same ids
(the bridge pays each once) but would report and notify twice. The consumer group name
(``{NEXUS_APP_ID}-payouts``) only carries its positions, committed after each save, for lag monitoring.

**Positions and state are one file** (``streams.payouts.state``): after the outputs of everything read so far are
acknowledged (producer flush), the service's state and the next offset of each input partition are written
together, every ``save_every_s`` and at shutdown. A start loads it and reads on from those offsets (from the
beginning without one). A crash replays what was read after the last save: its outputs are produced again
under the same ids (payout ids, notification ids, dead letters keyed by their origin): at least once.

**Emergency pause.** ``governance.pause`` is read from its beginning at every start (its latest record is the state;
streams.bridge.pause_listener) before any input: while paused, due payouts wait (PAUSED) and go out after the unpause.

**Governed parameters and approvals.** ``governance.parameters`` is followed the same way (the auto-approval limit in
force; streams.bridge.parameter_listener), read to its end before any input; until it is, money out counts as
paused (a limit the signers lowered is never missed). ``governance.multisig`` is an input like
the others (its positions are in the state): the final states of this service's PAYOUT_APPROVAL requests pay or fail
the payouts waiting for them.

**Catching up.** At a start the balance mirror first reads ``ledger.transfers`` up to the end it had then, the
other inputs paused and nothing decided, so no decision reads a balance from before the restart; then the
accounts that moved meanwhile are evaluated and the other inputs resume. ``payouts.requests``, the service's own
output, is read to its end in the same step: a payout decided after the last save and decided again now keeps the
amount it was sent with (the balance may have moved meanwhile; the bridge pays the first request of an id).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, Message, Producer, TopicPartition

from contracts.topics import GOVERNANCE_PARAMETERS, GOVERNANCE_PAUSE, LEDGER_TRANSFERS, PAYOUT_REQUESTS
from streams.bridge.fx_listener import FxRatesListener
from streams.bridge.parameter_listener import ParameterListener
from streams.bridge.pause_listener import PauseListener, wait_started
from streams.kafka.clients import consume_now, consumer_config, producer_config, watermarks
from streams.kafka.service_loop import Outputs, position_of, run_until_stopped
from streams.kafka.topic_admin import ensure_topics
from streams.ops import health, logs
from streams.payouts import state as state_file
from streams.payouts.service import INPUTS, PayoutService, Record
from streams.payouts.settings import PayoutSettings, get_payout_settings
from streams.security.envelope import platform_sealer
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.payouts")

BATCH_MAX = 500
POLL_S = 0.1
FLUSH_TIMEOUT_S = 30.0
METADATA_TIMEOUT_S = 30.0
PROGRESS_EVERY_S = 10.0
PAUSE_READY_TIMEOUT_S = 30.0
CATCH_UP_TOPICS = (LEDGER_TRANSFERS, PAYOUT_REQUESTS)  # read to their ends (others paused) before deciding
CATCH_UP_NAMES = {t.name for t in CATCH_UP_TOPICS}


class PayoutLoop:
    def __init__(self, settings: Settings, payout_settings: PayoutSettings, path: Path) -> None:
        self.settings = settings
        self.payout_settings = payout_settings
        self.path = path
        bootstrap = settings.bootstrap_servers
        self.fx = FxRatesListener(bootstrap)
        self.pause = PauseListener(bootstrap, GOVERNANCE_PAUSE)
        self.parameters = ParameterListener(bootstrap, GOVERNANCE_PARAMETERS)
        snapshot = state_file.load(path)
        self.service = PayoutService(
            payout_settings,
            lambda: self.fx.book,
            snapshot,
            max_bytes=settings.max_ingress_message_bytes,
            # The auto-approval limit not known yet counts as paused too: nothing goes out above a limit not read.
            paused=lambda: self.pause.paused or not self.parameters.caught_up.is_set(),
            sealer=platform_sealer(),
            parameters=lambda: self.parameters.values_now,
        )
        log.info("state %s", f"loaded from {path}" if snapshot else "new: every input read from its beginning")
        self.consumer = Consumer(consumer_config(bootstrap, f"{settings.app_id}-payouts"))
        self.producer = Producer(producer_config(bootstrap))
        self.outputs = Outputs(self.producer)
        self.stopping = False
        # (topic, partition) -> the end offset to read before deciding: the ledger (the balance mirror) and the
        # service's own payouts.requests (decisions made after the last save keep their amounts)
        self.catch_up: dict[tuple[str, int], int] = {}
        self.paused: list[TopicPartition] = []
        self.saved_changes = -1

    # ------------------------------------------------------------------ start

    def assign(self) -> int:
        """Every partition of every input, at the saved positions; the mirror's catch-up targets."""
        offsets = self.service.offsets
        assignment: list[TopicPartition] = []
        for topic in INPUTS:
            meta = self.consumer.list_topics(topic.name, timeout=METADATA_TIMEOUT_S).topics[topic.name]
            for p in sorted(meta.partitions):
                start = offsets.get(f"{topic.name}:{p}", OFFSET_BEGINNING)
                assignment.append(TopicPartition(topic.name, p, start))
                if topic in CATCH_UP_TOPICS:
                    low, high = watermarks(self.consumer, topic.name, p, METADATA_TIMEOUT_S)
                    if high > max(low, start):
                        self.catch_up[(topic.name, p)] = high
        self.consumer.assign(assignment)
        if self.catch_up:
            self.service.replaying = True
            self.paused = [tp for tp in assignment if tp.topic not in CATCH_UP_NAMES]
            self.consumer.pause(self.paused)
            log.info("catching up before deciding: %s", dict(sorted(self.catch_up.items())))
        return len(assignment)

    def _caught_up(self, wall_ms: int) -> None:
        self.consumer.resume(self.paused)
        self.paused = []
        self.outputs.emit(self.service.caught_up(wall_ms))
        log.info("balance mirror caught up; deciding")

    def _check_catch_up(self) -> None:
        if not self.catch_up:
            return
        positions = self.consumer.position([TopicPartition(t, p) for t, p in self.catch_up])
        for tp in positions:
            if tp.offset >= 0 and tp.offset >= self.catch_up[(tp.topic, tp.partition)]:
                del self.catch_up[(tp.topic, tp.partition)]
        if not self.catch_up:
            self._caught_up(_wall_ms())

    # ------------------------------------------------------------------ running

    def handle(self, msg: Message) -> None:
        where = position_of(msg)
        if where is None:
            return
        topic, partition, offset = where
        wall = _wall_ms()
        kind, stamp = msg.timestamp()
        record_ms = wall if kind == TIMESTAMP_NOT_AVAILABLE else stamp
        self.outputs.emit(
            self.service.handle(Record(topic, partition, offset, msg.key(), msg.value(), record_ms, wall))
        )

    def save(self) -> None:
        """Outputs acknowledged first, then state and positions in one write, then positions to the group."""
        self.outputs.acknowledged(FLUSH_TIMEOUT_S)
        if self.service.changes == self.saved_changes:
            return
        size = state_file.save(self.path, self.service.to_dict())
        self.saved_changes = self.service.changes
        log.debug("state saved (%d bytes)", size)
        positions = []
        for key, offset in self.service.offsets.items():
            name, partition = key.rsplit(":", 1)
            positions.append(TopicPartition(name, int(partition), offset))
        if positions:
            self.consumer.commit(offsets=positions, asynchronous=True)

    def run(self) -> None:
        self.fx.start()
        wait_started(self.pause, PAUSE_READY_TIMEOUT_S)  # unknown counts as paused: nothing goes out on a guess
        wait_started(self.parameters, PAUSE_READY_TIMEOUT_S)  # the auto-approval limit in force before any decision
        partitions = self.assign()
        log.info("Worker ready (payouts: %d input partitions, one instance)", partitions)
        ticks = self.payout_settings.tick_every_s
        next_tick = next_save = next_progress = time.monotonic()
        while not self.stopping:
            for msg in consume_now(self.consumer, POLL_S, BATCH_MAX):
                self.handle(msg)
            now = time.monotonic()
            if self.service.replaying:
                self._check_catch_up()
                if now >= next_progress:
                    log.info("catching up: partitions left %s", sorted(self.catch_up))
                    next_progress = now + PROGRESS_EVERY_S
            elif now >= next_tick:
                self.outputs.emit(self.service.tick(_wall_ms()))
                next_tick = now + ticks
            if now >= next_save:
                self.save()
                next_save = now + self.payout_settings.save_every_s

    def close(self) -> None:
        try:
            self.save()
        finally:
            self.fx.stop()
            self.pause.stop()
            self.parameters.stop()
            self.consumer.close()
            log.info("stopped; state at %s", self.path)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def main() -> int:
    settings = get_settings()
    logs.setup(settings)
    ensure_topics(settings)
    loop = PayoutLoop(settings, get_payout_settings(), state_file.state_path(settings.data_dir))

    return run_until_stopped(loop, health.start(settings, "payouts", [f"{settings.app_id}-payouts"]))


if __name__ == "__main__":
    sys.exit(main())
