"""Helpers for end-to-end tests of money leaving the platform (issue 17): a live FX feed, card payment requests,
and a fold of ``ledger.transfers`` into balances, holds and references.

The fold is the test's own reading of the ledger's records, not the platform's code: a test compares it with what
the services said they did (deposits sent, bridge answers, payout results, dividend declarations).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from contracts import models as m
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, FX_RATES, TOPICS
from devtools.fx_feed import domain_quotes, fx_quotes
from domain.fx import FxBook
from domain.money import Currency
from tests.support.kafka_io import KafkaIO, Record

KAUS = "KAUS"
CARBON = "CARBON_MILLICREDIT"
POSTED_KINDS = ("POSTED", "POST_PENDING")  # the kinds that move money; PENDING reserves, VOID_PENDING releases


def wait_until_served(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Every partition of the registry's topics answers (a fresh broker elects their leaders a while after it
    created them; a service that asks before may stop with NOT_LEADER_FOR_PARTITION)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "money-out-probe", "enable.auto.commit": False})
    deadline = time.monotonic() + timeout_s
    try:
        for name in TOPICS:
            for p in consumer.list_topics(name, timeout=30).topics[name].partitions:
                while True:
                    try:
                        consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                        break
                    except KafkaException:
                        assert time.monotonic() < deadline, f"{name}[{p}] has no leader after {timeout_s} s"
                        time.sleep(0.2)
    finally:
        consumer.close()


class FxFeed:
    """Fresh quotes from every source every 0.5 s (the bridge and the payouts service refuse quotes older than 10 s)."""

    def __init__(self, kafka: KafkaIO, day: date) -> None:
        self.kafka, self.day = kafka, day
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FxFeed:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fx-feed", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.kafka.produce_messages(FX_RATES, fx_quotes(self.day, 0, datetime.now(UTC)))
            self._stop.wait(0.5)


def quoted_rate(day: date, currency: Currency) -> Decimal:
    """The combined rate the payer is shown now (what the FX feed publishes)."""
    now_ms = time.time_ns() // 1_000_000
    return FxBook().with_quotes(domain_quotes(day, 0, now_ms)).combined_rate(currency, now_ms).rate


def card_payment(
    day: date,
    request_id: str,
    payer: str,
    amount_minor: int,
    currency: Currency,
    region: m.Region,
    tier: m.PayerTier,
    program: str | None,
) -> m.BridgeRequest:
    """A card payment over the bridge (a merchant paid in fiat from the payer's K-AUS)."""
    return m.BridgeRequest.model_validate(
        {
            "request_id": request_id,
            "payer_account_id": payer,
            "merchant_id": f"merchant-{request_id}",
            "merchant_program": program,
            "amount_minor": amount_minor,
            "currency": currency,
            "region": region,
            "payer_tier": tier,
            "quoted_rate": quoted_rate(day, currency),
            "requested_at": datetime.now(UTC),
        }
    )


def bridge_answers(kafka: KafkaIO) -> dict[str, list[dict[str, Any]]]:
    """Every bridge answer (completed or failed) by request id, each tagged with its topic."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic in (BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED):
        for r in kafka.read_all(topic):
            if r.value:
                v = json.loads(r.value)
                found[v["request_id"]].append({"topic": topic.name, **v})
    return found


def decoded(records: Iterable[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.value]


@dataclass
class LedgerFold:
    """Posted balances per (asset, account), holds and references, from every ``ledger.transfers`` record.

    The ledger may write a record again after a restart (same transfer id, same content): each id counts once, and
    a repeat with other content is recorded in ``conflicts``.
    """

    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    balances: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def of(cls, values: Iterable[dict[str, Any]]) -> LedgerFold:
        fold = cls()
        for t in values:
            prior = fold.transfers.get(t["transfer_id"])
            if prior is not None:
                if prior != t:
                    fold.conflicts.append(t["transfer_id"])
                continue
            fold.transfers[t["transfer_id"]] = t
            if t["kind"] in POSTED_KINDS:
                fold.balances[(t["asset"], t["debit_account_id"])] -= t["amount_units"]
                fold.balances[(t["asset"], t["credit_account_id"])] += t["amount_units"]
        return fold

    def balance(self, account: str, asset: str = KAUS) -> int:
        return self.balances.get((asset, account), 0)

    def accounts(self, asset: str) -> dict[str, int]:
        return {a: units for (kind, a), units in self.balances.items() if kind == asset}

    def open_holds(self) -> set[str]:
        placed = {i for i, t in self.transfers.items() if t["kind"] == "PENDING"}
        resolved = {t["pending_id"] for t in self.transfers.values() if t["kind"] in ("POST_PENDING", "VOID_PENDING")}
        return placed - resolved

    def legs(self, kind: str, leg: str, ref_id: str | None = None) -> list[dict[str, Any]]:
        """The movements whose reference is (kind, ref_id or any, leg)."""
        out = []
        for t in self.transfers.values():
            ref = t.get("reference") or {}
            if ref.get("kind") == kind and ref.get("leg") == leg and ref_id in (None, ref.get("id")):
                out.append(t)
        return out

    def moved(self, kind: str, leg: str, ref_id: str | None = None) -> int:
        """K-AUS posted by those movements."""
        return sum(t["amount_units"] for t in self.legs(kind, leg, ref_id) if t["kind"] in POSTED_KINDS)
