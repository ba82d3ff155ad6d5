"""The demo's money-out scene (issue 17): holders, their KYC, auto-payout rules, a stake and the dividend epochs.

Six holders, each showing one thing: a THRESHOLD payout (PayPal, USD), a SCHEDULE payout a minute after the rule
is created (Stripe, EUR: the bridge scene breaks Stripe's USD rail on purpose), a DIVIDEND payout after each epoch
(Toss, KRW: a demo's fees make small dividends; the holder is an energy node and a staker), a holder whose KYC is
pending (Toss: waits, then is paid once verified), a payout the provider declines (a Wise
recipient that does not exist: the hold is voided, the balance unchanged), and a payout above the governed
auto-approval limit (50,000 K-AUS by default: it waits APPROVAL_PENDING until the signers approve it, which
devtools/governed_demo.py does). One rule that cannot work is dead-lettered. The panel shows what came out:
results, waits, notifications delivered, epochs declared.

The demo's epochs are short (``DEMO_ENV``) so that one passes while it runs; the KYC secrets are dev-only values
made for this run (``devtools.kyc_sim.dev_secrets``) and handed to the receiver and the simulator only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from rich.table import Table

from contracts import models as m
from contracts.topics import (
    DIVIDENDS_DECLARED,
    KYC_STATUS,
    LEDGER_COMMANDS,
    NOTIFICATIONS_DELIVERIES,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
    PLATFORM_DEADLETTERS,
    Topic,
)
from devtools.kyc_sim import Applicant, KycSimulator, dev_secrets, send_webhook, signed, webhook_payload
from domain.money import kaus_to_decimal
from infra.http_serving import url_host
from streams.kyc.settings import KycSettings, secret_bytes
from streams.settings import Settings

log = logging.getLogger("nexus.demo.payouts")
KAUS = 1_000_000
# What the demo's workers run with (unless the environment says otherwise): two-minute dividend epochs checked every
# two seconds, a one-minute stake lock and unbonding.
DEMO_ENV = {
    "NEXUS_DIVIDEND_EPOCH_MINUTES": "2",
    "NEXUS_DIVIDEND_TIMER_EVERY_S": "2",
    "NEXUS_STAKING_LOCK_MINUTES": "1",
    "NEXUS_STAKING_UNBONDING_MINUTES": "1",
}
PENDING_KYC_S = 20.0  # the pending holder is verified this long after the rules are sent
# One K-AUS above the default auto-approval limit (50,000 K-AUS) once the keep-minimum (100) stays: ELEVATED, 4 of 5.
APPROVAL_DEPOSIT_KAUS = 50_101
WATCHED: tuple[Topic, ...] = (
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
    NOTIFICATIONS_DELIVERIES,
    DIVIDENDS_DECLARED,
    PLATFORM_DEADLETTERS,
    KYC_STATUS,
)


def prepare_environment(settings: Settings) -> None:
    """Before the workers start: the demo's epochs and stake periods, the notifier pointed at the local sink (the
    stand-in for the mail server and the SMS / push gateways), and this run's dev-only KYC secrets."""
    sink = f"http://{url_host(settings.alert_sink_host)}:{settings.alert_sink_port}"
    env = {
        **DEMO_ENV,
        "NEXUS_NOTIFY_SMTP_HOST": url_host(settings.alert_sink_host),
        "NEXUS_NOTIFY_SMTP_PORT": str(settings.alert_smtp_port),
        "NEXUS_NOTIFY_SMS_GATEWAY_URL": f"{sink}/sms-gateway",
        "NEXUS_NOTIFY_PUSH_GATEWAY_URL": f"{sink}/push",
    }
    for name, value in env.items():
        os.environ.setdefault(name, value)
    if KycSettings().missing_secrets():
        os.environ.update(dev_secrets())


@dataclass(frozen=True)
class Holder:
    account_id: str
    trigger: str
    kyc: str  # the status first sent
    deposit_kaus: int


def holders(tag: str) -> list[Holder]:
    return [
        Holder(f"holder-threshold-{tag}", "THRESHOLD", "VERIFIED", 2_500),
        Holder(f"holder-schedule-{tag}", "SCHEDULE", "VERIFIED", 800),
        Holder(f"holder-dividend-{tag}", "DIVIDEND", "VERIFIED", 500),
        Holder(f"holder-pending-{tag}", "THRESHOLD", "PENDING", 3_000),
        Holder(f"holder-declined-{tag}", "THRESHOLD", "VERIFIED", 1_500),
        Holder(f"holder-approval-{tag}", "THRESHOLD", "VERIFIED", APPROVAL_DEPOSIT_KAUS),
    ]


def approval_rule_id(tag: str) -> str:
    """The rule whose payout is above the auto-approval limit: its payout ids start with this and a colon."""
    return f"r-approval-{tag}"


