"""The ledger's epoch timer: appends each closed dividend epoch's DECLARE_DIVIDENDS to ``ledger.commands``.

The timer only proposes: the ledger decides (``LedgerPartition._declaration``). It sends the id of the latest
closed epoch whenever that id changes (and once at start), so a re-send, a second timer or a restart cost a
replayed command and nothing more; an epoch missed while the timer was down is declared once, folded into the
latest (``domain.dividends``). A thread with its own producer, so both runtimes run it the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Producer

from contracts import models as m
from contracts.topics import LEDGER_COMMANDS
from domain.dividends import EpochSchedule
from domain.timeconv import from_ms
from streams.kafka.clients import producer_config
from streams.settings import Settings

log = logging.getLogger("nexus.epochs")
FLUSH_TIMEOUT_S = 10.0


def schedule_of(settings: Settings) -> EpochSchedule:
    return EpochSchedule(settings.dividend_epoch_minutes * 60_000, settings.dividend_epoch_offset_minutes * 60_000)


def latest_closed(schedule: EpochSchedule, now_ms: int) -> str:
    """The id of the newest epoch that has ended by ``now_ms``."""
    return schedule.epoch_id(schedule.index(now_ms) - 1)


class EpochTimer:
    def __init__(
        self, settings: Settings, send: Callable[[m.DeclareDividends], None], clock_ms: Callable[[], int]
    ) -> None:
        self.schedule = schedule_of(settings)
        self.every_s = settings.dividend_timer_every_s
        self.send = send
        self.clock_ms = clock_ms
        self.sent: str | None = None
        self._stop = threading.Event()

    def tick(self) -> str | None:
        """Send the latest closed epoch's declaration if not sent yet by this timer; its id, or None."""
        now_ms = self.clock_ms()
        epoch_id = latest_closed(self.schedule, now_ms)
        if epoch_id == self.sent:
            return None
        self.send(m.DeclareDividends(command_id=epoch_id, occurred_at=from_ms(now_ms)))
        self.sent = epoch_id
        log.info("dividend epoch %s proposed to the ledger", epoch_id)
        return epoch_id

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.tick()
            except Exception:  # a broker hiccup: the next tick sends it again
                log.exception("epoch timer tick failed; retried in %.0f s", self.every_s)

    def stop(self) -> None:
        self._stop.set()


def start(settings: Settings) -> EpochTimer | None:
    """Start the timer thread (None when NEXUS_DIVIDEND_TIMER_EVERY_S is 0)."""
    if not settings.dividend_timer_every_s:
        return None
    producer = Producer(producer_config(settings.bootstrap_servers))

    def send(command: m.DeclareDividends) -> None:
        producer.produce(LEDGER_COMMANDS.name, LEDGER_COMMANDS.encode(command), LEDGER_COMMANDS.key_of(command))
        if producer.flush(FLUSH_TIMEOUT_S):
            raise RuntimeError(f"declaration {command.command_id} not acknowledged in {FLUSH_TIMEOUT_S} s")

    timer = EpochTimer(settings, send, lambda: time.time_ns() // 1_000_000)
    threading.Thread(target=timer.run, name="epoch-timer", daemon=True).start()
    return timer
