"""Reconciliation CLI: run a day in process, and review the exception queue.

    python -m warehouse.cli run --date 2026-11-01 [--no-email]
    python -m warehouse.cli exceptions list [--state open] [--class fee_variance] [--limit 50]
    python -m warehouse.cli exceptions show S:BR-20261101-000467
    python -m warehouse.cli exceptions approve S:BR-20261101-000467 --reason "provider confirmed late booking"
    python -m warehouse.cli exceptions correct  L:STRIPE:2026-11-01:po_x --reason "refund booked as ADJ-77"
    python -m warehouse.cli exceptions write-off S:PO-20261101-000466 --reason "below materiality, CFO ok"

The day's records come from the platform's topics (Kafka, the default); seeded data for a local try without a
platform: ``python -m devtools.recon_demo seed --date 2026-11-01`` and NEXUS_RECON_SNAPSHOT_SOURCE=jsonl.

Every review action needs --reason and is recorded with the actor (--actor, default $USER) as an audit record.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.variance_rules import ExceptionState, InvalidTransition
from warehouse import pipeline
from warehouse.db import query, warehouse
from warehouse.exceptions import ExceptionNotFound, act, list_exceptions
from warehouse.settings import get_recon_settings

console = Console()
err = Console(stderr=True)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD, e.g. 2026-11-01") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m warehouse.cli", description="NEXUS-X daily reconciliation")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole reconciliation for one recon day, in process")
    run.add_argument("--date", type=_date, required=True)
    run.add_argument("--no-email", action="store_true", help="render and archive the report but do not mail it")
    exc = sub.add_parser("exceptions", help="review the exception queue")
    esub = exc.add_subparsers(dest="action", required=True)
    ls = esub.add_parser("list")
    ls.add_argument("--state", default="open", choices=[s.value for s in ExceptionState] + ["all"])
    ls.add_argument("--class", dest="break_class", default=None)
    ls.add_argument("--limit", type=int, default=50)
    show = esub.add_parser("show")
    show.add_argument("exception_id")
    for name, help_text in (
        ("approve", "accept the break as explained"),
        ("correct", "a correcting entry was booked"),
        ("write-off", "write the difference off"),
    ):
        a = esub.add_parser(name, help=help_text)
        a.add_argument("exception_id")
        a.add_argument("--reason", required=True, help="why; kept in the audit trail")
        a.add_argument("--actor", default=os.environ.get("USER") or getpass.getuser())
    return p


def _run(day: date, send: bool) -> int:
    settings = get_recon_settings()
    steps: list[tuple[str, Any]] = [
        ("snapshot (01:00)", pipeline.snapshot),
        ("provider sync (02:00)", pipeline.provider_sync),
        ("data quality", pipeline.data_quality),
        ("variance analysis (03:00)", pipeline.variance),
        ("exception review (04:00)", pipeline.exception_review),
        ("report (05:00)", lambda d, s: pipeline.report(d, s, send=send)),
    ]
    results: dict[str, Any] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as prog:
        for label, fn in steps:
            task = prog.add_task(label, total=1)
            results[label] = fn(day, settings)
            prog.update(task, completed=1, description=f"[green]✓[/] {label}")
    v = results["variance analysis (03:00)"]
    table = Table(title=f"Reconciliation {day}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "settlements",
        "auto_matched",
        "exceptions",
        "pending",
        "automatic_match_rate",
        "exception_rate",
        "audit_trail_coverage",
    ):
        table.add_row(key, str(v[key]))
    for cls, n in v["breaks_by_class"].items():
        table.add_row(f"  {cls}", str(n))
    console.print(table)
    console.print(f"report: {results['report (05:00)']['pdf']}")
    return 0


def _exceptions(args: argparse.Namespace) -> int:
    settings = get_recon_settings()
    if not settings.warehouse_path.exists():
        err.print(
            f"[red]no warehouse at {settings.warehouse_path}[/]: run the DAG or "
            "`python -m warehouse.cli run --date ...` first (or set NEXUS_RECON_HOME)"
        )
        return 2
    with warehouse(settings.warehouse_path) as con:
        if args.action in ("list", "show"):
            if args.action == "show":
                rows = query(con, "SELECT * FROM recon_exceptions WHERE exception_id = $e", {"e": args.exception_id})
                actions = query(
                    con,
                    "SELECT acted_at, action, actor, from_state, to_state, from_class, to_class,"
                    " reason FROM recon_exception_actions WHERE exception_id = $e ORDER BY acted_at",
                    {"e": args.exception_id},
                )
                if rows.is_empty():
                    err.print(f"[red]no exception {args.exception_id!r}[/]; see `exceptions list`")
                    return 1
                for k, v in rows.to_dicts()[0].items():
                    console.print(f"[bold]{k}[/]: {v}")
                frame = actions
                title = "history"
            else:
                frame = list_exceptions(con, None if args.state == "all" else args.state, args.break_class, args.limit)
                title = f"{args.state} exceptions"
            table = Table(title=title)
            for col in frame.columns:
                table.add_column(col, justify="right" if col.endswith(("minor", "days")) else "left")
            for row in frame.iter_rows():
                table.add_row(*["" if v is None else str(v) for v in row])
            console.print(table)
            return 0
        target = {
            "approve": ExceptionState.APPROVED,
            "correct": ExceptionState.CORRECTED,
            "write-off": ExceptionState.WRITTEN_OFF,
        }[args.action]
        try:
            done = act(con, args.exception_id, target, args.actor, args.reason)
        except ExceptionNotFound as e:
            err.print(f"[red]{e}[/]")
            return 1
        except InvalidTransition as e:
            err.print(f"[red]{e}[/]")
            return 1
        console.print(
            f"[green]{done['exception_id']}[/] {done['break_class']} -> [bold]{done['state']}[/] "
            f"by {done['resolved_by']}: {done['resolution_reason']}"
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.date, not args.no_email)
        return _exceptions(args)
    except (FileNotFoundError, RuntimeError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