def rules(tag: str, now: datetime) -> list[m.AutoPayoutRule]:
    """One rule per holder, and one that cannot work (its keep-minimum is above its threshold)."""
    at = (now + timedelta(minutes=1)).strftime("%H:%M")  # the next minute, UTC: paid about a minute from now
    common: dict[str, Any] = {"max_payout_per_tx_kaus_units": 5_000 * KAUS}
    return [
        m.AutoPayoutRule(
            rule_id=f"r-threshold-{tag}", account_id=f"holder-threshold-{tag}", trigger_type="THRESHOLD",
            threshold_kaus_units=1_000 * KAUS, keep_minimum_kaus_units=100 * KAUS, payout_provider="PAYPAL",
            payout_currency="USD", payout_account=f"threshold-{tag}@example.com", **common,
        ),
        m.AutoPayoutRule(
            rule_id=f"r-schedule-{tag}", account_id=f"holder-schedule-{tag}", trigger_type="SCHEDULE",
            schedule_type="DAILY", schedule_time_utc=at, keep_minimum_kaus_units=50 * KAUS, payout_provider="STRIPE",
            payout_currency="EUR", payout_account=f"acct_{tag}schedule", **common,
        ),
        m.AutoPayoutRule(
            rule_id=f"r-dividend-{tag}", account_id=f"holder-dividend-{tag}", trigger_type="DIVIDEND",
            dividend_source="ALL", dividend_min_kaus_units=KAUS // 100, payout_provider="TOSS", payout_currency="KRW",
            payout_account=f"div{tag}", **common,
        ),
        m.AutoPayoutRule(
            rule_id=f"r-pending-{tag}", account_id=f"holder-pending-{tag}", trigger_type="THRESHOLD",
            threshold_kaus_units=1_000 * KAUS, payout_provider="TOSS", payout_currency="KRW",
            payout_account=f"sub{tag}", **common,
        ),
        m.AutoPayoutRule(
            rule_id=f"r-declined-{tag}", account_id=f"holder-declined-{tag}", trigger_type="THRESHOLD",
            threshold_kaus_units=1_000 * KAUS, payout_provider="WISE", payout_currency="EUR",
            payout_account="no-such-recipient", **common,
        ),
        m.AutoPayoutRule(
            rule_id=approval_rule_id(tag), account_id=f"holder-approval-{tag}", trigger_type="THRESHOLD",
            threshold_kaus_units=1_000 * KAUS, keep_minimum_kaus_units=100 * KAUS, payout_provider="PAYPAL",
            payout_currency="USD", payout_account=f"approval-{tag}@example.com",
            max_payout_per_tx_kaus_units=APPROVAL_DEPOSIT_KAUS * KAUS,
        ),
        m.AutoPayoutRule(
            rule_id=f"r-invalid-{tag}", account_id=f"holder-threshold-{tag}", trigger_type="THRESHOLD",
            threshold_kaus_units=100 * KAUS, keep_minimum_kaus_units=200 * KAUS, payout_provider="PAYPAL",
            payout_currency="USD", payout_account=f"threshold-{tag}@example.com", **common,
        ),
    ]  # fmt: skip


def ledger_setup(tag: str, people: list[Holder], now: datetime) -> list[Any]:
    """Deposits, the dividend holder registered as an energy node and staking part of its K-AUS."""
    dividend = f"holder-dividend-{tag}"
    out: list[Any] = [
        m.Deposit(command_id=f"dep-{h.account_id}", account_id=h.account_id, amount_kaus_units=h.deposit_kaus * KAUS,
                  occurred_at=now)
        for h in people
    ]  # fmt: skip
    out.append(
        m.RegisterDividendHolder(
            command_id=f"node-{dividend}", account_id=dividend, source="ENERGY_NODE", weight=10, occurred_at=now
        )
    )
    out.append(
        m.Stake(command_id=f"stake-{dividend}", account_id=dividend, amount_kaus_units=200 * KAUS, occurred_at=now)
    )
    return out


