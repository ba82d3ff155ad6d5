"""Payout mode of the bridge core (issue 17 item 4): a holder's auto-payout through the card payment's machinery.

Driven like tests/unit/test_bridge_core.py (the pure core, a fake ledger, providers with real idempotency), plus
the runner and its Kafka ledger client over a real ledger partition for the references on ``ledger.transfers``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest

from contracts import models as m
from contracts.bridge_codec import (
    intent_of_journal,
    journal_of_intent,
    journal_of_result,
    payment_from_request,
    quote_of_rate,
    request_from_payment,
    result_json,
    result_of_journal,
)
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED
from devtools.fx_feed import fx_quotes
from domain import bridge as b
from domain.bridge import (
    BridgeAuditAction,
    CardPayment,
    HolderPayout,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    Phase,
    PlaceHold,
    PostHold,
    ReasonCode,
    Rejected,
    Settled,
    audit_of,
    kaus_to_minor_floor,
)
from domain.cashback import PayerTier
from domain.fx import FxBook, kaus_to_minor
from domain.ledger import Leg, Reference, SettlementKind
from domain.money import Currency
from domain.payouts import PAYOUT_PROVIDERS
from domain.rails import RAILS, Provider, Rail, Region, eligible_rails, payout_region
from streams.bridge.ledger_client import KafkaHoldLedger
from streams.bridge.providers import build_adapters
from streams.bridge.providers.base import (
    DerivedMerchantDirectory,
    HttpRequest,
    HttpResponse,
    InvalidPayoutAccount,
    ProviderSettings,
    destination_of,
)
from streams.bridge.providers.paypal import build_payout_request as paypal_request
from streams.bridge.runner import BridgeRunner
from tests.unit.test_bridge_core import (
    DECLINE,
    DOWN,
    LOST_RESPONSE,
    PAYER,
    T0,
    Harness,
    K,
    fx_book,
    harness,
    payment,
    result_of,
    voids,
)
from tests.unit.test_bridge_ledger_references import REWARD_ACCOUNTS, LedgerWire, funded_ledger

UNITS = 1_000_033_334  # 1000.033334 K-AUS: 150.0050001 USD at 0.15, so half-even would pay 15001 cents, floor 15000


def holder_payout(
    request_id: str = "payout-1",
    units: int = UNITS,
    provider: Provider = Provider.PAYPAL,
    account: str = "holder-1@example.com",
    ccy: Currency = Currency.USD,
    region: Region | None = None,
    quoted: str = "0.15",
    payer: str = PAYER,
    rule_id: str | None = "rule-1",
) -> CardPayment:
    """A payout as the auto-payout service sends it: the holder is payer and merchant, the amount an estimate."""
    where = region or payout_region(provider, ccy)
    assert where is not None
    estimate = max(1, kaus_to_minor(units, D(quoted), ccy))
    return CardPayment(
        request_id, payer, payer, None, estimate, ccy, where, PayerTier.GOLD, D(quoted), T0,
        payout=HolderPayout(rule_id, provider, account, units),
    )  # fmt: skip


def effects(h: Harness, kind: type[Any]) -> list[Any]:
    return [e for e in h.effects if isinstance(e, kind)]


# --------------------------------------------------------------------------- exact amounts


def test_the_hold_and_the_debit_are_exactly_the_payouts_kaus_and_the_fiat_is_rounded_down() -> None:
    h = harness(balance=10_000 * K)
    r = result_of(h.run(holder_payout()))
    assert isinstance(r, Settled)
    [hold], [post] = effects(h, PlaceHold), effects(h, PostHold)
    assert hold.amount_units == post.amount_units == r.kaus_debited_units == UNITS  # no slippage margin
    [intent] = effects(h, PayoutIntent)
    assert kaus_to_minor(UNITS, D("0.15"), Currency.USD) == 15_001  # half-even would pay half a cent too much
    assert intent.amount_minor == r.amount_minor == kaus_to_minor_floor(UNITS, D("0.15"), Currency.USD) == 15_000
    assert (r.rate, intent.kaus_units) == (D("0.15"), UNITS)
    # the ledger: exactly the payout's K-AUS left the holder, nothing stays held, nothing else moved
    assert h.ledger.balances[PAYER] == 10_000 * K - UNITS
    assert h.ledger.balances["bridge:settlement"] == UNITS
    assert h.ledger.pending() == [] and h.providers.count("BRIDGE-payout-1") == 1


@pytest.mark.parametrize(
    ("units", "rate", "ccy", "minor"),
    [
        (1_000_000, "0.15", Currency.USD, 15),  # exact
        (1_066_666, "0.15", Currency.USD, 15),  # 15.99999 cents → 15
        (4_752, "210.4321", Currency.KRW, 0),  # 0.99997 won → 0
        (4_753, "210.4321", Currency.KRW, 1),  # 1.0002 won → 1
        (10**18, "1234.5678901234", Currency.JPY, 1_234_567_890_123_400),
    ],
)
def test_kaus_to_minor_floor_never_pays_more_than_the_kaus_are_worth(
    units: int, rate: str, ccy: Currency, minor: int
) -> None:
    paid = kaus_to_minor_floor(units, D(rate), ccy)
    assert paid == minor
    # paid ≤ exact value < paid + 1 minor unit (exact rational check)
    value = D(units) / D(10**6) * D(rate) * D(10) ** (0 if ccy in (Currency.KRW, Currency.JPY) else 2)
    assert paid <= value < paid + 1


def test_the_hold_covers_the_payout_to_the_unit() -> None:
    exact = harness(balance=UNITS)
    assert isinstance(result_of(exact.run(holder_payout())), Settled)
    assert exact.ledger.balances[PAYER] == 0  # keep-minimum respected to the unit: nothing above the amount held
    short = harness(balance=UNITS - 1)
    r = result_of(short.run(holder_payout()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.BALANCE_LOCK, ReasonCode.INSUFFICIENT_FUNDS, False)
    assert effects(short, PlaceHold) == [] and short.providers.calls == []


def test_a_payout_worth_less_than_one_minor_unit_is_rejected_and_its_hold_voided() -> None:
    h = harness(book=fx_book("210.4321", Currency.KRW))
    r = result_of(h.run(holder_payout(units=4_752, provider=Provider.TOSS, account="nxsub01", ccy=Currency.KRW,
                                      quoted="210.4321")))  # fmt: skip
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.FX_CONVERSION, ReasonCode.AMOUNT_TOO_SMALL, True)
    assert [v.hold_id for v in voids(h)] == ["BRIDGE-payout-1:hold"]
    assert h.providers.calls == [] and effects(h, PostHold) == [] and h.ledger.pending() == []
    assert h.ledger.balances[PAYER] == 10_000 * K


def test_the_slippage_check_applies_to_a_payout_as_to_a_card_payment() -> None:
    h = harness(book=fx_book("0.15045"))  # 0.3% above the quote: rejected after the hold
    r = result_of(h.run(holder_payout()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.FX_CONVERSION, ReasonCode.SLIPPAGE, True)
    assert h.providers.calls == [] and h.ledger.pending() == [] and h.ledger.balances[PAYER] == 10_000 * K


# --------------------------------------------------------------------------- rails


@pytest.mark.parametrize(
    ("provider", "ccy", "account", "rail"),
    [
        (Provider.PAYPAL, Currency.USD, "holder@example.com", Rail.PAYPAL),  # not the faster STRIPE_INSTANT
        (Provider.WISE, Currency.USD, "12345678", Rail.WISE),
        (Provider.STRIPE, Currency.EUR, "acct_1Holder", Rail.STRIPE_SEPA),
        (Provider.TOSS, Currency.KRW, "nxsub01", Rail.TOSS_PAYMENTS),
    ],
)
def test_only_the_payouts_provider_pays_it(provider: Provider, ccy: Currency, account: str, rail: Rail) -> None:
    rate = {Currency.KRW: "210.4321", Currency.EUR: "0.14"}.get(ccy, "0.15")
    h = harness(book=fx_book(rate, ccy))
    r = result_of(h.run(holder_payout(provider=provider, account=account, ccy=ccy, quoted=rate)))
    assert isinstance(r, Settled), r
    assert (r.rail, r.provider, r.primary_rail, r.rail_substitution) == (rail, provider, rail, None)
    assert h.providers.calls == [("payout", rail)]


@pytest.mark.parametrize("behaviour", [DOWN, DECLINE])
def test_a_provider_failure_voids_the_hold_and_nothing_fails_over(behaviour: str) -> None:
    h = harness()
    h.providers.on(Rail.PAYPAL, behaviour)
    r = result_of(h.run(holder_payout()))
    assert isinstance(r, Rejected) and r.payout_id == "payout-1"
    code = ReasonCode.PAYOUT_FAILED if behaviour == DOWN else ReasonCode.PROVIDER_DECLINED
    assert (r.failed_phase, r.reason_code, r.hold_voided, r.rail) == (Phase.MERCHANT_CREDIT, code, True, Rail.PAYPAL)
    assert h.providers.calls == [("payout", Rail.PAYPAL)]  # neither Stripe nor Wise: the account is PayPal's
    assert [(v.phase, v.reason_code) for v in voids(h)] == [(Phase.MERCHANT_CREDIT, code)]
    assert effects(h, PostHold) == [] and h.providers.payouts == {}
    assert h.ledger.pending() == [] and h.ledger.balances[PAYER] == 10_000 * K  # nothing captured


def test_an_open_breaker_fails_the_payout_where_a_card_payment_would_fail_over() -> None:
    h = harness()
    for _ in range(3):
        h.breakers[Rail.PAYPAL] = h.breakers[Rail.PAYPAL].on_failure(T0)
    r = result_of(h.run(holder_payout()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.MERCHANT_CREDIT, ReasonCode.NO_RAIL, True)
    assert "PAYPAL: circuit breaker OPEN" in r.reason and "rule's provider only" in r.reason
    assert h.providers.calls == [] and h.ledger.pending() == []
    # a EUR card payment in the US (no primary rail pays it) goes out over PayPal's fallback, Wise, instead
    card = harness(book=fx_book("0.14", Currency.EUR))
    card.breakers[Rail.PAYPAL] = h.breakers[Rail.PAYPAL]
    settled = result_of(card.run(payment(ccy=Currency.EUR, quoted="0.14", amount_minor=5_000)))
    assert isinstance(settled, Settled) and settled.rail is Rail.WISE


def test_a_provider_without_a_rail_for_the_currency_in_the_region_fails_no_rail() -> None:
    h = harness(book=fx_book("0.14", Currency.EUR))
    r = result_of(h.run(holder_payout(provider=Provider.STRIPE, account="acct_1H", ccy=Currency.EUR,
                                      region=Region.US, quoted="0.14")))  # fmt: skip
    assert isinstance(r, Rejected) and r.reason_code is ReasonCode.NO_RAIL and r.hold_voided
    assert "STRIPE has no rail paying EUR in region US" in r.reason and h.providers.calls == []


def test_a_lost_answer_is_resolved_with_the_same_provider_and_paid_once() -> None:
    h = harness()
    h.providers.on(Rail.PAYPAL, LOST_RESPONSE)
    r = result_of(h.run(holder_payout()))
    assert isinstance(r, Settled) and r.kaus_debited_units == UNITS
    assert h.providers.calls == [("payout", Rail.PAYPAL), ("lookup", Rail.PAYPAL)]
    assert h.providers.count("BRIDGE-payout-1") == 1


def test_recovery_from_the_journal_knows_the_payout_and_pays_it_once() -> None:
    """A crash after the provider executed the payout: the journaled intent (its request with the payout block)
    is all the restarted worker has; it resolves under the same key and captures exactly the payout's K-AUS."""
    h = harness()
    h.providers.on(Rail.PAYPAL, LOST_RESPONSE)
    h.providers.lookup_script.extend([DOWN, DOWN])  # unknown → parked, as if the worker died here
    step = h.run(holder_payout(rule_id=None))
    assert step.tx.stage is b.Stage.PARKED
    [intent] = effects(h, PayoutIntent)
    entry = m.BridgeJournalEntry.model_validate_json(orjson.dumps(journal_of_intent(intent)))
    assert entry.intent is not None and entry.intent.request.payout is not None
    restored = intent_of_journal(entry)
    assert restored == intent and restored.payment.payout == HolderPayout(None, Provider.PAYPAL,
                                                                          "holder-1@example.com", UNITS)  # fmt: skip
    [resumed] = b.recover([restored], h.clock.now())
    r = result_of(h.drive(resumed))
    assert isinstance(r, Settled) and r.payout_id == "payout-1"
    assert (r.kaus_debited_units, r.amount_minor, r.cashback_kaus_units) == (UNITS, 15_000, 0)
    assert h.providers.count("BRIDGE-payout-1") == 1
    assert h.ledger.balances[PAYER] == 10_000 * K - UNITS and h.ledger.pending() == []


# --------------------------------------------------------------------------- no rewards; references; results


def test_a_payout_earns_no_cashback_and_no_bonus() -> None:
    h = harness()
    r = result_of(h.run(holder_payout()))
    assert isinstance(r, Settled) and (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units) == (0, 0)
    [post] = effects(h, PostHold)
    assert post.rewards == ()
    assert "bridge:rewards" not in h.ledger.balances and "bridge:ecosystem" not in h.ledger.balances


def test_the_hold_names_the_payout_and_a_card_payment_stays_a_card_payment() -> None:
    h = harness()
    h.run(holder_payout())
    h.run(payment("card-1"))
    holds = effects(h, PlaceHold)
    assert [x.reference for x in holds] == [
        Reference(SettlementKind.PAYOUT, "payout-1", Leg.HOLD),
        Reference(SettlementKind.CARD_PAYMENT, "BRIDGE-card-1", Leg.HOLD),
    ]


class _Paying:
    def __init__(self, provider: Provider, status: PayoutStatus = PayoutStatus.PAID) -> None:
        self.provider, self.status, self.calls = provider, status, 0

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        self.calls += 1
        return PayoutOutcome(self.status, provider_reference=f"ref-{intent.idempotency_key}", error_code="x")

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        return await self.payout(intent)


def test_every_movement_of_a_payout_is_filed_under_its_payout_id_on_the_platform_ledger() -> None:
    """The runner and its Kafka ledger client over a real ledger partition: the hold, the capture and the release
    on ``ledger.transfers`` carry PAYOUT / the payout id; the capture is exactly the payout's K-AUS."""
    holder = "acct-holder-1"
    wire = LedgerWire(funded_ledger([holder], units=10**12))
    now = datetime.now(UTC)
    book = FxBook().with_quotes([quote_of_rate(q) for q in fx_quotes(now.date(), 0, now)])
    rate = book.combined_rate(Currency.USD, time.time_ns() // 1_000_000).rate
    paypal, wise = _Paying(Provider.PAYPAL), _Paying(Provider.WISE, PayoutStatus.UNAVAILABLE)
    paid = holder_payout("payout-paid", payer=holder, quoted=str(rate))
    failed = holder_payout("payout-failed", provider=Provider.WISE, account="12345678", payer=holder, quoted=str(rate))

    async def settle() -> list[b.Result]:
        runner = BridgeRunner(
            ledger=KafkaHoldLedger(wire, wire, REWARD_ACCOUNTS, timeout_s=5),  # type: ignore[arg-type]
            adapters={Provider.PAYPAL: paypal, Provider.WISE: wise},  # type: ignore[dict-item]
            fx_book=lambda: book,
        )
        return [await runner.settle(p) for p in (paid, failed)]

    ok, ko = asyncio.run(settle())
    assert isinstance(ok, Settled) and isinstance(ko, Rejected) and (paypal.calls, wise.calls) == (1, 1)
    assert ko.reason_code is ReasonCode.PAYOUT_FAILED and ko.hold_voided
    transfers = [
        m.LedgerTransfer.model_validate_json(v)
        for name, _, v in wire.records
        if name == "ledger.transfers" and not v.startswith(b'{"transfer_id":"dep-')
    ]
    legs: dict[str, dict[Leg, int]] = {}
    for t in transfers:
        assert t.reference is not None and t.reference.kind is SettlementKind.PAYOUT, t
        legs.setdefault(t.reference.id, {})[t.reference.leg] = t.amount_units
    assert legs == {
        "payout-paid": {Leg.HOLD: UNITS, Leg.CAPTURE: UNITS},
        "payout-failed": {Leg.HOLD: UNITS, Leg.RELEASE: UNITS},
    }
    assert wire.ledger.ledger.available(holder) == wire.ledger.ledger.balance(holder) == 10**12 - UNITS


def test_results_carry_the_payout_id_and_are_the_contract_messages() -> None:
    settled = result_of(harness().run(holder_payout()))
    declined = harness()
    declined.providers.on(Rail.PAYPAL, DECLINE)
    rejected = result_of(declined.run(holder_payout("payout-2")))
    card = result_of(harness().run(payment()))
    for result, topic, payout_id in (
        (settled, BRIDGE_SETTLEMENTS_COMPLETED, "payout-1"),
        (rejected, BRIDGE_SETTLEMENTS_FAILED, "payout-2"),
        (card, BRIDGE_SETTLEMENTS_COMPLETED, None),
    ):
        raw = orjson.dumps(result_json(result))
        decoded = topic.decode(raw)
        assert set(orjson.loads(raw)) == set(type(decoded).model_fields)
        assert decoded.payout_id == payout_id == result.payout_id
        journaled = journal_of_result(result, result.bridge_tx_id or "")
        assert result_of_journal(m.BridgeJournalEntry.model_validate_json(orjson.dumps(journaled))) == result


def test_a_payout_has_its_own_audit_actions() -> None:
    settled = result_of(harness().run(holder_payout()))
    down = harness()
    down.providers.on(Rail.PAYPAL, DOWN)
    failed = result_of(down.run(holder_payout("payout-2")))
    card = result_of(harness().run(payment()))
    audits = [audit_of(r) for r in (settled, failed, card)]
    assert [a.action for a in audits] == [
        BridgeAuditAction.PAYOUT_COMPLETED,
        BridgeAuditAction.PAYOUT_FAILED,
        BridgeAuditAction.SETTLEMENT_COMPLETED,
    ]
    assert [a.audit_id for a in audits[:2]] == ["AUDIT:BRIDGE-payout-1:completed", "AUDIT:BRIDGE-payout-2:failed"]
    assert audits[0].actor_account_id == PAYER and audits[0].kaus_units == UNITS and audits[0].amount_minor == 15_000


# --------------------------------------------------------------------------- the request, the fingerprint


def test_the_request_maps_to_the_payout_and_back() -> None:
    p = holder_payout()
    request = request_from_payment(p)
    assert request.payout == m.HolderPayout(
        rule_id="rule-1", provider="PAYPAL", payout_account="holder-1@example.com", amount_kaus_units=UNITS
    )
    assert payment_from_request(request) == p and payment_from_request(request).fingerprint() == p.fingerprint()
    card = payment()
    assert request_from_payment(card).payout is None and payment_from_request(request_from_payment(card)) == card


def test_the_fingerprint_covers_the_payout_block() -> None:
    base = holder_payout()
    others = [
        holder_payout(units=UNITS + 1),
        holder_payout(account="holder-2@example.com"),
        holder_payout(rule_id="rule-2"),
        holder_payout(provider=Provider.WISE, account="12345678"),
    ]
    assert len({base.fingerprint(), *(o.fingerprint() for o in others)}) == 5
    # a reused payout id with another amount gets the original result, flagged as another payload
    h = harness()
    first = result_of(h.run(base))
    admission = b.admit(others[0], {first.request_id: first}, set())
    assert isinstance(admission, b.Duplicate) and not admission.same_payload
    # a card payment's fingerprint is what it was before payouts existed (stored results keep matching)
    text = "|".join(("card-1", PAYER, "merchant-cafe-9", "", "15000", "USD", "US", "GOLD", "0.15"))
    assert payment().fingerprint() == hashlib.sha256(text.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- payout_region


def test_payout_region_is_a_region_where_the_provider_pays_the_currency() -> None:
    assert payout_region(Provider.STRIPE, Currency.USD) is Region.US
    assert payout_region(Provider.STRIPE, Currency.EUR) is Region.EU
    assert payout_region(Provider.TOSS, Currency.KRW) is Region.KR
    assert payout_region(Provider.PAYPAL, Currency.AUD) is Region.AU
    assert payout_region(Provider.WISE, Currency.JPY) is Region.JP
    assert payout_region(Provider.PAYPAL, Currency.GBP) is Region.KR  # no region has GBP: the first one declared
    assert payout_region(Provider.STRIPE, Currency.KRW) is None and payout_region(Provider.TOSS, Currency.USD) is None
    for provider in PAYOUT_PROVIDERS:
        for ccy in Currency:
            region = payout_region(provider, ccy)
            paid = any(s.provider is provider and ccy in s.currencies for s in RAILS.values())
            assert (region is not None) == paid, (provider, ccy)
            if region is not None:
                assert any(s.provider is provider for s in eligible_rails(region, ccy)), (provider, ccy, region)
                assert payout_region(provider, ccy) is region  # deterministic


# --------------------------------------------------------------------------- adapters: the holder's destination


class _NoCalls:
    """A transport that must not be used: an invalid payout account is declined before anything is sent."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        self.requests.append(request)
        return HttpResponse(503, {}, b"not stubbed")

    async def aclose(self) -> None:
        pass


def payout_intent(provider: Provider, account: str, ccy: Currency = Currency.USD) -> PayoutIntent:
    rate = {Currency.KRW: "210.4321", Currency.EUR: "0.14"}.get(ccy, "0.15")
    h = harness(book=fx_book(rate, ccy))
    h.run(holder_payout(provider=provider, account=account, ccy=ccy, quoted=rate))
    [intent] = effects(h, PayoutIntent)
    return intent


def adapter_of(provider: Provider, tmp_path: Path, transport: Any) -> Any:
    settings = ProviderSettings(sim_url="https://providers.test", keys_dir=tmp_path)
    return build_adapters(settings, transport, providers=frozenset({provider}))[provider]


def test_card_payments_are_paid_to_the_merchant_directorys_account() -> None:
    h = harness()
    h.run(payment())
    [intent] = effects(h, PayoutIntent)
    merchants = DerivedMerchantDirectory()
    assert destination_of(intent, merchants) == merchants.account("merchant-cafe-9")


def test_a_payout_is_paid_to_the_holders_account_in_each_providers_request_shape(tmp_path: Path) -> None:
    paypal = payout_intent(Provider.PAYPAL, "holder@example.com")
    req = paypal_request(paypal, "https://p", "tok", destination_of(paypal, DerivedMerchantDirectory()).paypal_receiver)
    item = json.loads(req.body)["items"][0]
    assert item["receiver"] == "holder@example.com" and item["amount"] == {"value": "150.00", "currency": "USD"}
    assert item["note"] == "NEXUS-X payout payout-1"

    stripe = payout_intent(Provider.STRIPE, "acct_1HolderXYZ", Currency.EUR)
    sreq = adapter_of(Provider.STRIPE, tmp_path, _NoCalls()).build(stripe)
    assert dict(sreq.headers)["Stripe-Account"] == "acct_1HolderXYZ"
    form = dict(parse_qsl(sreq.body.decode()))
    assert "destination" not in form  # the connected account's default external account
    assert (form["amount"], form["currency"], form["metadata[nexus_payout_id]"]) == ("14000", "eur", "payout-1")

    toss = payout_intent(Provider.TOSS, "nxsub01", Currency.KRW)
    treq = adapter_of(Provider.TOSS, tmp_path, _NoCalls()).build(toss)
    assert json.loads(treq.body)[0]["subMallId"] == "nxsub01"

    wise = payout_intent(Provider.WISE, "12345678")
    assert destination_of(wise, DerivedMerchantDirectory()).wise_recipient_id == 12_345_678


@pytest.mark.parametrize(
    ("provider", "account", "ccy"),
    [
        (Provider.WISE, "GB29NWBK60161331926819", Currency.USD),  # an IBAN, not a Wise recipient id
        (Provider.PAYPAL, "not-an-email", Currency.USD),
        (Provider.STRIPE, "ba_1234", Currency.USD),  # a bank account, not a connected account
        (Provider.TOSS, "a-sub-mall-id-longer-than-20", Currency.KRW),
    ],
)
def test_an_invalid_payout_account_is_declined_and_nothing_is_sent(
    provider: Provider, account: str, ccy: Currency, tmp_path: Path
) -> None:
    intent = payout_intent(provider, account, ccy)
    transport = _NoCalls()
    outcome = asyncio.run(adapter_of(provider, tmp_path, transport).payout(intent))
    assert (outcome.status, outcome.error_code) == (PayoutStatus.DECLINED, "INVALID_PAYOUT_ACCOUNT")
    assert account[:20] in (outcome.error_message or "") and transport.requests == []
    with pytest.raises(InvalidPayoutAccount):
        destination_of(intent, DerivedMerchantDirectory())
