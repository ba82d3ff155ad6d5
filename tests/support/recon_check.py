"""Reconcile a test's own window of the session broker after a crash recovery (spec §9.2 step 4).

The nightly snapshot (``warehouse.snapshot_loader.load_kafka_window``) lands the window's records in a DuckDB
file of the test's; everything that is not the test's is then removed from the landed events (the session
broker holds every test's records), the models are built, and the ledger tie-out is read: over everything
landed (``mart_ledger_tieout``) and through the critical data-quality check as the DAG runs it, once per
business day the test's events fall on (``warehouse.quality.run_checks``, suite ``ledger_tieout``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from contracts import topics as t
from warehouse import quality
from warehouse.db import query, warehouse
from warehouse.snapshot_loader import LoadStats, load_kafka_window
from warehouse.sqlrunner import build_models

SETTLEMENT_TOPICS = (t.ENERGY_SETTLEMENTS, t.BRIDGE_SETTLEMENTS_COMPLETED, t.BRIDGE_SETTLEMENTS_FAILED)
KEPT_TOPICS = (t.ENERGY_TRADES, *SETTLEMENT_TOPICS, t.LEDGER_TRANSFERS, t.AUDIT_RECORDS)

# What is the test's, given its markets (P2P trades and their settlements) and accounts (card payments and holder
# payouts by its payers; ledger movements touching its accounts or naming one of its settlements in their
# reference: a bridge_tx_id, or a payout_id). A NULL (a field a record lacks) never keeps a record.
_SCOPE = [
    """DELETE FROM raw_events WHERE topic IN ($trades, $trade_settlements)
         AND NOT coalesce(list_contains($markets, payload->>'market_id'), false)""",
    """DELETE FROM raw_events WHERE topic IN ($bridge_completed, $bridge_failed)
         AND NOT coalesce(list_contains($accounts, payload->>'payer_account_id'), false)""",
    """CREATE OR REPLACE TEMP TABLE scope_ids AS
       SELECT payload->>'trade_id' AS id FROM raw_events WHERE topic = $trade_settlements
       UNION SELECT payload->>'bridge_tx_id' FROM raw_events WHERE topic IN ($bridge_completed, $bridge_failed)
       UNION SELECT payload->>'payout_id' FROM raw_events WHERE topic IN ($bridge_completed, $bridge_failed)
         AND payload->>'payout_id' IS NOT NULL""",
    """DELETE FROM raw_events WHERE topic = $transfers AND NOT (
           coalesce(list_contains($accounts, payload->>'debit_account_id'), false)
        OR coalesce(list_contains($accounts, payload->>'credit_account_id'), false)
        OR coalesce((payload->'reference'->>'id') IN (SELECT id FROM scope_ids), false))""",
    """DELETE FROM raw_events WHERE topic = $audit
         AND NOT coalesce((payload->>'transactionId') IN (SELECT id FROM scope_ids), false)""",
    "DELETE FROM raw_events WHERE NOT list_contains($kept, topic)",
]

_TOTALS = """
SELECT coalesce(sum(settlements), 0), coalesce(sum(settlement_kaus_units), 0), coalesce(sum(ledger_kaus_units), 0),
       coalesce(sum(difference_kaus_units), 0), coalesce(sum(settlements_not_tied), 0),
       coalesce(sum(settlements_without_ledger), 0), coalesce(sum(orphan_ledger_movements), 0),
       coalesce(sum(open_holds), 0)
FROM mart_ledger_tieout"""


@dataclass
class TieOut:
    """The tie-out of the test's settlements and ledger movements, as the reconciliation sees them."""

    snapshot: LoadStats
    settlements: int  # completed settlements compared leg by leg
    settled_kaus_units: int
    ledger_kaus_units: int
    difference_kaus_units: int
    not_tied: int
    without_ledger: int
    orphans: int
    open_holds: int
    landed: dict[str, int]  # the test's events landed, per topic (once per event id)
    copies_dropped: dict[str, int]  # further copies of those events read in the window, landed as duplicates
    rejected: int  # records in the window naming the test's ids that failed their contract
    checks: dict[date, list[quality.CheckResult]] = field(default_factory=dict)  # ledger_tieout, per day

    def assert_exact(self) -> None:
        failed = {day: [c for c in cs if not c.success] for day, cs in self.checks.items()}
        assert self.checks and not any(failed.values()), failed
        assert (self.difference_kaus_units, self.not_tied, self.without_ledger, self.orphans) == (0, 0, 0, 0), self
        assert self.settled_kaus_units == self.ledger_kaus_units and self.rejected == 0, self


