"""Personal data sealed at rest with the HSM's encryption key (issue 18 item 2), end to end on a real SoftHSM2 token
(made as tests/integration/test_hsm.py makes it, under tmp_path) and the session's Kafka broker:

the KYC receiver writes kyc.status with the contacts sealed and nothing plain; the payouts service, fed that record,
keeps them sealed and sends bridge.requests / payouts.requests with the payout account sealed and masked and
notifications with the destination sealed and masked; the notifier delivers to the real address (also one sealed
before a rotation of the encryption key); the bridge's provider request pays the real account."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from contracts import models as m
from contracts.bridge_codec import payment_from_request
from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    KYC_STATUS,
    LEDGER_TRANSFERS,
    NOTIFICATIONS_DELIVERIES,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RULES,
    Topic,
)
from devtools.kyc_sim import Applicant, signed, webhook_payload
from domain import keys as dk
from domain.bridge import PayoutIntent, bridge_tx_id_for
from domain.fx import FxBook, Quote
from domain.money import Currency
from domain.rails import Provider, Rail
from domain.timeconv import from_ms, to_ms
from streams.bridge.providers import ProviderSettings, build_adapters
from streams.bridge.providers import base as provider_base
from streams.bridge.providers.http import HttpRequest, HttpResponse
from streams.bridge.providers.stripe import StripeAdapter
from streams.kafka.ingress import Origin
from streams.kyc.receiver import AckedProducer, KycReceiver
from streams.notifications.notifier import Notifier
from streams.notifications.policy import DoneIds, RetryPolicy
from streams.payouts.service import PayoutService, Record
from streams.payouts.settings import PayoutSettings
from streams.security import keys
from streams.security.envelope import HsmSealer, mask
from streams.security.keys import KeyManager
from streams.security.settings import SecuritySettings
from tests.support.kafka_io import KafkaIO
from tests.support.kafka_io import Record as KafkaRecord

pytestmark = pytest.mark.slow

K = 1_000_000
SECRET = b"sealed-test-webhook-secret"
ACCOUNT = "acct_1Nv0FGQ9RKHgCVdK"
RATE = Decimal("0.15")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[KeyManager]:
    settings = SecuritySettings(hsm_dir=tmp_path / "hsm", token_label=f"t-{uuid.uuid4().hex[:8]}")
    km = KeyManager(keys.open_hsm(settings), settings)
    km.rotate_due()  # the token's first versions, the encryption key among them
    yield km
    km.hsm.close()


class NoCalls:
    """The provider's transport: building the request sends nothing."""

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        raise AssertionError("nothing is sent here")

    async def aclose(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, notification: m.HolderNotification) -> None:
        self.sent.append((notification.channel.value, notification.destination))


def _read_all(kafka: KafkaIO, topic: Topic) -> list[KafkaRecord]:
    """read_all, retried while a fresh broker's partition has no leader yet (bounded: 20 x 0.5 s)."""
    for _ in range(20):
        try:
            return kafka.read_all(topic)
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            time.sleep(0.5)
    return kafka.read_all(topic)


def _records(
    service: PayoutService, topic: Topic, value: Any, offset: int, now_ms: int, raw: bytes | None = None
) -> list[tuple[Topic, Any]]:
    data = raw if raw is not None else topic.encode(value)
    key = None if value is None else topic.key_of(value)
    return service.handle(Record(topic.name, 0, offset, key, data, now_ms, now_ms))


