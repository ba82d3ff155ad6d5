"""The service layer's outputs honour their contracts, and a flow is deterministic end to end."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import models as m
from contracts.examples import build
from contracts.topics import ENERGY_ORDERS, ENERGY_SETTLEMENTS, ENERGY_TRADES, LEDGER_COMMANDS, LEDGER_TRANSFERS
from devtools.order_flow import generate_orders
from streams.kafka import ingress
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message

MARKETS = [f"2026-11-24T{h:02d}:00Z/KR-SEOUL" for h in (10, 11, 12)]
ACCOUNTS = [f"acct-{i}" for i in range(12)]


def run_flow(n: int = 3_000) -> list[tuple[str, bytes]]:
    """Feed a seeded flow through matching and ledger exactly as the agents do; return every output."""
    matching, ledger = MatchingPartition(0), LedgerPartition()
    at = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    ledger_offset = 0
    out: list[tuple[str, bytes]] = []
    for account in ACCOUNTS:
        deposit = m.Deposit(command_id=f"dep-{account}", account_id=account, amount_kaus_units=10**13, occurred_at=at)
        for topic, message in ledger.apply(ledger_offset, deposit):
            out.append((topic.name, topic.encode(message)))
        ledger_offset += 1
    for offset, cmd in enumerate(generate_orders(11, n, MARKETS, ACCOUNTS)):
        wire = ENERGY_ORDERS.encode(to_message(cmd))
        decoded = ingress.validate(ENERGY_ORDERS, cmd.market_id.encode(), wire)
        assert not isinstance(decoded, ingress.Rejected), decoded
        for topic, message in matching.apply(offset, decoded):
            data = topic.encode(message)
            out.append((topic.name, data))
            if topic is LEDGER_COMMANDS:
                command = ingress.validate(LEDGER_COMMANDS, LEDGER_COMMANDS.key_of(message), data)
                assert not isinstance(command, ingress.Rejected), command
                for t2, m2 in ledger.apply(ledger_offset, command):
                    out.append((t2.name, t2.encode(m2)))
                ledger_offset += 1
    ledger.ledger.check_invariants()
    return out


def test_every_output_validates_against_its_topic_contract() -> None:
    from contracts.topics import TOPICS

    outputs = run_flow()
    names = {name for name, _ in outputs}
    assert {
        ENERGY_TRADES.name,
        ENERGY_SETTLEMENTS.name,
        LEDGER_TRANSFERS.name,
        "energy.prices",
        "energy.orders.events",
        "audit.records",
    } <= names
    for name, data in outputs:
        TOPICS[name].decode(data)  # raises if a constructed output broke its contract


def test_flow_is_deterministic_except_measured_timings() -> None:
    import json

    def scrub(data: bytes) -> str:
        value = json.loads(data)
        value.pop("matching_duration_us", None)
        value.pop("phase_durations_us", None)
        if "trade" in value:
            value["trade"].pop("matching_duration_us", None)
        return json.dumps(value, sort_keys=True)

    first = [(n, scrub(d)) for n, d in run_flow(1_500)]
    second = [(n, scrub(d)) for n, d in run_flow(1_500)]
    assert first == second


def test_redelivered_settlement_is_not_applied_twice() -> None:
    ledger = LedgerPartition()
    at = datetime(2026, 11, 24, tzinfo=UTC)
    ledger.apply(0, m.Deposit(command_id="d1", account_id="buyer", amount_kaus_units=10**9, occurred_at=at))
    trade = build(
        m.Trade,
        buyer_account_id="buyer",
        seller_account_id="seller",
        price_units_per_kwh=150_000,
        quantity_wh=1_000,
        notional_kaus_units=150_000,
        executed_at=at,
    )
    command = m.SettleTrade(command_id=trade.trade_id, trade=trade)
    first = ledger.apply(1, command)
    assert any(t is ENERGY_SETTLEMENTS for t, _ in first)
    balances = ledger.balances()
    assert ledger.apply(2, command) == []  # the same trade re-emitted later in the log
    assert ledger.balances() == balances
    assert balances["buyer"] == 10**9 - 150_000


def test_kaus_text_matches_the_decimal_rendering() -> None:
    from domain.money import kaus_to_decimal
    from streams.p2p.ledger import kaus_text

    samples = [0, 1, 5, 999_999, 1_000_000, 1_000_001, 123_456_789, 10**18, 10**21 - 1, 10**21, 10**25]
    for units in samples + [-u for u in samples] + list(range(-2_000_100, 2_000_100, 7_919)):
        assert kaus_text(units) == str(kaus_to_decimal(units)), units