def reconcile_window(
    bootstrap: str,
    start: datetime,
    end: datetime,
    db_path: Path,
    *,
    accounts: Iterable[str],
    markets: Iterable[str] = (),
) -> TieOut:
    """Snapshot [start, end) of the broker (by record time) into ``db_path``, keep the test's records and tie out."""
    params: dict[str, Any] = {
        "trades": t.ENERGY_TRADES.name,
        "trade_settlements": t.ENERGY_SETTLEMENTS.name,
        "bridge_completed": t.BRIDGE_SETTLEMENTS_COMPLETED.name,
        "bridge_failed": t.BRIDGE_SETTLEMENTS_FAILED.name,
        "transfers": t.LEDGER_TRANSFERS.name,
        "audit": t.AUDIT_RECORDS.name,
        "kept": [topic.name for topic in KEPT_TOPICS],
        "accounts": sorted(accounts),
        "markets": sorted(markets),
    }
    with warehouse(db_path) as con:
        stats = load_kafka_window(con, start, end, bootstrap_servers=bootstrap, group_id=f"test-recon-{uuid.uuid4()}")
        for statement in _SCOPE:
            con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
        build_models(con)
        totals = [int(x) for x in con.execute(_TOTALS).fetchall()[0]]
        landed = dict(con.execute("SELECT topic, count(*) FROM raw_events GROUP BY topic").fetchall())
        copies = dict(
            con.execute(
                "SELECT o.topic, count(*) FROM raw_offsets o JOIN raw_events e USING (topic, event_id)"
                " WHERE o.status = 'duplicate' GROUP BY o.topic"
            ).fetchall()
        )
        tokens = params["accounts"] + params["markets"]
        rejected = con.execute(
            "SELECT count(*) FROM raw_rejects WHERE len(list_filter($tokens, lambda x: contains(payload, x))) > 0",
            {"tokens": tokens},
        ).fetchall()[0][0]
        days = query(
            con,
            "SELECT DISTINCT CAST(settled_at AS DATE) AS day FROM fct_settlements"
            " UNION SELECT DISTINCT CAST(occurred_at AS DATE) FROM stg_ledger_transfers ORDER BY day",
        )["day"].to_list()
        checks = {day: [c for c in quality.run_checks(con, day) if c.suite == "ledger_tieout"] for day in days}
    settled, settled_units, ledger_units, difference, not_tied, without_ledger, orphans, holds = totals
    return TieOut(
        snapshot=stats,
        settlements=settled,
        settled_kaus_units=settled_units,
        ledger_kaus_units=ledger_units,
        difference_kaus_units=difference,
        not_tied=not_tied,
        without_ledger=without_ledger,
        orphans=orphans,
        open_holds=holds,
        landed={str(k): int(v) for k, v in landed.items()},
        copies_dropped={str(k): int(v) for k, v in copies.items()},
        rejected=int(rejected),
        checks=checks,
    )


class DrillWindow(Protocol):
    """What a DR drill's figures say of its traffic (devtools/drills)."""

    window_s: tuple[float, float]
    accounts: list[str]
    markets: list[str]


def reconcile_drill(bootstrap: str, drill: DrillWindow, db_path: Path) -> TieOut:
    """``reconcile_window`` over a drill: from a minute before its first record to a minute from now, its accounts
    and markets only (the cluster may hold other runs' records)."""
    start = datetime.fromtimestamp(drill.window_s[0], UTC) - timedelta(minutes=1)
    end = datetime.now(UTC) + timedelta(minutes=1)
    return reconcile_window(bootstrap, start, end, db_path, accounts=drill.accounts, markets=drill.markets)
