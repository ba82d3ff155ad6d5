"""Reconciliation in the demo: today's real traffic through the nightly steps (`make run`'s panel), and seeded
data for a try without a platform.

    python -m devtools.recon_demo                                  # two seeded days, reconciled in process
    python -m devtools.recon_demo seed --date 2026-11-01 --days 2  # seeded exports + statements (NEXUS_RECON_HOME)

Seeded data is read from JSONL exports (NEXUS_RECON_SNAPSHOT_SOURCE=jsonl); the platform's own records are
read from its topics (the default), as :class:`TodaysReconciliation` does for the demo.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devtools.recon_data import GeneratorConfig, generate_period
from domain.money import Currency, Money, kaus_to_decimal
from warehouse import pipeline
from warehouse.db import warehouse
from warehouse.settings import ReconSettings, get_recon_settings

DEMO_FIRST_DAY = date(2026, 11, 1)


# --------------------------------------------------------------------------- today's traffic (make run)

# What each nightly step (warehouse.pipeline.STEPS, in its order) does here.
WHAT_STEPS_DO: dict[str, str] = {
    "snapshot": "today's records from the demo's Kafka (the day's window by record time)",
    "provider_sync": "each provider's report for today from the provider simulator",
    "data_quality": "Great Expectations suites (critical ones stop the run)",
    "variance": "match settlements to report lines, classify breaks",
    "exception_review": "open, age and close exceptions",
    "report": "PDF report (not mailed), the warehouse's copy for readers published",
}
assert set(WHAT_STEPS_DO) == set(pipeline.STEPS)


@dataclass
class TodaysReconciliation:
    """The nightly reconciliation's steps for today's UTC date, on the demo's broker and with the reports of its
    provider simulator (``sim``: a ProviderSimProcess). Run once the traffic has stopped and the workers have
    answered it: a snapshot taken mid-stream would catch K-AUS moved for settlements not written yet."""

    home: Path
    bootstrap_servers: str
    sim: Any
    day: date = field(default_factory=lambda: datetime.now(UTC).date())
    state: dict[str, str] = field(default_factory=dict)  # step -> "running…" | "12.3 s"
    results: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    waiting: str = "runs when the demo stops (Ctrl-C or --duration): the nightly steps on today's traffic"
    done: threading.Event = field(default_factory=threading.Event)

    def settings(self) -> ReconSettings:
        return ReconSettings(
            home=self.home,
            snapshot_source="kafka",
            kafka_bootstrap_servers=self.bootstrap_servers,
            wait_for_schedule=False,
        )

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # shown in the panel; the demo still stops cleanly
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def _run(self) -> None:
        self.day = datetime.now(UTC).date()
        s = self.settings()
        # The report APIs are the simulator's (ProviderSettings reads the environment, as the workers' does);
        # PayPay publishes no report API, so its transaction file is written beside every provider's statement.
        os.environ.setdefault("NEXUS_PROVIDER_SIM_URL", self.sim.url)
        self.sim.statements(s.statements, self.day.isoformat())
        for name in pipeline.STEPS:
            self.state[name] = "running…"
            started = time.perf_counter()
            self.results[name] = pipeline.run_step(name, self.day, s, send=False)
            self.state[name] = f"{time.perf_counter() - started:.1f} s"
        self.figures = self._figures(s)

    def _figures(self, s: ReconSettings) -> dict[str, Any]:
        v = self.results["variance"]
        cutoff = datetime.combine(self.day + timedelta(days=1), datetime.min.time(), UTC)
        with warehouse(s.warehouse_path, read_only=True) as con:
            kinds = con.execute(
                "SELECT kind, status, count(*) FROM fct_settlements WHERE settled_date = $d GROUP BY ALL ORDER BY ALL",
                {"d": self.day},
            ).fetchall()
            paid_out = con.execute(
                "SELECT currency, count(*), sum(amount_minor) FROM fct_settlements WHERE settled_date = $d"
                " AND kind = 'payout' AND status = 'completed' GROUP BY ALL ORDER BY ALL",
                {"d": self.day},
            ).fetchall()
            tie = con.execute(
                "SELECT coalesce(sum(settlements), 0), coalesce(sum(settlement_kaus_units), 0),"
                " coalesce(sum(ledger_kaus_units), 0), coalesce(sum(settlements_not_tied), 0),"
                " coalesce(sum(settlements_without_ledger), 0), coalesce(sum(orphan_ledger_movements), 0),"
                " coalesce(sum(open_holds), 0) FROM mart_ledger_tieout_as_of($cutoff, $grace)"
                " WHERE day = $d OR currency = 'UNKNOWN'",  # earlier days' orphans too, as the critical check
                {"cutoff": cutoff, "grace": s.tolerances().cutoff_grace, "d": self.day},
            ).fetchall()[0]
        return {
            "recon_date": v["recon_date"],
            "settlements_by_kind": {f"{kind} {status}": int(n) for kind, status, n in kinds},
            "paid_out": {ccy: (int(n), int(minor)) for ccy, n, minor in paid_out},  # holders' payouts, fiat
            "settlements": v["settlements"],
            "auto_matched": v["auto_matched"],
            "automatic_match_rate": v["automatic_match_rate"],
            "exceptions": v["exceptions"],
            "pending": v["pending"],
            "exceptions_by_class": v["breaks_by_class"],
            "audit_trail_coverage": v["audit_trail_coverage"],
            "tieout": dict(
                zip(
                    ("settlements", "settled_kaus", "ledger_kaus", "not_tied", "without_ledger", "orphans", "holds"),
                    (int(x) for x in tie),
                    strict=True,
                )
            ),
            "dq_failed": self.results["data_quality"]["failed"],
            "pdf": self.results["report"]["pdf"],
            "published": self.results["report"]["published"],
        }

    def render(self) -> Table:
        table = Table(title=f"Daily reconciliation of today's traffic ({self.day} UTC): warehouse/ steps, DuckDB + GX")
        table.add_column("")
        table.add_column("")
        if not self.state and not self.error:
            table.add_row("waiting", self.waiting)
        for name in pipeline.STEPS:
            what = WHAT_STEPS_DO[name]
            if name in self.state:
                table.add_row(name, f"{self.state[name]}  {what}")
        if self.error:
            table.add_row("[red]failed[/]", self.error[:600])
        if self.figures:
            _figure_rows(table, self.figures)
        return table


def _figure_rows(table: Table, f: dict[str, Any]) -> None:
    table.add_row("date", f"{f['recon_date']} (UTC)")
    table.add_row("settlements today", ", ".join(f"{k} {n:,}" for k, n in f["settlements_by_kind"].items()) or "none")
    paid = ", ".join(f"{Money(minor, Currency(c))} ({n})" for c, (n, minor) in f["paid_out"].items())
    table.add_row("paid out to holders", paid or "none")
    table.add_row(
        "against provider reports",
        f"{f['settlements']:,} settlements, {f['auto_matched']:,} matched automatically, {f['pending']:,} pending",
    )
    table.add_row("automatic match rate", f"{Decimal(f['automatic_match_rate']) * 100:.2f}%")
    by_class = ", ".join(f"{k} {v}" for k, v in sorted(f["exceptions_by_class"].items()) if v)
    table.add_row("exceptions by class", f"{f['exceptions']} ({by_class})" if by_class else "0")
    t = f["tieout"]
    table.add_row(
        "ledger tie-out",
        f"{t['settlements']:,} settlements: K-AUS settled {kaus_to_decimal(t['settled_kaus']):,}, "
        f"moved by the ledger {kaus_to_decimal(t['ledger_kaus']):,}",
    )
    table.add_row(
        "tie-out breaks",
        f"not tied {t['not_tied']}, without ledger {t['without_ledger']}, orphans {t['orphans']}"
        f" (holds open at the cut-off: {t['holds']})",
    )
    table.add_row("audit trail coverage", f"{Decimal(f['audit_trail_coverage']) * 100:.2f}%")
    table.add_row(
        "data quality", "every check passed" if not f["dq_failed"] else "failed: " + ", ".join(f["dq_failed"])
    )
    table.add_row("report", f["pdf"])
    table.add_row("analyst copy", f"{f['published']} (open read-only; README)")


# --------------------------------------------------------------------------- seeded data


def run_demo(console: Console, home: Path | None = None, per_day: int = 300, breaks: int = 12) -> dict[str, Any]:
    """Seed two days (so carried items and ageing show), reconcile both, return the second day's figures."""
    home = home or Path(tempfile.mkdtemp(prefix="nexus-recon-demo-"))
    settings = ReconSettings(home=home, snapshot_source="jsonl", alert_on_critical=False, wait_for_schedule=False)
    period = generate_period(
        2026, DEMO_FIRST_DAY, 2, GeneratorConfig(settlements_per_day=per_day, breaks_per_class=breaks)
    )
    period.write(settings.inbox, settings.statements)
    console.print(
        f"[bold]reconciliation[/]: seeded {period.settlements} settlements and {len(period.truth)} "
        f"injected breaks in {home}"
    )
    last: dict[str, Any] = {}
    for day in period.days:
        with console.status(f"reconciling {day}"):
            last = pipeline.run_day(day, settings, send=False)
        v = last["variance"]
        console.print(
            f"  {day}: match rate {float(v['automatic_match_rate']) * 100:.2f}%, "
            f"{v['exceptions']} exceptions, {v['pending']} pending"
        )
    v = last["variance"]
    return {
        "recon_date": v["recon_date"],
        "automatic_match_rate": v["automatic_match_rate"],
        "exception_rate": v["exception_rate"],
        "audit_trail_coverage": v["audit_trail_coverage"],
        "exceptions_by_class": v["breaks_by_class"],
        "open_exceptions": last["exception_review"]["open_total"],
        "pdf": last["report"]["pdf"],
        "warehouse": str(settings.warehouse_path),
    }


def seed(first_day: date, days: int, per_day: int, breaks: int, seed_value: int, console: Console) -> int:
    """Seeded topic exports and provider statements into the reconciliation's folders."""
    s = get_recon_settings()
    cfg = GeneratorConfig(settlements_per_day=per_day, breaks_per_class=breaks)
    period = generate_period(seed_value, first_day, days, cfg)
    period.write(s.inbox, s.statements)
    console.print(
        f"seeded {period.settlements} settlements over {days} day(s) into {s.inbox} and {s.statements} "
        f"({len(period.truth)} injected breaks); read them with NEXUS_RECON_SNAPSHOT_SOURCE=jsonl"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.recon_demo", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")
    s = sub.add_parser("seed", help="write seeded topic exports and provider statements")
    s.add_argument("--date", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    s.add_argument("--days", type=int, default=2)
    s.add_argument("--per-day", type=int, default=400)
    s.add_argument("--breaks", type=int, default=10, help="injected breaks per class over the period")
    s.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    console = Console()
    if args.command == "seed":
        return seed(args.date, args.days, args.per_day, args.breaks, args.seed, console)
    console.print(run_demo(console))
    return 0


if __name__ == "__main__":
    sys.exit(main())