@dataclass
class PayoutsDemo:
    settings: Settings
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    results: dict[str, m.PayoutResult] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)  # payout id -> reason code
    deliveries: Counter[str] = field(default_factory=Counter)  # "EMAIL DELIVERED", ...
    epochs: dict[str, int] = field(default_factory=dict)  # declaration id -> K-AUS declared
    rule_letters: Counter[str] = field(default_factory=Counter)  # dead-lettered rules by reason code
    kyc_seen: Counter[str] = field(default_factory=Counter)
    step: str = "starting"
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    kyc: KycSimulator | None = None

    @property
    def people(self) -> list[Holder]:
        return holders(self.tag)

    def start(self) -> None:
        kyc = KycSettings()
        assert kyc.app_token is not None, "prepare_environment() first"
        port = int(kyc.applicant_api_url.rsplit(":", 1)[1])
        self.kyc = KycSimulator(kyc.app_token.get_secret_value(), secret_bytes(kyc.app_secret_key), port=port)
        self.kyc.add(*(Applicant.example(h.account_id) for h in self.people))
        self.kyc.start()
        for target in (self._observe, self._scenario):
            thread = threading.Thread(target=target, name=f"payouts-demo-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.kyc is not None:
            self.kyc.stop()

    # ------------------------------------------------------------------ what the holders do

    def _scenario(self) -> None:
        try:
            self._run_scenario()
        except Exception as exc:  # the rest of the demo goes on; the panel says what failed
            log.exception("payouts scene failed")
            self.step = f"[red]failed: {exc}[/]"

    def _run_scenario(self) -> None:
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "enable.idempotence": True})
        now = datetime.now(UTC)
        self.step = "KYC webhooks sent"
        for h in self.people:
            self._webhook(h.account_id, h.kyc)
        self._produce(producer, LEDGER_COMMANDS, ledger_setup(self.tag, self.people, now))
        time.sleep(2.0)  # the statuses are in before the rules, so the verified holders never wait
        self._produce(producer, PAYOUT_RULES, rules(self.tag, now))
        self.step = "rules created; the threshold pays now, the schedule at the next minute, dividends each epoch"
        if self.stop_event.wait(PENDING_KYC_S):
            return
        self._webhook(f"holder-pending-{self.tag}", "VERIFIED")
        self.step = "the pending holder is verified now: its waiting payout goes out"

    def _webhook(self, account_id: str, status: str) -> None:
        kyc = KycSettings()
        body, headers = signed(webhook_payload(account_id, status), secret_bytes(kyc.webhook_secret))
        answer = send_webhook(f"http://127.0.0.1:{kyc.port}", body, headers)
        if answer.status_code != 200:
            raise RuntimeError(f"the KYC receiver answered {answer.status_code} for {account_id}")

    @staticmethod
    def _produce(producer: Producer, topic: Topic, messages: list[Any]) -> None:
        for message in messages:
            producer.produce(topic.name, topic.encode(message), topic.key_of(message))
        if producer.flush(10):
            raise RuntimeError(f"{topic.name}: records not acknowledged")

    # ------------------------------------------------------------------ what came out

    def _observe(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "group.id": f"demo-payouts-{os.getpid()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        consumer.subscribe([t.name for t in WATCHED])
        try:
            while not self.stop_event.is_set():
                for msg in consumer.consume(500, timeout=0.5):
                    value = msg.value()
                    if msg.error() is None and value is not None:
                        self._seen(msg.topic(), value)
        finally:
            consumer.close()

    def _seen(self, topic: str | None, value: bytes) -> None:
        row = orjson.loads(value)
        if topic == PAYOUT_RESULTS.name:
            self.results[row["payout_id"]] = PAYOUT_RESULTS.decode(value)
        elif topic == PAYOUT_WAITING.name:
            self.waiting[row["payout_id"]] = row["reason_code"]
        elif topic == NOTIFICATIONS_DELIVERIES.name:
            self.deliveries[f"{row['channel']} {row['status']}"] += 1
        elif topic == DIVIDENDS_DECLARED.name:
            epoch = row["dividend_id"].split("/")[0]
            self.epochs[epoch] = self.epochs.get(epoch, 0) + row["amount_kaus_units"]
        elif topic == PLATFORM_DEADLETTERS.name and row["source_topic"] == PAYOUT_RULES.name:
            self.rule_letters[row["reason_code"]] += 1
        elif topic == KYC_STATUS.name:
            self.kyc_seen[row["status"]] += 1

    def render(self) -> Table:
        table = Table(title="Money out: auto-payouts, KYC, dividend epochs", show_header=False, expand=True)
        table.add_column("what", style="bold")
        table.add_column("seen")
        table.add_row("scene", self.step)
        table.add_row("KYC statuses", _counts(self.kyc_seen))
        by_rule = {r.rule_id: r for r in rules(self.tag, datetime.now(UTC))}
        for result in sorted(self.results.values(), key=lambda r: r.completed_at):
            rule = by_rule.get(result.rule_id or "")
            trigger = rule.trigger_type if rule is not None else "?"
            if result.status is m.PayoutStatus.PAID:
                fiat = f"{result.amount_minor} {result.currency} minor units"
                what = f"[green]PAID[/] {kaus_to_decimal(result.kaus_debited_units or 0)} K-AUS → {fiat}"
                if result.approval_request_id:
                    what += f", approved by {result.approval_request_id}"
            else:
                what = f"[red]FAILED[/] {result.reason_code} in {result.failed_phase}: hold voided"
            table.add_row(f"{trigger} {result.provider}", f"{what} ({result.payout_id})")
        for payout_id, code in self.waiting.items():
            if payout_id not in self.results:
                table.add_row("waiting", f"[yellow]{code}[/] {payout_id}")
        table.add_row("rules dead-lettered", _counts(self.rule_letters) or "none yet")
        table.add_row("holder notifications", _counts(self.deliveries) or "none yet")
        epochs = ", ".join(f"{e}: {kaus_to_decimal(u)} K-AUS" for e, u in sorted(self.epochs.items())[-2:])
        table.add_row("dividend epochs", epochs or "the first closes within two minutes")
        return table


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))
