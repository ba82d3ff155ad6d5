"""Holders paid out through the High-Speed Bridge (issue 17 item 4), on real Kafka with the platform ledger and the
provider simulator, the bridge on the plain runtime (``streams.p2p`` ledger + ``streams.bridge.loop``, two processes).

A ``bridge.requests`` record with a ``payout`` block is paid through its provider only, with exactly its K-AUS held
and captured (ledger.transfers filed under PAYOUT / the payout id), and answered with its ``payout_id``; a provider
failure voids the hold and moves nothing; a bridge SIGKILLed between the provider's payout and the result pays the
holder exactly once after restart, with one result (plus, at most, the repeat of the re-delivered request).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
)
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import kaus_to_minor_floor
from domain.fx import kaus_to_minor
from domain.money import Currency
from domain.rails import Provider, payout_region
from streams.bridge.providers.base import uuid_for_key
from tests.integration.provider_fixtures import provider_sim, sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import (  # noqa: F401  (fx_feed is a fixture)
    FUNDS_UNITS,
    balance,
    but_repeat,
    deposit,
    fx_feed,
    open_holds,
    quoted_rate,
    results_for,
    transfers_of,
    values,
)
from tests.support.kafka_io import KafkaIO

pytestmark = pytest.mark.slow

UNITS = 123_456_789  # 123.456789 K-AUS per payout


@pytest.fixture
def start_bridge(worker_factory: Any, sim: ProviderSimProcess, sim_keys_dir: Path) -> Callable[..., Any]:
    """The ledger (streams.p2p) and the bridge (streams.bridge.loop) against the simulator; returns the bridge."""
    provider = {"provider_sim_url": sim.url, "provider_keys_dir": str(sim_keys_dir), "provider_transport": "aiohttp"}

    def start(**env: str) -> Any:
        worker_factory(module="streams.p2p", agents="settlement")
        return worker_factory(module="streams.bridge.loop", **provider, **env)

    return start


def payout_request(
    payout_id: str, holder: str, provider: Provider, account: str, ccy: Currency = Currency.USD, units: int = UNITS
) -> m.BridgeRequest:
    """As the auto-payout service sends it: the holder pays and is paid, amount_minor an estimate."""
    region = payout_region(provider, ccy)
    assert region is not None
    quoted = quoted_rate(ccy)
    return m.BridgeRequest(
        request_id=payout_id,
        payer_account_id=holder,
        merchant_id=holder,
        amount_minor=max(1, kaus_to_minor(units, quoted, ccy)),
        currency=ccy,
        region=m.Region(region.value),
        payer_tier=m.PayerTier.BRONZE,
        quoted_rate=quoted,
        requested_at=datetime.now(UTC),
        payout=m.HolderPayout(rule_id=f"rule-{payout_id}", provider=provider.value, payout_account=account,
                              amount_kaus_units=units),
    )  # fmt: skip


def payout_legs(transfers: list[dict[str, Any]], payout_id: str) -> dict[str, int]:
    """The payout's movements on ledger.transfers by leg (each must name the payout)."""
    legs: dict[str, int] = {}
    for t in transfers:
        ref = t.get("reference") or {}
        if t["transfer_id"].startswith(f"BRIDGE-{payout_id}:"):
            assert (ref.get("kind"), ref.get("id")) == ("PAYOUT", payout_id), t
            legs[ref["leg"]] = legs.get(ref["leg"], 0) + t["amount_units"]
    return legs


