"""The drills' order producer: a steady pace, every acknowledgement noted, and a redirect to another region.

A producer whose region died re-sends what the new region lacks, in order, before anything new. It does not
re-send blindly: the order book rejects a known order id (``DUPLICATE_ORDER_ID``), but the rejection takes a book
sequence number, so a repeated order would shift every later trade id, and an amend applies again; so the
producer confirms its recent sends against the new region (``missing_on``) first. The window it checks is the
replay window back from its last acknowledgement: what it sent before was mirrored long ago.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from contracts import models as m
from contracts.topics import ENERGY_ORDERS
from devtools.drills.io import read_topic
from infra.processes import tail_file
from streams.kafka.clients import raised_transient

FLUSH_POLL_S = 0.25
DELIVERY_TIMEOUT_SHARE = 0.75  # of resend_after_s: librdkafka fails the records before the client is replaced
RECHECK_AFTER_S = 5.0  # a cluster that could not say what it has (a new leader catching up) is asked again
CHECK_CALL_TIMEOUT_S = 10.0  # per request of that check: a cluster in failover is asked again, not waited on


def missing_on(bootstrap: str, values: Sequence[bytes], sent: Sequence[int], since_ms: int) -> list[int]:
    """Of the sent indices (in send order), those whose record is not on ``bootstrap``'s energy.orders among the
    records from ``since_ms`` on. Mirroring copies a prefix of each partition, so what is missing is each market's
    last records, and re-sending them in order rebuilds the primary's order exactly."""
    records = read_topic(bootstrap, ENERGY_ORDERS, since_ms, call_timeout_s=CHECK_CALL_TIMEOUT_S)
    there = Counter(r.value for r in records if r.value is not None)
    return unmatched(values, sent, there)


def unmatched(values: Sequence[bytes], sent: Sequence[int], there: Counter[bytes]) -> list[int]:
    """The sent indices whose record is not among ``there``, each record found counted once (two sends of the
    same bytes need two copies there)."""
    left, missing = Counter(there), []
    for i in sent:
        if left[values[i]]:
            left[values[i]] -= 1
        else:
            missing.append(i)
    return missing


