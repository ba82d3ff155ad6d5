"""Platform demo hook: a small seeded day, reconciled in process (no Airflow), headline figures back."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console

from warehouse import pipeline
from warehouse.generator import GeneratorConfig, generate_period
from warehouse.settings import ReconSettings

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


if __name__ == "__main__":
    print(run_demo(Console()))