def audits_of(kafka: KafkaIO, payout_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    tx_ids = {f"BRIDGE-{p}": p for p in payout_ids}
    found: dict[str, list[dict[str, Any]]] = {}

    def seen(records: list[Any]) -> bool:
        found.clear()
        for a in values(records):
            if a.get("transactionId") in tx_ids:
                found.setdefault(tx_ids[a["transactionId"]], []).append(a)
        return found.keys() == payout_ids

    kafka.wait_for(AUDIT_RECORDS, seen, timeout_s=30)
    return found


def test_payouts_are_paid_once_through_their_own_provider_with_exactly_their_kaus(
    kafka: KafkaIO, sim: ProviderSimProcess, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    holder = f"acct-holder-{run_id}"
    deposit(kafka, holder, FUNDS_UNITS)
    start_bridge()
    cases = {
        f"po-paypal-{run_id}": (Provider.PAYPAL, f"{holder}@example.com", Currency.USD, "PAYPAL"),
        f"po-stripe-{run_id}": (Provider.STRIPE, "acct_1Holder9", Currency.EUR, "STRIPE_SEPA"),
        f"po-wise-{run_id}": (Provider.WISE, "48213377", Currency.USD, "WISE"),
        f"po-toss-{run_id}": (Provider.TOSS, "nxholder01", Currency.KRW, "TOSS_PAYMENTS"),
    }
    kafka.produce_messages(
        BRIDGE_REQUESTS, [payout_request(p, holder, prov, acct, ccy) for p, (prov, acct, ccy, _) in cases.items()]
    )
    answers = results_for(kafka, set(cases))
    paid = sim.payouts()
    for payout_id, (provider, account, ccy, rail) in cases.items():
        [answer] = answers[payout_id]
        assert answer["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name, answer
        assert (answer["payout_id"], answer["rail"], answer["primary_rail"]) == (payout_id, rail, rail)
        assert (answer["kaus_debited_units"], answer["cashback_kaus_units"], answer["ecosystem_bonus_kaus_units"]) == (
            UNITS, 0, 0
        )  # fmt: skip
        assert answer["amount_minor"] == kaus_to_minor_floor(UNITS, Decimal(answer["rate"]), ccy) > 0
        key = f"BRIDGE-{payout_id}"  # Wise's idempotency field is a UUID: the one derived from the key
        key = uuid_for_key(key) if provider is Provider.WISE else key
        [at_provider] = [p for p in paid if p["idempotency_key"] == key]
        assert (at_provider["provider"], at_provider["counterparty"]) == (provider.value, account)
        assert (at_provider["amount_minor"], at_provider["currency"]) == (answer["amount_minor"], ccy.value)
    assert len(paid) == len(cases)  # one payout each, at its own provider

    # a repeated payout id: the original answer again, marked repeat, nothing paid twice
    paypal_id = f"po-paypal-{run_id}"
    kafka.produce_messages(BRIDGE_REQUESTS, [payout_request(paypal_id, holder, Provider.PAYPAL, cases[paypal_id][1])])
    kafka.wait_for(
        BRIDGE_SETTLEMENTS_COMPLETED, lambda rs: sum(v.get("request_id") == paypal_id for v in values(rs)) == 2
    )
    first, again = [v for v in values(kafka.read_all(BRIDGE_SETTLEMENTS_COMPLETED)) if v["request_id"] == paypal_id]
    assert (first["repeat"], again["repeat"], but_repeat(first)) == (False, True, but_repeat(again))
    assert len(sim.payouts()) == len(cases)

    transfers = transfers_of(kafka, holder)
    for payout_id in cases:
        assert payout_legs(transfers, payout_id) == {"HOLD": UNITS, "CAPTURE": UNITS}  # no margin, no cashback
    assert balance(transfers, holder) == FUNDS_UNITS - len(cases) * UNITS and open_holds(transfers) == set()
    audits = audits_of(kafka, set(cases))
    assert {p: [a["action"] for a in audits[p]] for p in cases} == {key: ["PAYOUT_COMPLETED"] for key in cases}
    assert all(a["actor"]["userId"] == holder for rs in audits.values() for a in rs)


def test_a_provider_failure_voids_the_payout_hold_and_moves_nothing(
    kafka: KafkaIO, sim: ProviderSimProcess, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    holder = f"acct-fail-{run_id}"
    deposit(kafka, holder, FUNDS_UNITS)
    sim.configure({"PAYPAL": {"fail_next": 1}, "WISE": {"decline_next": 1}})  # 503 (not executed); a business 4xx
    start_bridge()
    down, declined, invalid = f"po-down-{run_id}", f"po-declined-{run_id}", f"po-invalid-{run_id}"
    kafka.produce_messages(
        BRIDGE_REQUESTS,
        [
            payout_request(down, holder, Provider.PAYPAL, f"{holder}@example.com"),
            payout_request(declined, holder, Provider.WISE, "48213377"),
            payout_request(invalid, holder, Provider.WISE, "GB29NWBK60161331926819"),  # an IBAN: not a recipient id
        ],
    )
    answers = results_for(kafka, {down, declined, invalid})
    expected = {down: "PAYOUT_FAILED", declined: "PROVIDER_DECLINED", invalid: "PROVIDER_DECLINED"}
    for payout_id, code in expected.items():
        [answer] = answers[payout_id]
        assert answer["topic"] == BRIDGE_SETTLEMENTS_FAILED.name, answer
        assert (answer["payout_id"], answer["failed_phase"], answer["reason_code"]) == (
            payout_id, "MERCHANT_CREDIT", code
        )  # fmt: skip
    assert "INVALID_PAYOUT_ACCOUNT" in answers[invalid][0]["reason"]
    assert sim.payouts() == []  # nothing paid, and no other provider tried (no failover for a payout)
    assert sim.stats().get("STRIPE.payouts", 0) == 0
    transfers = transfers_of(kafka, holder)
    for payout_id in expected:
        assert payout_legs(transfers, payout_id) == {"HOLD": UNITS, "RELEASE": UNITS}
    assert balance(transfers, holder) == FUNDS_UNITS and open_holds(transfers) == set()
    audits = audits_of(kafka, set(expected))
    assert {p: [a["action"] for a in audits[p]] for p in expected} == {key: ["PAYOUT_FAILED"] for key in expected}


def test_sigkill_between_the_payout_and_its_result_pays_the_holder_once_after_restart(
    kafka: KafkaIO, sim: ProviderSimProcess, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    holder = f"acct-killpo-{run_id}"
    deposit(kafka, holder, FUNDS_UNITS)
    # PayPal executes the payout but its answer never comes back (the worker waits up to 120 s).
    sim.configure({"PAYPAL": {"timeout_next": 1, "hang_ms": 60_000}})
    worker = start_bridge(provider_timeout_ms="120000")
    payout_id = f"po-kill-{run_id}"
    kafka.produce_messages(BRIDGE_REQUESTS, [payout_request(payout_id, holder, Provider.PAYPAL, "kill@example.com")])
    deadline = time.monotonic() + 60
    while sim.stats().get("PAYPAL.payouts", 0) < 1:
        assert time.monotonic() < deadline, "the provider never saw the payout"
        time.sleep(0.1)
    journal = [v for v in values(kafka.read_all(BRIDGE_PAYOUTS_JOURNAL)) if v["request_id"] == payout_id]
    assert [bool(v["intent"]) for v in journal] == [True]  # journaled before the call, with the payout block
    assert journal[0]["intent"]["request"]["payout"]["amount_kaus_units"] == UNITS
    worker.kill()
    assert len(sim.payouts()) == 1

    worker.extra_env["NEXUS_PROVIDER_TIMEOUT_MS"] = "2000"
    worker.start()  # the journal says a payout is out: recovery asks PayPal under the same sender_batch_id
    results = results_for(kafka, {payout_id})[payout_id]
    result = results[0]
    assert result["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name and result["payout_id"] == payout_id
    assert all(but_repeat(r) == but_repeat(result) for r in results) and len(results) <= 2
    assert [r["repeat"] for r in results] == [False, True][: len(results)]
    assert result["kaus_debited_units"] == UNITS and result["cashback_kaus_units"] == 0
    [paid] = sim.payouts()  # once, for the one idempotency key
    assert (paid["idempotency_key"], paid["amount_minor"]) == (f"BRIDGE-{payout_id}", result["amount_minor"])
    journal = [v for v in values(kafka.read_all(BRIDGE_PAYOUTS_JOURNAL)) if v["request_id"] == payout_id]
    assert journal[-1]["completed"] is not None and journal[-1]["completed"]["payout_id"] == payout_id
    transfers = transfers_of(kafka, holder)
    assert payout_legs(transfers, payout_id) == {"HOLD": UNITS, "CAPTURE": UNITS}
    assert sum(t["kind"] == "POST_PENDING" for t in transfers) == 1 and open_holds(transfers) == set()
    assert balance(transfers, holder) == FUNDS_UNITS - UNITS
    assert [a["action"] for a in audits_of(kafka, {payout_id})[payout_id]] == ["PAYOUT_COMPLETED"]