class Traffic(threading.Thread):
    """Sends the commands in batches at a steady pace; notes when each was first sent and acknowledged."""

    def __init__(
        self,
        bootstrap: str,
        commands: Sequence[m.OrderCommand],
        batch: int,
        every_s: float,
        window_s: float = 60.0,
        client_log: Path | None = None,
        resend_after_s: float | None = None,
    ) -> None:
        super().__init__(name="dr-traffic", daemon=True)
        self.commands, self.batch, self.every_s, self.window_s = commands, batch, every_s, window_s
        self.values = [ENERGY_ORDERS.encode(c) for c in commands]
        self.sent_s = [0.0] * len(commands)
        self.acked_s = [0.0] * len(commands)
        self.started = self.finished = 0.0
        self.error: BaseException | None = None
        self.missing_at_redirect: list[int] = []
        self.lost_acked_s: dict[int, float] = {}  # index -> when the dead region acknowledged it
        self.redirected = threading.Event()
        # Same cluster: a batch not acknowledged this long is given up by its client and re-sent, where missing, by a
        # new one, as an upstream system with a delivery timeout would (None: wait, as for a region that may return).
        self.resend_after_s = resend_after_s
        self.resends = 0
        self.delivery_errors: Counter[str] = Counter()  # why records were not acknowledged, for a failed drill
        self.check_errors: Counter[str] = Counter()  # why a cluster could not say what it has (asked again)
        self.client_log_path = client_log
        self._client_log = _client_logger(client_log) if client_log else None
        self._cluster = bootstrap
        self._producer = self._connect(bootstrap)
        self._redirect_to: str | None = None
        self._redirect_asked = threading.Event()

    @property
    def sent_at(self) -> dict[tuple[str, str], float]:
        """When each order was first sent (wall clock), by (market, order id)."""
        found: dict[tuple[str, str], float] = {}
        for c, at in zip(self.commands, self.sent_s, strict=True):
            if at:
                found.setdefault((c.market_id, c.order_id), at)
        return found

    def redirect(self, bootstrap: str) -> None:
        """Move to another region: re-send what it lacks, then go on (done by the traffic's own thread)."""
        self._redirect_to = bootstrap
        self._redirect_asked.set()

    def _connect(self, bootstrap: str) -> Producer:
        config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "log_level": 0}
        if self.resend_after_s:  # the client itself has given up on a record before it is replaced
            config["message.timeout.ms"] = int(self.resend_after_s * 1000 * DELIVERY_TIMEOUT_SHARE)
        if self._client_log:  # the client's view of leader changes, retries and its producer id, for a failed drill
            config.update(debug="broker,topic,eos,msg", log_level=7, logger=self._client_log)
        return Producer(config)

    def _send(self, i: int) -> None:
        def acked(err: object, _msg: object) -> None:
            if err is not None:
                self.delivery_errors[str(err)] += 1
            elif not self.acked_s[i]:
                self.acked_s[i] = time.time()

        c = self.commands[i]
        self.sent_s[i] = self.sent_s[i] or time.time()
        self._producer.produce(ENERGY_ORDERS.name, self.values[i], ENERGY_ORDERS.key_of(c), on_delivery=acked)

    def run(self) -> None:
        self.started = time.time()
        try:
            for first in range(0, len(self.commands), self.batch):
                due = self.started + (first // self.batch) * self.every_s
                time.sleep(max(0.0, due - time.time()))
                chunk = range(first, min(first + self.batch, len(self.commands)))
                for i in chunk:
                    self._send(i)
                self._await_acks(chunk)
        except BaseException as exc:  # reported by the drill
            self.error = exc
        self.finished = time.time()

    def finish(self, timeout_s: float) -> None:
        """Wait for the last acknowledgement; a traffic that failed or is still waiting fails the drill, saying
        how far it got and what the brokers answered."""
        self.join(timeout_s)
        if self.error is not None or self.is_alive():
            state = f"failed: {self.error!r}" if self.error else f"is not done after {timeout_s:.0f} s"
            acked = sum(1 for at in self.acked_s if at)
            errors = dict(self.delivery_errors.most_common(3)) or "none"
            checks = dict(self.check_errors.most_common(3)) or "none"
            client = f"\nits client's log ends:\n{tail_file(self.client_log_path, 60)}" if self.client_log_path else ""
            raise AssertionError(
                f"the traffic {state} ({acked}/{len(self.commands)} orders acknowledged; delivery errors: {errors}; "
                f"failed checks of what the cluster has: {checks})" + client
            )

    def _await_acks(self, chunk: range) -> None:
        """Flush until the chunk is acknowledged; a redirect meanwhile re-sends what the new region lacks, and a
        chunk stuck past ``resend_after_s`` what this cluster lacks."""
        deadline = time.monotonic() + 600.0  # bounded: a region that never comes back ends the drill
        stuck_at = time.monotonic() + (self.resend_after_s or 600.0)
        redirect_at = 0.0  # a redirect whose check failed is tried again RECHECK_AFTER_S later
        while any(not self.acked_s[i] for i in chunk):
            if time.monotonic() > deadline:
                raise TimeoutError(f"orders {chunk.start}..{chunk.stop - 1} not acknowledged in 600 s")
            if self._redirect_asked.is_set():
                assert self._redirect_to is not None
                if time.monotonic() >= redirect_at:
                    missing = self._resend_missing(chunk.stop, self._redirect_to)
                    if missing is None:
                        redirect_at = time.monotonic() + RECHECK_AFTER_S
                    else:
                        self._redirect_asked.clear()
                        self.missing_at_redirect = missing
                        self.redirected.set()
            elif self.resend_after_s and time.monotonic() > stuck_at:
                self.resends += 1
                done = self._resend_missing(chunk.stop, self._cluster) is not None
                stuck_at = time.monotonic() + (self.resend_after_s if done else RECHECK_AFTER_S)
            self._producer.flush(FLUSH_POLL_S)

    def _resend_missing(self, sent_until: int, bootstrap: str) -> list[int] | None:
        """Drop the producer, connect a new one to ``bootstrap`` and re-send, in order, the recent records it lacks
        (returned). One it lacks that was acknowledged is noted in ``lost_acked_s``: the dead region's RPO, or on
        the same cluster an acknowledged record lost. None, with nothing sent, when the cluster cannot say yet what
        it has: just after a leader moved, the new leader answers "high watermark not caught up" for a while."""
        self._producer.purge()  # what the old client never delivered is re-sent below if the cluster lacks it
        self._producer.flush(0)
        self._producer, self._cluster = self._connect(bootstrap), bootstrap
        last_ack = max(self.acked_s[:sent_until], default=0.0) or self.started
        since_ms = int((last_ack - self.window_s) * 1000)
        recent = [i for i in range(sent_until) if self.sent_s[i] * 1000 >= since_ms]
        try:
            missing = missing_on(bootstrap, self.values, recent, since_ms)
        except (KafkaException, TimeoutError) as exc:
            if not (isinstance(exc, TimeoutError) or raised_transient(exc)):  # else it passes: asked again
                raise
            self.check_errors[str(exc)] += 1
            return None
        confirmed_at = time.time()
        for i in set(recent) - set(missing):  # there, though the old client may never have heard so
            self.acked_s[i] = self.acked_s[i] or confirmed_at
        for i in missing:
            if self.acked_s[i]:
                self.lost_acked_s[i] = self.acked_s[i]
            self.acked_s[i] = 0.0
        for i in missing:
            self._send(i)
        self._producer.flush(60)
        return missing


def _client_logger(path: Path) -> logging.Logger:
    """A logger of its own writing librdkafka's debug lines to ``path`` (not propagated to the test's log)."""
    logger = logging.getLogger(f"drill.traffic.{path}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(path)
    handler.addFilter(lambda record: not record.getMessage().startswith("WAKEUP "))  # flush's per-poll noise
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger
