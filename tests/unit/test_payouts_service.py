"""The auto-payout service's record processor (streams.payouts.service), driven with records, no Kafka: rules in
(dead letters with the rule's code and the original bytes, tombstones, inactive rules), THRESHOLD at and above the
threshold, what a PAY becomes (payouts.requests + bridge.requests with `payout`), the KYC gate, results and the
holder's notifications, a saved and restored state, and the wait for the balance mirror."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    DIVIDENDS_DECLARED,
    KYC_STATUS,
    LEDGER_TRANSFERS,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
    PLATFORM_DEADLETTERS,
    Topic,
)
from domain.bridge import bridge_tx_id_for
from domain.fx import FxBook, Quote
from domain.ledger import Leg, SettlementKind
from domain.money import Currency
from domain.timeconv import from_ms, to_ms
from streams.payouts import state as state_file
from streams.payouts.service import PayoutService, Record
from streams.payouts.settings import PayoutSettings
from streams.security.envelope import LocalSealer, open_text, seal_json

K = 1_000_000
T0 = to_ms(datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
HOLDER = "acct-holder-1"
RATE = Decimal("0.15")
Outputs = list[tuple[Topic, Any]]


def rule(rule_id: str = "r-thr", **changes: Any) -> m.AutoPayoutRule:
    fields: dict[str, Any] = {
        "rule_id": rule_id,
        "account_id": HOLDER,
        "trigger_type": "THRESHOLD",
        "threshold_kaus_units": 1_000 * K,
        "payout_provider": "STRIPE",
        "payout_currency": "USD",
        "payout_account": "acct_1Nv0FGQ9RKHgCVdK",
        "keep_minimum_kaus_units": 100 * K,
        "max_payout_per_tx_kaus_units": 5_000 * K,
    }
    return m.AutoPayoutRule.model_validate({**fields, **changes})


def of(out: Outputs, topic: Topic) -> list[Any]:
    return [v for t, v in out if t is topic]


@dataclass
class Harness:
    """The service and its inputs' offsets; records are made of contract messages, as the loop hands them."""

    settings: PayoutSettings = field(default_factory=lambda: PayoutSettings(mirror_wait_ms=5_000))
    now_ms: int = T0
    rate: Decimal | None = RATE
    offsets: dict[str, int] = field(default_factory=dict)
    transfers: int = 0
    service: PayoutService = field(init=False)

    def __post_init__(self) -> None:
        self.service = PayoutService(self.settings, self.book)

    def book(self) -> FxBook:
        if self.rate is None:
            return FxBook()
        return FxBook().with_quote(Quote("NEXUS_INTERNAL", "KAUS", Currency.USD, self.rate, self.now_ms))

    def send(self, topic: Topic, value: Any, key: bytes | None = None, partition: int = 0) -> Outputs:
        raw = value if value is None or isinstance(value, bytes) else topic.encode(value)
        if key is None and value is not None and not isinstance(value, bytes):
            key = topic.key_of(value)
        offset = self.offsets.get(topic.name, 0)
        self.offsets[topic.name] = offset + 1
        rec = Record(topic.name, partition, offset, key, raw, self.now_ms, self.now_ms)
        out = self.service.handle(rec)
        for t, v in out:  # every output is a valid contract message
            t.decode(t.encode(v))
        return out

    def move(self, debit: str, credit: str, units: int, **kw: Any) -> Outputs:
        self.transfers += 1
        transfer = m.LedgerTransfer(
            transfer_id=kw.pop("transfer_id", f"t-{self.transfers}"),
            debit_account_id=debit,
            credit_account_id=credit,
            asset="KAUS",
            amount_units=units,
            occurred_at=from_ms(self.now_ms),
            **kw,
        )
        return self.send(LEDGER_TRANSFERS, transfer, partition=self.transfers % 4)

    def deposit(self, units: int, account: str = HOLDER) -> Outputs:
        return self.move("sys:mint", account, units)

    def kyc(self, status: str, account: str = HOLDER, **contacts: str) -> Outputs:
        message = m.KycStatusChanged(
            account_id=account,
            status=status,
            provider="SUMSUB",
            applicant_id=f"app-{account}",
            event_id=f"evt-{account}-{self.offsets.get(KYC_STATUS.name, 0)}",
            occurred_at=from_ms(self.now_ms),
            **contacts,
        )
        return self.send(KYC_STATUS, message)

    def capture(self, payout_id: str, units: int) -> Outputs:
        """The ledger's records of the bridge's hold and capture for this payout (reference PAYOUT / payout id)."""
        hold = f"{bridge_tx_id_for(payout_id)}:hold"
        ref = {"kind": SettlementKind.PAYOUT, "id": payout_id}
        out = self.move(HOLDER, "bridge:settlement", units, transfer_id=hold, kind="PENDING",
                        reference=m.LedgerReference(**ref, leg=Leg.HOLD))  # fmt: skip
        return out + self.move(HOLDER, "bridge:settlement", units, transfer_id=f"{bridge_tx_id_for(payout_id)}:post",
                               kind="POST_PENDING", pending_id=hold,
                               reference=m.LedgerReference(**ref, leg=Leg.CAPTURE))  # fmt: skip

    def tick(self, advance_ms: int = 0) -> Outputs:
        self.now_ms += advance_ms
        return self.service.tick(self.now_ms)


def completed(payout_id: str, units: int, amount_minor: int, repeat: bool = False) -> m.BridgeSettlementCompleted:
    tx = bridge_tx_id_for(payout_id)
    return m.BridgeSettlementCompleted(
        request_id=payout_id, bridge_tx_id=tx, payer_account_id=HOLDER, merchant_id=HOLDER, region="US",
        currency="USD", amount_minor=amount_minor, kaus_debited_units=units, rate=RATE, rail="STRIPE_INSTANT",
        provider_reference="po_123", provider_fee_minor=25, cashback_kaus_units=0, ecosystem_bonus_kaus_units=0,
        phase_durations_ms={}, total_duration_ms=300, repeat=repeat, completed_at=datetime.now(UTC),
        payout_id=payout_id,
    )  # fmt: skip


def failed(payout_id: str, **changes: Any) -> m.BridgeSettlementFailed:
    fields: dict[str, Any] = {
        "request_id": payout_id, "bridge_tx_id": bridge_tx_id_for(payout_id), "payer_account_id": HOLDER,
        "region": "US", "currency": "USD", "amount_minor": 13_500, "failed_phase": "MERCHANT_CREDIT",
        "reason_code": "PROVIDER_DECLINED", "reason": "STRIPE declined the payout", "rail": "STRIPE_INSTANT",
        "failed_at": datetime.now(UTC), "payout_id": payout_id,
    }  # fmt: skip
    return m.BridgeSettlementFailed.model_validate({**fields, **changes})


def verified_holder(h: Harness, **contacts: str) -> None:
    h.kyc("VERIFIED", **contacts)


# --------------------------------------------------------------------------- rules in


def test_a_rule_the_core_refuses_is_dead_lettered_with_its_code_and_original_bytes() -> None:
    h = Harness()
    bad = rule(keep_minimum_kaus_units=2_000 * K)  # keep-minimum above the threshold: valid contract, cannot work
    raw = PAYOUT_RULES.encode(bad)
    out = h.send(PAYOUT_RULES, raw, key=b"r-thr")
    [letter] = of(out, PLATFORM_DEADLETTERS)
    assert letter.reason_code == "KEEP_MINIMUM_ABOVE_THRESHOLD" and "r-thr" in letter.reason
    assert base64.b64decode(letter.value_b64) == raw and (letter.source_topic, letter.source_offset) == (
        PAYOUT_RULES.name,
        0,
    )
    assert h.service.book.rule("r-thr") is None
    # a contract error (a float amount) is refused at ingress, with its bytes too
    wrong = json.dumps(rule().model_dump(mode="json") | {"threshold_kaus_units": 1.5}).encode()
    [letter] = of(h.send(PAYOUT_RULES, wrong, key=b"r-thr"), PLATFORM_DEADLETTERS)
    assert letter.reason_code == "WRONG_TYPE" and base64.b64decode(letter.value_b64) == wrong


def test_a_tombstone_deletes_the_rule_and_an_inactive_version_stops_it() -> None:
    h = Harness()
    verified_holder(h)
    h.send(PAYOUT_RULES, rule("r-a"))
    h.send(PAYOUT_RULES, None, key=b"r-a")  # tombstone
    assert h.service.book.rule("r-a") is None
    h.send(PAYOUT_RULES, rule("r-b"))
    h.send(PAYOUT_RULES, rule("r-b", is_active=False))  # a newer version, inactive
    assert h.service.book.rule("r-b") is not None
    out = h.deposit(5_000 * K) + h.tick(60_000)
    assert of(out, BRIDGE_REQUESTS) == [] and of(out, PAYOUT_REQUESTS) == []


# --------------------------------------------------------------------------- THRESHOLD and what a PAY becomes


def test_threshold_exactly_at_pays_nothing_one_unit_above_pays_the_excess_as_payout_and_bridge_request() -> None:
    h = Harness()
    verified_holder(h)
    h.send(PAYOUT_RULES, rule())
    assert h.deposit(1_000 * K) + h.tick(1_000) == []  # exactly at the threshold
    out = h.deposit(1)
    [request] = of(out, PAYOUT_REQUESTS)
    [bridge] = of(out, BRIDGE_REQUESTS)
    assert [t for t, _ in out] == [PAYOUT_REQUESTS, BRIDGE_REQUESTS]
    excess = 1_000 * K + 1 - 100 * K  # available less keep-minimum, to the unit
    assert (request.payout_id, request.amount_kaus_units, request.trigger_type, request.trigger_id) == (
        "r-thr:T0",
        excess,
        m.PayoutTrigger.THRESHOLD,
        "T0",
    )
    assert (request.provider, request.currency, request.account_id, request.rule_id) == (
        "STRIPE",
        "USD",
        HOLDER,
        "r-thr",
    )
    assert bridge.request_id == request.payout_id and bridge.payer_account_id == bridge.merchant_id == HOLDER
    assert bridge.payout == m.HolderPayout(
        rule_id="r-thr", provider="STRIPE", payout_account="acct_1Nv0FGQ9RKHgCVdK", amount_kaus_units=excess
    )
    assert (bridge.region, bridge.currency, bridge.quoted_rate) == ("US", "USD", RATE)
    assert bridge.amount_minor == 13_500  # 900.000001 K-AUS x 0.15, rounded down to the cent
    assert bridge.payer_tier == "BRONZE" and bridge.merchant_program is None


def test_threshold_payout_is_capped_by_max_per_tx_and_one_payout_is_in_flight() -> None:
    h = Harness()
    verified_holder(h)
    h.send(PAYOUT_RULES, rule(max_payout_per_tx_kaus_units=300 * K))
    [request] = of(h.deposit(2_000 * K), PAYOUT_REQUESTS)
    assert request.amount_kaus_units == 300 * K
    assert of(h.deposit(K), PAYOUT_REQUESTS) == []  # the first is in flight: nothing else for the account


def test_no_fresh_rate_keeps_the_payout_until_the_next_tick_has_one() -> None:
    h = Harness(rate=None)
    verified_holder(h)
    h.send(PAYOUT_RULES, rule())
    assert h.deposit(2_000 * K) == []
    assert h.tick(1_000) == []
    h.rate = RATE
    out = h.tick(1_000)
    [request] = of(out, PAYOUT_REQUESTS)
    assert request.payout_id == "r-thr:T0" and len(of(out, BRIDGE_REQUESTS)) == 1
    assert of(h.tick(1_000), BRIDGE_REQUESTS) == []  # sent once


# --------------------------------------------------------------------------- KYC


def test_kyc_pending_waits_once_without_a_bridge_request_then_verified_pays_under_the_same_id() -> None:
    h = Harness()
    h.kyc("PENDING", email="holder@example.com", phone="+61400000000")
    h.send(PAYOUT_RULES, rule())
    out = h.deposit(2_000 * K)
    [waiting] = of(out, PAYOUT_WAITING)
    assert (waiting.payout_id, waiting.reason_code, waiting.amount_kaus_units) == ("r-thr:T0", "KYC_PENDING", 1_900 * K)
    assert of(out, BRIDGE_REQUESTS) == [] and of(out, PAYOUT_REQUESTS) == []
    notes = of(out, NOTIFICATIONS_HOLDERS)
    assert sorted(n.notification_id for n in notes) == ["r-thr:T0:PAYOUT_WAITING:EMAIL", "r-thr:T0:PAYOUT_WAITING:SMS"]
    assert "1,900.000000 K-AUS" in notes[0].text and "acct_1Nv0FGQ9RKHgCVdK" not in notes[0].text
    # re-evaluated on every movement and tick: reported once, also by a restarted service
    assert h.deposit(K) + h.tick(60_000) == []
    h.service = PayoutService(h.settings, h.book, json.loads(json.dumps(h.service.to_dict())))
    assert h.tick(60_000) == []
    out = h.kyc("VERIFIED", email="holder@example.com")
    [request] = of(out, PAYOUT_REQUESTS)
    assert request.payout_id == "r-thr:T0" and request.amount_kaus_units == 1_901 * K
    assert len(of(out, BRIDGE_REQUESTS)) == 1 and of(out, PAYOUT_WAITING) == []


# --------------------------------------------------------------------------- results


def paid_once(h: Harness) -> tuple[str, int]:
    verified_holder(h, email="holder@example.com", phone="+61400000000", push_token="fcm-token-1")
    h.send(PAYOUT_RULES, rule())
    [request] = of(h.deposit(2_000 * K), PAYOUT_REQUESTS)
    return request.payout_id, request.amount_kaus_units


def test_a_paid_result_is_reported_once_with_a_notification_per_channel_and_repeats_add_nothing() -> None:
    h = Harness()
    payout_id, units = paid_once(h)
    h.capture(payout_id, units)
    out = h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(payout_id, units, 28_500))
    [result] = of(out, PAYOUT_RESULTS)
    assert (result.payout_id, result.status, result.provider, result.rule_id) == (payout_id, "PAID", "STRIPE", "r-thr")
    assert (result.kaus_debited_units, result.amount_minor, result.fee_minor, result.rail) == (
        units,
        28_500,
        25,
        "STRIPE_INSTANT",
    )
    assert result.bridge_tx_id == bridge_tx_id_for(payout_id) and result.account_id == HOLDER
    notes = of(out, NOTIFICATIONS_HOLDERS)
    assert {n.notification_id for n in notes} == {f"{payout_id}:PAYOUT_COMPLETED:{c}" for c in ("EMAIL", "SMS", "PUSH")}
    assert {n.destination for n in notes} == {"holder@example.com", "+61400000000", "fcm-token-1"}
    assert notes[0].text == "1,900.000000 K-AUS paid out as 285.00 USD to your STRIPE account ending CVdK."
    assert h.service.book.in_flight(HOLDER) is None
    # the bridge answers a repeated request id again, marked repeat; the same record may be read twice
    assert h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(payout_id, units, 28_500, repeat=True)) == []
    assert h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(payout_id, units, 28_500)) == []


def test_only_a_repeat_answers_a_payout_still_in_flight_and_a_repeat_of_an_unknown_payout_is_ignored() -> None:
    h = Harness()
    payout_id, units = paid_once(h)
    # the first answer was read before a restart re-decided the payout; the re-sent request got the repeat
    h.capture(payout_id, units)
    out = h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(payout_id, units, 28_500, repeat=True))
    assert [r.payout_id for r in of(out, PAYOUT_RESULTS)] == [payout_id]
    assert h.service.book.in_flight(HOLDER) is None
    other = "r-thr:T7"  # never decided here: a repeat says nothing new
    assert h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(other, units, 28_500, repeat=True)) == []


def test_a_result_the_service_has_no_record_of_is_reported_from_the_rule_its_id_names() -> None:
    h = Harness()
    verified_holder(h, email="holder@example.com")
    h.send(PAYOUT_RULES, rule(threshold_kaus_units=10_000 * K))  # nothing decided: the state of a lost payout
    [result] = of(h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed("r-thr:T3", 500 * K, 7_500)), PAYOUT_RESULTS)
    assert (result.payout_id, result.rule_id, result.provider, result.kaus_debited_units) == (
        "r-thr:T3",
        "r-thr",
        "STRIPE",
        500 * K,
    )
    assert h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed("r-gone:D2026-03-01", K, 15)) == []  # no such rule


def test_a_failed_result_is_reported_notified_and_backs_the_account_off() -> None:
    h = Harness()
    payout_id, units = paid_once(h)
    hold = f"{bridge_tx_id_for(payout_id)}:hold"
    h.move(HOLDER, "bridge:settlement", units, transfer_id=hold, kind="PENDING")
    h.move(HOLDER, "bridge:settlement", units, transfer_id=f"{hold}:void", kind="VOID_PENDING", pending_id=hold)
    out = h.send(BRIDGE_SETTLEMENTS_FAILED, failed(payout_id))
    [result] = of(out, PAYOUT_RESULTS)
    assert (result.status, result.reason_code, result.failed_phase, result.kaus_debited_units) == (
        "FAILED",
        "PROVIDER_DECLINED",
        "MERCHANT_CREDIT",
        None,
    )
    assert len(of(out, NOTIFICATIONS_HOLDERS)) == 3
    assert "Nothing was debited" in of(out, NOTIFICATIONS_HOLDERS)[0].text
    assert of(out, BRIDGE_REQUESTS) == []  # backed off: the balance is still above the threshold
    assert h.service.book.in_flight(HOLDER) is None
    assert of(h.tick(3_599_999), PAYOUT_REQUESTS) == []  # a decline backs off an hour
    [retry] = of(h.tick(1), PAYOUT_REQUESTS)  # after the back-off, the next threshold payout
    assert retry.payout_id == "r-thr:T1"


def test_a_payout_the_ledger_did_not_hold_in_time_is_asked_again_after_a_minute_not_an_hour() -> None:
    h = Harness()
    payout_id, _units = paid_once(h)
    # the P2P worker was restarting: the bridge's hold went unanswered, nothing moved (no hold, no void)
    reason = "ledger refused the hold: LEDGER_TIMEOUT: no answer in 10.0s"
    out = h.send(BRIDGE_SETTLEMENTS_FAILED, failed(payout_id, reason_code="HOLD_REJECTED", failed_phase="BALANCE_LOCK",
                                                   reason=reason, rail=None))  # fmt: skip
    [result] = of(out, PAYOUT_RESULTS)
    assert (result.status, result.reason_code) == ("FAILED", "HOLD_REJECTED")
    assert of(h.tick(5_000), PAYOUT_REQUESTS) == []  # the mirror wait: no movement to wait for, then applied
    assert h.service.book.in_flight(HOLDER) is None
    assert of(h.tick(54_999), PAYOUT_REQUESTS) == []
    [retry] = of(h.tick(1), PAYOUT_REQUESTS)  # a minute after the failure: the next threshold payout
    assert retry.payout_id == "r-thr:T1"


def test_a_result_waiting_in_a_state_written_before_failure_codes_keeps_its_back_off() -> None:
    h = Harness()
    payout_id, _units = paid_once(h)
    state = h.service.to_dict()
    assert state["pending"] == []
    # how the previous version wrote a paused refusal waiting for the mirror: no code, "back_off": False
    row = {"kind": "result", "id": payout_id, "account_id": HOLDER, "deadline_ms": h.now_ms + 5_000, "paid": False,
           "source": "", "amount_units": 0, "back_off": False}  # fmt: skip
    h.service = PayoutService(h.settings, h.book, {**state, "pending": [row]})
    assert [p.failure_code for p in h.service.pending] == ["PAUSED"]
    [retry] = of(h.tick(5_000), PAYOUT_REQUESTS)  # applied at the mirror's deadline: no back-off, paid again at once
    assert retry.payout_id == "r-thr:T1"


# --------------------------------------------------------------------------- the mirror-lag guard


def test_a_result_waits_for_the_capture_in_the_mirror_before_deciding_again() -> None:
    h = Harness()
    payout_id, units = paid_once(h)
    # the bridge's answer is read before the ledger's capture record: the balance read now would still hold the
    # paid-out K-AUS, so a threshold decision now would pay them again
    out = h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(payout_id, units, 28_500))
    assert len(of(out, PAYOUT_RESULTS)) == 1 and of(out, BRIDGE_REQUESTS) == []
    assert h.service.book.in_flight(HOLDER) is not None  # on_result not applied yet
    assert of(h.tick(1_000), BRIDGE_REQUESTS) == []
    out = h.capture(payout_id, units)
    assert h.service.book.in_flight(HOLDER) is None and of(out, BRIDGE_REQUESTS) == []  # 100 K-AUS left: below


def test_the_wait_for_the_mirror_is_bounded() -> None:
    h = Harness()
    payout_id, units = paid_once(h)
    h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(payout_id, units, 28_500))
    assert h.service.book.in_flight(HOLDER) is not None
    h.tick(4_999)
    assert h.service.book.in_flight(HOLDER) is not None
    out = h.tick(1)  # mirror_wait_ms ran out: applied without it (logged), on the balance the mirror has
    flight = h.service.book.in_flight(HOLDER)
    assert flight is not None and flight.payout_id != payout_id
    # which still holds the paid-out K-AUS: the next payout is decided on them (the ledger refuses its hold)
    assert [r.payout_id for r in of(out, PAYOUT_REQUESTS)] == ["r-thr:T1"]


def test_a_dividend_waits_for_its_credit_in_the_mirror() -> None:
    h = Harness()
    verified_holder(h)
    div = rule("r-div", trigger_type="DIVIDEND", threshold_kaus_units=None, dividend_source="STAKING",
               payout_provider="WISE", payout_currency="EUR", keep_minimum_kaus_units=0)  # fmt: skip
    h.send(PAYOUT_RULES, div)
    h.rate = RATE  # the book quotes USD only: add EUR
    h.service._rates = lambda: FxBook().with_quote(Quote("NEXUS_INTERNAL", "KAUS", Currency.EUR, RATE, h.now_ms))
    declared = m.DividendDeclared(dividend_id="div-1:acct", account_id=HOLDER, source="STAKING",
                                  amount_kaus_units=40 * K, declared_at=from_ms(h.now_ms))  # fmt: skip
    assert h.send(DIVIDENDS_DECLARED, declared) == []  # its credit is not in the mirror yet
    [request] = of(h.move("sys:dividends", HOLDER, 40 * K, transfer_id="div-1:acct"), PAYOUT_REQUESTS)
    assert (request.payout_id, request.amount_kaus_units, request.currency) == ("r-div:Vdiv-1:acct", 40 * K, "EUR")


# --------------------------------------------------------------------------- state


def schedule_rule() -> m.AutoPayoutRule:
    return rule("r-day", trigger_type="SCHEDULE", threshold_kaus_units=None, schedule_type="DAILY",
                schedule_time_utc="12:30")  # fmt: skip


def test_state_round_trip_then_the_same_schedule_period_does_not_pay_again(tmp_path: Path) -> None:
    h = Harness()
    verified_holder(h, email="holder@example.com")
    h.send(PAYOUT_RULES, schedule_rule())  # written at 12:00: today's 12:30 pays
    h.deposit(500 * K)
    assert h.tick(29 * 60_000) == []
    [request] = of(h.tick(60_000), PAYOUT_REQUESTS)  # 12:30
    assert request.payout_id == "r-day:D2026-03-05" and request.amount_kaus_units == 400 * K
    h.capture(request.payout_id, 400 * K)
    h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(request.payout_id, 400 * K, 6_000))
    h.deposit(500 * K)
    path = tmp_path / "payouts" / "state.json"
    state_file.save(path, h.service.to_dict())
    assert path.stat().st_mode & 0o777 == 0o600  # holds contacts: owner only

    restored = PayoutService(h.settings, h.book, state_file.load(path))
    assert restored.to_dict() == h.service.to_dict()
    assert restored.offsets == {f"{t}:{p}": o + 1 for t, p, o in last_offsets(h)}
    for later in (60_000, 6 * 3_600_000):  # the same day, again and again: paid once
        h.now_ms += later
        assert of(restored.tick(h.now_ms), BRIDGE_REQUESTS) == []
    h.now_ms += 18 * 3_600_000
    [tomorrow] = of(restored.tick(h.now_ms), PAYOUT_REQUESTS)
    assert tomorrow.payout_id == "r-day:D2026-03-06"


def last_offsets(h: Harness) -> Iterable[tuple[str, int, int]]:
    return [(k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]), v - 1) for k, v in h.service.offsets.items()]


def test_the_rules_clock_offset_moves_schedules_only() -> None:
    h = Harness(settings=PayoutSettings(clock_offset_ms=40 * 60_000))
    verified_holder(h)
    h.deposit(500 * K)
    out = h.send(PAYOUT_RULES, schedule_rule())  # written at 12:00 by its record, read at 12:40 by the rules' clock
    [request] = of(out, PAYOUT_REQUESTS)
    assert request.payout_id == "r-day:D2026-03-05"
    assert to_ms(request.requested_at) == h.now_ms  # records keep the wall clock


def test_replaying_decides_nothing_until_caught_up() -> None:
    h = Harness()
    verified_holder(h)
    h.send(PAYOUT_RULES, rule())
    h.service.replaying = True
    assert h.deposit(5_000 * K) + h.tick(1_000) == []
    [request] = of(h.service.caught_up(h.now_ms), PAYOUT_REQUESTS)
    assert request.amount_kaus_units == 4_900 * K


@pytest.mark.parametrize("units", [1, 2_000 * K])
def test_every_output_of_a_decision_is_a_valid_contract_record(units: int) -> None:
    h = Harness()
    verified_holder(h, email="holder@example.com")
    h.send(PAYOUT_RULES, rule(threshold_kaus_units=0, keep_minimum_kaus_units=0))
    out = h.deposit(units)  # Harness.send decodes every output
    [bridge] = of(out, BRIDGE_REQUESTS)
    assert bridge.amount_minor >= 1  # the estimate of a tiny payout is still a positive amount


# --------------------------------------------------------------------------- sealing on (issue 18 item 2)

PLAIN = ("acct_1Nv0FGQ9RKHgCVdK", "holder@example.com", "+61400000000", "fcm-token-1")


def sealed_harness() -> tuple[Harness, LocalSealer]:
    h, sealer = Harness(), LocalSealer(os.urandom(32))
    h.service = PayoutService(h.settings, h.book, sealer=sealer)
    return h, sealer


def test_sealing_on_requests_notifications_and_the_state_carry_no_plain_personal_data(tmp_path: Path) -> None:
    h, sealer = sealed_harness()
    contacts = {"email": "holder@example.com", "phone": "+61400000000", "push_token": "fcm-token-1"}
    h.kyc("VERIFIED", contacts_sealed=seal_json(sealer, contacts))  # as the KYC receiver writes it
    h.send(PAYOUT_RULES, rule())  # plain on payouts.rules (upstream)
    out = h.deposit(2_000 * K)
    [request], [bridge] = of(out, PAYOUT_REQUESTS), of(out, BRIDGE_REQUESTS)
    assert request.payout_account == bridge.payout.payout_account == "****CVdK"
    for sealed in (request.payout_account_sealed, bridge.payout.payout_account_sealed):
        assert open_text(sealer, sealed) == "acct_1Nv0FGQ9RKHgCVdK"
    h.capture(request.payout_id, request.amount_kaus_units)
    out = h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed(request.payout_id, request.amount_kaus_units, 28_500))
    notes = of(out, NOTIFICATIONS_HOLDERS)
    assert {n.destination for n in notes} == {"h***@example.com", "+61*****0000", "fcm-***"}
    assert {open_text(sealer, n.destination_sealed) for n in notes} == set(contacts.values())
    assert notes[0].text.endswith("to your STRIPE account ending CVdK.")
    wire = b"".join(t.encode(v) for t, v in out) + PAYOUT_REQUESTS.encode(request) + BRIDGE_REQUESTS.encode(bridge)
    path = tmp_path / "state.json"
    state_file.save(path, h.service.to_dict())
    for plain in PLAIN:
        assert plain.encode() not in wire and plain.encode() not in path.read_bytes(), plain
    restored = PayoutService(h.settings, h.book, state_file.load(path), sealer=sealer)
    assert restored.to_dict() == h.service.to_dict()


def test_sealing_on_plain_contacts_from_an_older_producer_are_sealed_when_kept() -> None:
    h, sealer = sealed_harness()
    h.kyc("VERIFIED", email="holder@example.com")
    kept = h.service.contacts[HOLDER]
    assert kept.masked == {"EMAIL": "h***@example.com"} and kept.email is not None
    assert open_text(sealer, kept.email) == "holder@example.com"


def test_a_sealed_kyc_record_this_service_cannot_open_is_dead_lettered() -> None:
    h, _ = sealed_harness()
    other = LocalSealer(os.urandom(32))
    out = h.kyc("VERIFIED", contacts_sealed=seal_json(other, {"email": "holder@example.com"}))
    [letter] = of(out, PLATFORM_DEADLETTERS)
    assert "holder@example.com" not in letter.reason and HOLDER not in h.service.contacts


def test_a_payout_decided_again_after_a_crash_keeps_the_amount_it_was_sent_with() -> None:
    """Killed after deciding and sending r-thr:T0 but before saving, the service restarts from its last save; a
    deposit arrived meanwhile. It reads its own payouts.requests back before deciding (the loop's catch-up), so the
    re-decided T0 says the amount the bridge was sent (and pays), not one from the new balance."""
    h = Harness()
    verified_holder(h)
    h.send(PAYOUT_RULES, rule())  # THRESHOLD 1,000 K-AUS, keep-minimum 100 K-AUS
    saved = h.service.to_dict()
    [first] = of(h.move("sys:mint", HOLDER, 2_000 * K, transfer_id="dep-1"), PAYOUT_REQUESTS)
    assert (first.payout_id, first.amount_kaus_units) == ("r-thr:T0", 1_900 * K)
    h.service = PayoutService(h.settings, h.book, saved)  # SIGKILL; started again from the last save
    h.service.replaying = True
    h.send(PAYOUT_REQUESTS, first)  # its own output, read back during the catch-up
    h.move("sys:mint", HOLDER, 2_000 * K, transfer_id="dep-1")  # read again
    h.move("sys:mint", HOLDER, 500 * K, transfer_id="dep-2")  # arrived while it was down
    outputs = h.service.caught_up(h.now_ms)
    again = [r for r in of(outputs, PAYOUT_REQUESTS) if r.payout_id == first.payout_id]
    assert [r.amount_kaus_units for r in again] == [first.amount_kaus_units]
    [bridge] = [b for b in of(outputs, BRIDGE_REQUESTS) if b.request_id == first.payout_id]
    assert bridge.payout is not None and bridge.payout.amount_kaus_units == first.amount_kaus_units


def test_without_its_own_requests_read_back_a_restart_would_decide_another_amount() -> None:
    """The control for the test above: the same crash, nothing read back, and T0 goes out for the new balance."""
    h = Harness()
    verified_holder(h)
    h.send(PAYOUT_RULES, rule())
    saved = h.service.to_dict()
    [first] = of(h.move("sys:mint", HOLDER, 2_000 * K, transfer_id="dep-1"), PAYOUT_REQUESTS)
    h.service = PayoutService(h.settings, h.book, saved)
    h.service.replaying = True
    h.move("sys:mint", HOLDER, 2_000 * K, transfer_id="dep-1")
    h.move("sys:mint", HOLDER, 500 * K, transfer_id="dep-2")
    again = [r for r in of(h.service.caught_up(h.now_ms), PAYOUT_REQUESTS) if r.payout_id == first.payout_id]
    assert [r.amount_kaus_units for r in again] == [2_400 * K]
