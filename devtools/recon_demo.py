"""Seeded reconciliation data for a try without a platform: the demo's panel, and seeded exports.

    python -m devtools.recon_demo                                  # two seeded days, reconciled in process
    python -m devtools.recon_demo seed --date 2026-11-01 --days 2  # seeded exports + statements (NEXUS_RECON_HOME)

Seeded data is read from JSONL exports (NEXUS_RECON_SNAPSHOT_SOURCE=jsonl); the platform's own records are
read from its topics (the default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console

from devtools.recon_data import GeneratorConfig, generate_period
from warehouse import pipeline
from warehouse.settings import ReconSettings, get_recon_settings

DEMO_FIRST_DAY = date(2026, 11, 1)


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
