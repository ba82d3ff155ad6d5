"""What a drill's records add up to: lost, repeated and conflicting records, the money, and the RTO."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from contracts import models as m
from contracts.topics import ENERGY_ORDERS, ENERGY_SETTLEMENTS, ENERGY_TRADES, LEDGER_TRANSFERS
from devtools.drills.flow import DEPOSIT_UNITS
from devtools.drills.io import decoded, read_topic, wait_until


class Tally(NamedTuple):
    trades_expected: int
    settled: int
    lost: int
    duplicated: int  # identical re-emitted copies beyond one per id on energy.trades, settlements, transfers
    conflicts: int  # an id written again with other content
    balances_exact: bool
    conserved: bool
    rto_s: float


def settled_times(bootstrap: str, markets: set[str]) -> list[tuple[m.TradeSettled, float]]:
    """The drill's settlements with their record timestamps (seconds): when the ledger produced each."""
    found = []
    for r in read_topic(bootstrap, ENERGY_SETTLEMENTS):
        if r.value:
            settlement = ENERGY_SETTLEMENTS.decode(r.value)
            if settlement.market_id in markets:
                found.append((settlement, r.timestamp_s))
    return found


def market_partitions(bootstrap: str, markets: set[str]) -> dict[str, int]:
    """The energy.orders partition each of the drill's markets is on."""
    return {
        r.key.decode(): r.partition for r in read_topic(bootstrap, ENERGY_ORDERS) if r.key and r.key.decode() in markets
    }


def _copies(records: list[m.Trade] | list[m.TradeSettled] | list[m.LedgerTransfer], key: str) -> tuple[int, int]:
    """(copies beyond one per id, ids with more than one content)."""
    copies = Counter(getattr(r, key) for r in records)
    distinct: dict[str, set[str]] = defaultdict(set)
    for r in records:
        distinct[getattr(r, key)].add(r.model_dump_json(exclude={"matching_duration_us", "phase_durations_us"}))
    return sum(n - 1 for n in copies.values()), sum(len(v) > 1 for v in distinct.values())


def tally(
    bootstrap: str,
    expected: tuple[dict[str, m.Trade], dict[str, int]],
    markets: set[str],
    accounts: set[str],
    sent_at: dict[tuple[str, str], float],
    killed_at: float,
    counts: Callable[[m.Trade], bool] = lambda _trade: True,
) -> Tally:
    """Lost, duplicated and conflicting records against the clean run, its balances, conservation, and the RTO:
    from ``killed_at`` to the first settlement of a trade ``counts`` keeps whose later order was sent after it."""
    expected_trades, expected_balances = expected
    trades: list[m.Trade] = decoded(bootstrap, ENERGY_TRADES, lambda t: t.market_id in markets)
    timed = settled_times(bootstrap, markets)
    transfers: list[m.LedgerTransfer] = decoded(
        bootstrap, LEDGER_TRANSFERS, lambda t: t.debit_account_id in accounts or t.credit_account_id in accounts
    )
    duplicated = conflicts = 0
    for records, key in ((trades, "trade_id"), ([s for s, _at in timed], "trade_id"), (transfers, "transfer_id")):
        more, differing = _copies(records, key)
        duplicated, conflicts = duplicated + more, conflicts + differing
    settled = {s.trade_id: s for s, _at in timed if s.status == "SETTLED"}
    lost = len(expected_trades.keys() - settled.keys()) + len({t.trade_id for t in trades} ^ expected_trades.keys())
    balances: dict[str, int] = defaultdict(int)
    for t in {t.transfer_id: t for t in transfers}.values():
        if t.asset is m.LedgerAsset.KAUS:
            balances[t.debit_account_id] -= t.amount_units
            balances[t.credit_account_id] += t.amount_units
    fees = sum(s.fee_kaus_units for s in settled.values())
    by_trade = {t.trade_id: t for t in trades}
    after = [
        at - killed_at
        for s, at in timed
        if s.status == "SETTLED"
        and s.trade_id in by_trade
        and counts(by_trade[s.trade_id])
        and last_sent(by_trade[s.trade_id], sent_at) > killed_at
    ]
    return Tally(
        trades_expected=len(expected_trades),
        settled=len(settled),
        lost=lost,
        duplicated=duplicated,
        conflicts=conflicts,
        balances_exact=all(balances[a] == expected_balances[a] for a in accounts),
        conserved=sum(balances[a] for a in accounts) + fees == DEPOSIT_UNITS * len(accounts),
        rto_s=min(after) if after else float("inf"),
    )


def last_sent(trade: m.Trade, sent_at: dict[tuple[str, str], float]) -> float:
    """When the later of the trade's two orders was first sent (0 if the driver never noted one)."""
    return max(sent_at.get((trade.market_id, o), 0.0) for o in (trade.buy_order_id, trade.sell_order_id))


def wait_settled(bootstrap: str, trade_ids: Iterable[str], markets: set[str], timeout_s: float) -> None:
    """Wait until every one of ``trade_ids`` has a settlement on ``bootstrap``, then a second for late copies."""
    wanted, settled = set(trade_ids), set[str]()

    def all_settled() -> bool:
        settled.update(s.trade_id for s, _at in settled_times(bootstrap, markets))
        return settled >= wanted

    try:
        wait_until(all_settled, timeout_s, "settled")
    except TimeoutError as exc:
        missing = sorted(wanted - settled)
        exc.add_note(f"{len(wanted) - len(missing)}/{len(wanted)} trades settled; not settled: {missing[:5]}")
        raise
    time.sleep(1)
