"""Monitoring agent: registry streams -> spec §5.2 alert rules -> Alertmanager and ``monitoring.alerts``; metrics.

Thin shell around ``domain.alert_rules`` (the pure engine; rules from ``streams/alerting/rules.toml``);
``register(app, settings)`` adds it to a Faust app (``streams.worker`` calls it for the ``alerting`` role):

* decodes settlement, FX and governance records (bad records go to the dead-letter topic), turns them
  into observations (``observations``) and Prometheus metrics (``record_metrics``);
* evaluates the rules as events arrive (at most every ``EVALUATE_MIN_S``) and on a timer (``evaluate_every``
  in the rules file), so time-based rules — key expiry, pending multi-sig, windows emptying — fire and
  resolve without events;
* emits every transition to ``monitoring.alerts`` and hands transitions and periodic re-posts to a
  background delivery loop that POSTs them to Alertmanager (bounded timeout and attempts; the latest
  state per fingerprint is kept and retried, so a slow or absent Alertmanager never stalls the stream);
* serves the Prometheus endpoint on ``metrics_port`` and refreshes consumer-lag gauges;
* rebuilds governance entities (keys, multi-sig requests) from their compacted topics at start, so a
  restart forgets no pending request.

Windows use event time against the engine clock; ``GET /alerting/state/`` on the worker web port shows
the engine. With ``NEXUS_ALERTING_CLOCK_CONTROL=true`` (tests only) ``POST /alerting/clock/``
``{"advance_s": N}`` moves the engine clock forward; times sent to Alertmanager stay wall-clock times.

Windowed rules see the partitions this worker owns: run the monitoring agent as one replica
(``python -m streams.alerting.worker``) or accept per-worker windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import faust
import httpx
from confluent_kafka import Consumer

from contracts import models as m
from contracts import topics
from contracts.topics import MONITORING_ALERTS, PLATFORM_DEADLETTERS, TOPICS, Topic
from domain.alert_rules import AlertEngine, Entity, Notice, Observation, RulesConfig, Sample, load_rules
from streams.alerting import metrics
from streams.alerting.alertmanager import post_alerts
from streams.kafka import ingress
from streams.kafka.clients import watermarks
from streams.kafka.faust_app import Outbox, decode
from streams.kafka.partition_log import read_partition
from streams.settings import Settings

log = logging.getLogger("nexus.alerting")

ENTITY_TOPICS: tuple[Topic, ...] = (topics.GOVERNANCE_KEYS, topics.GOVERNANCE_MULTISIG)
INPUTS: tuple[Topic, ...] = (
    topics.BRIDGE_SETTLEMENTS_COMPLETED,
    topics.BRIDGE_SETTLEMENTS_FAILED,
    topics.ENERGY_SETTLEMENTS,
    topics.FX_RATES,
    *ENTITY_TOPICS,
    PLATFORM_DEADLETTERS,
)
EVALUATE_MIN_S = 0.2
RETRY_BACKOFF_S = (0.2, 0.5, 1.0)
WARN_EVERY_S = 60.0  # an unreachable Alertmanager is logged once a minute, not once a retry
REGIONS = frozenset(r.value for r in m.Region)


# ----------------------------------------------------------------------------- pure mapping (messages -> observations)


def region_of_market(market_id: str) -> str:
    """``2026-11-24T10:00Z/KR-SEOUL`` -> ``KR`` (the grid region's country); ``OTHER`` when unknown."""
    code = market_id.rsplit("/", 1)[-1].split("-", 1)[0].upper()
    return code if code in REGIONS else "OTHER"


def _seconds(millis: int) -> Decimal:
    return Decimal(millis) / 1000


def _bridge_completed(message: m.BridgeSettlementCompleted) -> list[Observation]:
    labels = {
        "flow": "bridge",
        "region": message.region.value,
        "currency": message.currency.value,
        "rail": message.rail.value,
        "status": "completed",
    }
    sid = f"bridge:{message.request_id}"
    return [
        Sample("settlement_duration", message.completed_at, _seconds(message.total_duration_ms), labels, sid),
        Sample("settlement", message.completed_at, Decimal(1), labels, sid),
    ]


def _bridge_failed(message: m.BridgeSettlementFailed) -> list[Observation]:
    labels = {
        "flow": "bridge",
        "region": message.region.value,
        "currency": message.currency.value,
        "rail": message.rail.value if message.rail else "none",
        "status": "failed",
        "phase": message.failed_phase.value,
        "reason_code": message.reason_code,
    }
    sid = f"bridge:{message.request_id}"
    return [
        Sample("settlement_failed", message.failed_at, Decimal(1), labels, sid),
        Sample("settlement", message.failed_at, Decimal(1), labels, sid),
    ]


def _trade_settled(message: m.TradeSettled) -> list[Observation]:
    labels = {
        "flow": "p2p",
        "region": region_of_market(message.market_id),
        "currency": "KAUS",
        "rail": "LEDGER",
        "status": "completed",
    }
    sid = f"p2p:{message.trade_id}"
    out: list[Observation] = [Sample("settlement", message.settled_at, Decimal(1), labels, sid)]
    if message.phase_durations_us:
        total = Decimal(sum(message.phase_durations_us.values())) / 1_000_000
        out.append(Sample("settlement_duration", message.settled_at, total, labels, sid))
    return out


def _multisig(message: m.MultisigRequest) -> list[Observation]:
    pending = message.state is m.MultisigState.PENDING
    labels = {
        "request_id": message.request_id,
        "required_signers": str(message.required_signers),
        "signatures": str(message.signatures),
    }
    created_at = message.created_at if pending else None
    return [Entity("multisig_pending", message.request_id, message.updated_at, created_at, labels)]


def observations(message: Any) -> list[Observation]:
    """What one registry message tells the rule engine (see domain.alert_rules.SIGNALS)."""
    if isinstance(message, m.BridgeSettlementCompleted):
        return _bridge_completed(message)
    if isinstance(message, m.BridgeSettlementFailed):
        return _bridge_failed(message)
    if isinstance(message, m.TradeSettled):
        return _trade_settled(message)
    if isinstance(message, m.FxRate):
        pair = {"pair": f"{message.base}/{message.quote.value}", "source": message.source.value}
        return [Sample("fx_rate", message.as_of, message.rate, pair, f"fx:{message.quote_id}")]
    if isinstance(message, m.KeyMetadata):
        key = {"key_id": message.key_id, "key_label": message.label, "algorithm": message.algorithm}
        # A rotated-out or destroyed version signs nothing any more: its expiry is no reason to page anyone.
        retired = message.state in (m.KeyState.RETIRED, m.KeyState.DESTROYED)
        expires_at = None if retired else message.expires_at
        return [Entity("key_expiry", message.key_id, message.observed_at, expires_at, key)]
    if isinstance(message, m.MultisigRequest):
        return _multisig(message)
    return []


def record_metrics(message: Any) -> None:
    """Prometheus metrics derived from one registry message."""
    if isinstance(message, m.BridgeSettlementCompleted):
        metrics.count_settlement("completed", message.currency, message.rail)
        metrics.add_settled_kaus("bridge", message.currency, message.kaus_debited_units)
        metrics.observe_settlement("bridge", message.region, message.total_duration_ms / 1000)
        for phase, millis in message.phase_durations_ms.items():
            metrics.observe_bridge_phase(phase, message.region, millis / 1000)
    elif isinstance(message, m.BridgeSettlementFailed):
        metrics.count_settlement("failed", message.currency, message.rail)
    elif isinstance(message, m.TradeSettled):
        metrics.count_settlement("completed", "KAUS", "LEDGER")
        metrics.add_settled_kaus("p2p", "KAUS", message.notional_kaus_units)
        for p2p_phase, micros in message.phase_durations_us.items():
            metrics.observe_p2p_phase(p2p_phase, micros / 1_000_000)
        if message.phase_durations_us:
            total = sum(message.phase_durations_us.values()) / 1_000_000
            metrics.observe_settlement("p2p", region_of_market(message.market_id), total)
    elif isinstance(message, m.DeadLetter):
        metrics.count_dead_letter(message.source_topic, message.reason_code)


# ----------------------------------------------------------------------------- the shell's state


class EngineClock:
    """Wall clock plus an offset that only tests move (see module docstring)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def to_wall(self, at: datetime) -> datetime:
        return at - self.offset


def to_alert(notice: Notice, starts_at: datetime, ends_at: datetime | None) -> m.Alert:
    return m.Alert(
        fingerprint=notice.fingerprint,
        rule=notice.rule,
        state=m.AlertState.FIRING if notice.firing else m.AlertState.RESOLVED,
        severity=m.Severity(notice.severity),
        channel=cast(Any, notice.channel),
        summary=notice.summary,
        labels=dict(notice.labels),
        value=notice.value,
        starts_at=starts_at,
        ends_at=ends_at,
    )


class Delivery:
    """Latest state per fingerprint, posted to Alertmanager by one background loop."""

    def __init__(self, base_url: str, timeout_s: float, attempts: int) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.pending: dict[str, m.Alert] = {}
        self.wake = asyncio.Event()
        self.posted = 0
        self.failed_rounds = 0
        self._client: httpx.Client | None = None
        self._last_warning = -WARN_EVERY_S

    def submit(self, alerts: Iterable[m.Alert]) -> None:
        for alert in alerts:
            self.pending[alert.fingerprint] = alert
        if self.pending:
            self.wake.set()

    def _post(self, batch: list[m.Alert]) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s)
        post_alerts(self.base_url, batch, self._client)

    async def deliver_once(self) -> bool:
        """Post everything pending (bounded attempts); on failure keep what was not superseded. True if sent."""
        if not self.pending:
            return True
        batch, self.pending = list(self.pending.values()), {}
        error: Exception | None = None
        for attempt in range(self.attempts):
            try:
                await asyncio.to_thread(self._post, batch)
                self.posted += len(batch)
                metrics.count_alert_delivery(True)
                return True
            except (httpx.HTTPError, OSError) as exc:
                error = exc
                metrics.count_alert_delivery(False)
                if attempt + 1 < self.attempts:
                    await asyncio.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
        self.failed_rounds += 1
        for alert in batch:  # a newer state submitted meanwhile wins
            self.pending.setdefault(alert.fingerprint, alert)
        if time.monotonic() - self._last_warning < WARN_EVERY_S:
            return False
        self._last_warning = time.monotonic()
        log.warning(
            "Alertmanager %s unreachable (%s); %d alert(s) kept for retry", self.base_url, error, len(self.pending)
        )
        return False

    async def run(self, retry_every_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=retry_every_s)
            self.wake.clear()
            await self.deliver_once()


class Monitor:
    """Engine + clock + delivery + per-topic counters: everything the agent, timers and web views share."""

    def __init__(self, config: RulesConfig, settings: Settings, outbox: Outbox) -> None:
        self.config = config
        self.settings = settings
        self.outbox = outbox
        self.engine = AlertEngine(config)
        self.clock = EngineClock()
        self.delivery = Delivery(
            settings.alertmanager_url, settings.alerting_post_timeout_s, settings.alerting_post_attempts
        )
        self.received: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.transitions = 0
        self._started: dict[str, datetime] = {}  # fingerprint -> wall-clock start of a firing alert

    async def receive(self, event: faust.EventT) -> None:
        """Decode one record and observe it; an unreadable one is counted and dead-lettered (acked)."""
        topic = TOPICS[event.message.topic]
        # Dead letters are the platform's own, read up to their registry limit (older ones could exceed 64 KiB).
        limit = topic.max_message_bytes if topic is PLATFORM_DEADLETTERS else self.settings.max_ingress_message_bytes
        try:
            decoded = decode(topic, event, limit)
            if not isinstance(decoded, ingress.Rejected):
                self.ingest(topic, decoded)
                return
        except Exception as exc:  # a record's content never stops monitoring: this record only
            log.exception("%s@%s raised while observed", topic.name, event.message.offset)
            decoded = ingress.processing_failed(topic.name, exc)
        self.rejected[topic.name] += 1
        if topic is PLATFORM_DEADLETTERS:  # never dead-letter a dead letter
            log.error("unreadable dead letter at offset %s: %s", event.message.offset, decoded.reason)
            return
        message = event.message
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, decoded.reason)
        origin = ingress.Origin(message.topic, message.partition, message.offset)
        sent = [
            await self.outbox.emit(t, out)
            for t, out in ingress.dead_letter_outputs(origin, message.key, message.value, decoded)
        ]
        await asyncio.gather(*sent)

    def ingest(self, topic: Topic, message: Any) -> None:
        seen = observations(message)  # computed before anything changes: a raise leaves the engine as it was
        self.received[topic.name] += 1
        self.engine.observe_all(seen)
        if self.settings.metrics_from_topics:
            record_metrics(message)

    def _alert(self, notice: Notice) -> m.Alert:
        """The wire alert, in wall-clock time (the engine's clock may run ahead in tests)."""
        if notice.firing:
            starts_at = self._started.setdefault(notice.fingerprint, self.clock.to_wall(notice.starts_at))
            return to_alert(notice, starts_at, None)
        starts_at = self._started.pop(notice.fingerprint, self.clock.to_wall(notice.starts_at))
        assert notice.ends_at is not None
        return to_alert(notice, starts_at, max(self.clock.to_wall(notice.ends_at), starts_at))

    async def evaluate(self) -> list[Awaitable[Any]]:
        """Judge the rules now; emit transitions, queue transitions and re-posts. Returns emit futures."""
        result = self.engine.evaluate(self.clock.now())
        alerts = [self._alert(n) for n in result.to_send]
        if alerts:
            self.delivery.submit(alerts)
        futures: list[Awaitable[Any]] = []
        for notice, alert in zip(result.changes, alerts, strict=False):
            self.transitions += 1
            log.info(
                "alert %s %s %s: %s",
                notice.rule,
                "FIRING" if notice.firing else "RESOLVED",
                notice.fingerprint,
                notice.summary,
            )
            futures.append(await self.outbox.emit(MONITORING_ALERTS, alert))
        if result.changes:
            metrics.set_alerts_firing(Counter((n.rule, n.severity) for n in self.engine.firing()))
        return futures

    async def evaluate_acked(self) -> None:
        """`evaluate`, then wait until Kafka acknowledged every transition it emitted."""
        futures = await self.evaluate()
        if futures:
            await asyncio.gather(*futures)

    def state(self) -> dict[str, Any]:
        return {
            "now": self.clock.now().isoformat(),
            "offset_s": self.clock.offset.total_seconds(),
            "received": dict(self.received),
            "rejected": dict(self.rejected),
            "transitions": self.transitions,
            "engine": self.engine.stats(),
            "firing": [
                {"fingerprint": n.fingerprint, "rule": n.rule, "value": n.value, "summary": n.summary}
                for n in self.engine.firing()
            ],
            "delivery": {
                "pending": len(self.delivery.pending),
                "posted": self.delivery.posted,
                "failed_rounds": self.delivery.failed_rounds,
            },
        }


# ----------------------------------------------------------------------------- start-up: governance entities


def read_compacted(bootstrap: str, topic: Topic) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of a topic up to its current end (blocking; run in a thread)."""
    probe = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "nexus-alerting-bootstrap", "enable.auto.commit": False}
    )
    try:
        partitions = list(probe.list_topics(topic.name, timeout=10).topics[topic.name].partitions)
        ends = {p: watermarks(probe, topic.name, p, 10)[1] for p in partitions}
    finally:
        probe.close()
    records: list[tuple[bytes | None, bytes | None]] = []
    for partition, end in ends.items():
        records += [(key, value) for _offset, key, value, _ms in read_partition(bootstrap, topic.name, partition, end)]
    return records


async def rebuild_entities(monitor: Monitor, settings: Settings) -> None:
    """Observe every governance entity on its compacted topic, so a restart forgets no pending request."""
    started = time.perf_counter()
    for topic in ENTITY_TOPICS:
        try:
            records = await asyncio.to_thread(read_compacted, settings.bootstrap_servers, topic)
        except Exception as exc:  # the live stream still delivers them; only a restart's memory is at stake
            log.error("could not rebuild %s: %s", topic.name, exc)
            continue
        for key, value in records:
            decoded = ingress.validate(topic, key, value, settings.max_ingress_message_bytes)
            if not isinstance(decoded, ingress.Rejected):
                monitor.engine.observe_all(observations(decoded))
        log.info("rebuilt %d %s record(s) in %.2fs", len(records), topic.name, time.perf_counter() - started)


# ----------------------------------------------------------------------------- Faust wiring


def register(app: faust.App, settings: Settings) -> None:
    """Add the monitoring agent, its timers, its start-up task and its web pages to `app`."""
    config = load_rules(settings.alerting_rules_file.read_text())
    monitor = Monitor(config, settings, Outbox(settings.bootstrap_servers))
    inputs = app.topic(
        *(t.name for t in INPUTS), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def monitor_streams(stream: faust.StreamT[bytes]) -> None:
        # One event at a time (Faust acks each after its iteration); the rules are judged at most every
        # EVALUATE_MIN_S here and on the timer, so a burst costs one evaluation per slice, not per event.
        last_evaluation = 0.0
        async for event in stream.events():
            await monitor.receive(event)
            if time.monotonic() - last_evaluation >= EVALUATE_MIN_S:
                last_evaluation = time.monotonic()
                await monitor.evaluate_acked()

    async def start_monitoring() -> None:
        """Metrics endpoint, Alertmanager delivery loop, and governance entities rebuilt from their topics."""
        metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)
        app.add_future(monitor.delivery.run(retry_every_s=max(float(config.evaluate_every_s), 1.0)))
        await rebuild_entities(monitor, settings)

    async def evaluate_rules() -> None:
        await monitor.evaluate_acked()

    async def report_consumer_lag() -> None:
        try:
            await asyncio.to_thread(metrics.measure_consumer_lag, settings.bootstrap_servers, app.conf.id)
        except Exception as exc:
            log.warning("consumer lag not measured: %s", exc)

    app.agent(inputs, name="nexus.alerting.monitor_streams")(monitor_streams)
    app.timer(float(config.evaluate_every_s), name="nexus.alerting.evaluate_rules")(evaluate_rules)
    app.timer(settings.alerting_lag_interval_s, name="nexus.alerting.consumer_lag")(report_consumer_lag)
    app.task(start_monitoring)
    register_pages(app, monitor, clock_control=settings.alerting_clock_control)


def register_pages(app: faust.App, monitor: Monitor, clock_control: bool) -> None:
    """``GET /alerting/state/``; with `clock_control` (tests only) also ``/alerting/clock/``."""

    async def alerting_state(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json(monitor.state())

    app.page("/alerting/state/", name="nexus.alerting.state")(alerting_state)
    if not clock_control:
        return

    class AlertingClock(faust.web.View):
        """Tests only: ``POST {"advance_s": N}`` moves the engine clock forward and evaluates at once."""

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            return self.json(monitor.state())

        async def post(self, request: faust.web.Request) -> faust.web.Response:
            body = await request.json()
            monitor.clock.offset += timedelta(seconds=float(body.get("advance_s", 0)))
            await monitor.evaluate_acked()
            return self.json(monitor.state())

    app.page("/alerting/clock/", name="nexus.alerting.clock")(AlertingClock)