def test_personal_data_is_sealed_from_the_kyc_webhook_to_the_provider_request(
    manager: KeyManager, kafka: KafkaIO, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealer = HsmSealer(manager)
    holder = f"acct-sealed-{uuid.uuid4().hex[:8]}"
    applicant = Applicant.example(holder)
    contacts = [v for v in (applicant.email, applicant.phone, applicant.push_token) if v]
    assert applicant.email and applicant.phone

    # 1. the KYC receiver: kyc.status on the broker carries the contacts sealed, nothing plain
    producer = AckedProducer(kafka_bootstrap, 10.0)
    try:
        receiver = KycReceiver(SECRET, lambda _id: applicant.as_json(), producer.publish, sealer=sealer)
        body, headers = signed(webhook_payload(holder, "VERIFIED", "req-1", datetime.now(UTC)), SECRET)
        assert receiver.handle(body, {k.lower(): v for k, v in headers.items()}).status == 200
    finally:
        producer.close()
    [kyc] = [r for r in _read_all(kafka, KYC_STATUS) if r.key == holder.encode()]
    assert kyc.value is not None and all(c.encode() not in kyc.value for c in contacts)
    status = KYC_STATUS.decode(kyc.value)
    assert status.email is status.phone is status.push_token is None and status.contacts_sealed is not None
    assert status.contacts_sealed.split(":")[2] == "nexus-encryption-v1"

    # 2. the payouts service: requests and notifications sealed and masked
    now = to_ms(datetime.now(UTC))
    book = FxBook().with_quote(Quote("NEXUS_INTERNAL", "KAUS", Currency.USD, RATE, now))
    service = PayoutService(PayoutSettings(mirror_wait_ms=0), lambda: book, sealer=sealer)
    _records(service, KYC_STATUS, status, 0, now, raw=kyc.value)
    rule = m.AutoPayoutRule(
        rule_id=f"r-{holder}", account_id=holder, trigger_type="THRESHOLD", threshold_kaus_units=1_000 * K,
        payout_provider="STRIPE", payout_currency="USD", payout_account=ACCOUNT, keep_minimum_kaus_units=100 * K,
        max_payout_per_tx_kaus_units=5_000 * K,
    )  # fmt: skip
    _records(service, PAYOUT_RULES, rule, 0, now)
    deposit = m.LedgerTransfer(
        transfer_id=f"t-{holder}", debit_account_id="sys:mint", credit_account_id=holder, asset="KAUS",
        amount_units=2_000 * K, occurred_at=from_ms(now),
    )  # fmt: skip
    out = _records(service, LEDGER_TRANSFERS, deposit, 0, now)
    [request] = [v for t, v in out if t is PAYOUT_REQUESTS]
    [bridge] = [v for t, v in out if t is BRIDGE_REQUESTS]
    assert bridge.payout is not None and request.payout_account == bridge.payout.payout_account == "****CVdK"
    assert ACCOUNT.encode() not in PAYOUT_REQUESTS.encode(request) + BRIDGE_REQUESTS.encode(bridge)
    assert bridge.payout.payout_account_sealed is not None

    manager.rotate_now(dk.Purpose.ENCRYPTION)  # what was sealed with v1 still opens (v1 RETIRED)
    done = m.BridgeSettlementCompleted(
        request_id=request.payout_id, bridge_tx_id=bridge_tx_id_for(request.payout_id), payer_account_id=holder,
        merchant_id=holder, region="US", currency="USD", amount_minor=28_500, kaus_debited_units=1_900 * K,
        rate=RATE, rail="STRIPE_INSTANT", provider_reference="po_1", provider_fee_minor=25, cashback_kaus_units=0,
        ecosystem_bonus_kaus_units=0, phase_durations_ms={}, total_duration_ms=300, completed_at=datetime.now(UTC),
        payout_id=request.payout_id,
    )  # fmt: skip
    notes = [v for t, v in _records(service, BRIDGE_SETTLEMENTS_COMPLETED, done, 0, now) if t is NOTIFICATIONS_HOLDERS]
    assert len(notes) == len(contacts)
    wire = b"".join(NOTIFICATIONS_HOLDERS.encode(n) for n in notes)
    assert all(c.encode() not in wire for c in contacts)
    assert {n.destination for n in notes} == {mask(c) for c in contacts}
    # kept sealed under v1 at the KYC record: the notifications carry those envelopes
    assert {(n.destination_sealed or "").split(":")[2] for n in notes} == {"nexus-encryption-v1"}

    # 3. the notifier opens each just before sending: the real addresses
    channel = Recorder()
    notifier = Notifier(dict.fromkeys(m.NotificationChannel, channel), RetryPolicy(1, 0, 0), DoneIds(10), sealer=sealer)
    for i, note in enumerate(notes):
        origin = Origin(NOTIFICATIONS_HOLDERS.name, 0, i)
        outputs = asyncio.run(
            notifier.handle(NOTIFICATIONS_HOLDERS.key_of(note), NOTIFICATIONS_HOLDERS.encode(note), origin)
        )
        assert [t for t, _ in outputs] == [NOTIFICATIONS_DELIVERIES]
    assert sorted(d for _, d in channel.sent) == sorted(contacts)

    # 4. the bridge opens the account just before building the provider request: Stripe pays the real account
    monkeypatch.setattr(provider_base, "shared_sealer", lambda: sealer)
    payment = payment_from_request(bridge)
    assert payment.payout is not None
    payout = payment.payout  # the codec carries the sealed account over from the request
    assert payout.payout_account_sealed == bridge.payout.payout_account_sealed
    assert payout.payout_account.startswith("****")  # the plain field holds the mask only
    intent = PayoutIntent(
        bridge_tx_id=bridge_tx_id_for(request.payout_id), idempotency_key="idem-1", provider_attempt=1, send_no=1,
        rail=Rail.STRIPE_INSTANT, provider=Provider.STRIPE, amount_minor=28_500, currency=Currency.USD,
        fee_minor=25, kaus_units=1_900 * K, rate=RATE, lock_id="lock-1", locked_at_ms=now,
        lock_expires_at_ms=now + 60_000, hold_id="hold-1", hold_units=1_900 * K, tried_providers=(Provider.STRIPE,),
        payment=payment, created_at_ms=now,
    )  # fmt: skip
    settings = ProviderSettings(sim_url="https://providers.test", keys_dir=tmp_path / "provider-keys")
    stripe = build_adapters(settings, NoCalls(), providers=frozenset({Provider.STRIPE}))[Provider.STRIPE]
    assert isinstance(stripe, StripeAdapter)
    provider_request = stripe.build(intent)
    assert dict(provider_request.headers)["Stripe-Account"] == ACCOUNT
