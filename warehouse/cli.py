"""Reconciliation CLI: run a day in process, and review the exception queue.

    python -m warehouse.cli run --date 2026-11-01 [--no-email]
    python -m warehouse.cli exceptions list [--state open] [--class fee_variance] [--limit 50]
    python -m warehouse.cli exceptions show S:BR-20261101-000467
    python -m warehouse.cli exceptions approve S:BR-20261101-000467 --reason "provider confirmed late booking"
    python -m warehouse.cli exceptions correct  L:STRIPE:2026-11-01:po_x --reason "refund booked as ADJ-77"
    python -m warehouse.cli exceptions correct  K:card-7f3a --reason "payer agreed" [--from-account payer-1] \
        [--to-account bridge:settlement] [--amount 12.5] [--expiry-hours 168]
    python -m warehouse.cli exceptions write-off S:PO-20261101-000466 --reason "below materiality, CFO ok"
    python -m warehouse.cli exceptions check-corrections
    python -m warehouse.cli exceptions publish

The day's records come from the platform's topics (Kafka, the default); seeded data for a local try without a
platform: ``python -m devtools.recon_demo seed --date 2026-11-01`` and NEXUS_RECON_SNAPSHOT_SOURCE=jsonl.

Every review action needs --reason and is recorded with the actor (--actor, default $USER) as an audit record,
published on audit.records after the action (queued in the warehouse while the broker cannot be reached, and sent
with the next action, the nightly review or `exceptions publish`). Correcting a ledger break (K:...) asks the
signers for a LEDGER_CORRECTION (governance.requests); `check-corrections` reads their outcome
(governance.multisig) and closes the exceptions.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date, timedelta
from typing import Any

from confluent_kafka import KafkaException
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.governance import kaus_units
from domain.money import kaus_to_decimal
from domain.variance_rules import LEDGER_BREAKS, ExceptionState, InvalidTransition
from warehouse import outbox, pipeline
from warehouse.corrections import CorrectionUnknown, default_correction, read_multisig
from warehouse.db import query, warehouse
from warehouse.exceptions import (
    ExceptionNotFound,
    act,
    close_corrections,
    list_exceptions,
    request_correction,
    waiting_corrections,
)
from warehouse.settings import ReconSettings, get_recon_settings

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
        ("correct", "a correcting entry was booked; a ledger break (K:...): ask the signers for a LEDGER_CORRECTION"),
        ("write-off", "write the difference off"),
    ):
        a = esub.add_parser(name, help=help_text)
        a.add_argument("exception_id")
        a.add_argument("--reason", required=True, help="why; kept in the audit trail")
        a.add_argument("--actor", default=os.environ.get("USER") or getpass.getuser())
        if name == "correct":
            a.add_argument("--from-account", help="ledger break: the account debited (default: the payer)")
            a.add_argument(
                "--to-account", help="ledger break: the account credited (default: the refused capture's, its hold's)"
            )
            a.add_argument("--amount", type=_kaus, help="ledger break: K-AUS to move (default: what the payer owes)")
            a.add_argument("--expiry-hours", type=int, default=None, help="the request's expiry (default 168)")
    esub.add_parser("check-corrections", help="close the ledger corrections governance decided (governance.multisig)")
    esub.add_parser("publish", help="send the queued audit records and correction requests")
    return p


def _kaus(text: str) -> int:
    try:
        return kaus_units(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(day: date, send: bool) -> int:
    settings = get_recon_settings()
    steps: list[tuple[str, Any]] = [
        ("snapshot (01:00)", pipeline.snapshot),
        ("provider sync (02:00)", pipeline.provider_sync),
        ("data quality", pipeline.data_quality),
        ("variance analysis (03:00)", pipeline.variance),
        ("exception review (04:00)", pipeline.exception_review),
        ("audit records and requests sent", pipeline.publish_outbox),
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
            return _show(con, args)
        if args.action == "publish":
            return _publish(con, settings, always_say=True)
        if args.action == "check-corrections":
            return _check_corrections(con, settings)
        try:
            done = _act(con, args, settings)
        except (ExceptionNotFound, InvalidTransition, CorrectionUnknown) as e:
            err.print(f"[red]{e}[/]")
            return 1
        console.print(done)
        _publish(con, settings)
        return 0


def _show(con: Any, args: argparse.Namespace) -> int:
    if args.action == "show":
        rows = query(con, "SELECT * FROM recon_exceptions WHERE exception_id = $e", {"e": args.exception_id})
        actions = query(
            con,
            "SELECT acted_at, action, actor, from_state, to_state, from_class, to_class, reason,"
            " published_at IS NOT NULL AS on_audit_records FROM recon_exception_actions WHERE exception_id = $e"
            " ORDER BY acted_at",
            {"e": args.exception_id},
        )
        if rows.is_empty():
            err.print(f"[red]no exception {args.exception_id!r}[/]; see `exceptions list`")
            return 1
        for k, v in rows.to_dicts()[0].items():
            console.print(f"[bold]{k}[/]: {v}")
        corrections = query(
            con,
            "SELECT request_id, state, amount_kaus_units, from_account, to_account, requested_by, requested_at,"
            " expires_at, sent_at IS NOT NULL AS sent, reason_code, reason FROM recon_corrections"
            " WHERE exception_id = $e ORDER BY attempt",
            {"e": args.exception_id},
        )
        for c in corrections.to_dicts():
            console.print(f"[bold]correction[/]: {c}")
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


def _act(con: Any, args: argparse.Namespace, settings: ReconSettings) -> str:
    """One review action, committed; returns what to tell the person."""
    cls = query(con, "SELECT break_class FROM recon_exceptions WHERE exception_id = $e", {"e": args.exception_id})
    if args.action == "correct" and not cls.is_empty() and cls.item(0, 0) in LEDGER_BREAKS:
        return _request_correction(con, args, settings)
    target = {
        "approve": ExceptionState.APPROVED,
        "correct": ExceptionState.CORRECTED,
        "write-off": ExceptionState.WRITTEN_OFF,
    }[args.action]
    done = act(con, args.exception_id, target, args.actor, args.reason)
    return (
        f"[green]{done['exception_id']}[/] {done['break_class']} -> [bold]{done['state']}[/] "
        f"by {done['resolved_by']}: {done['resolution_reason']}"
    )


def _request_correction(con: Any, args: argparse.Namespace, settings: ReconSettings) -> str:
    exc = query(con, "SELECT * FROM recon_exceptions WHERE exception_id = $e", {"e": args.exception_id}).to_dicts()[0]
    correction = default_correction(con, exc, args.from_account, args.to_account, args.amount)
    hours = args.expiry_hours or settings.correction_expiry_hours
    try:
        row = request_correction(con, args.exception_id, correction, args.actor, args.reason, timedelta(hours=hours))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise CorrectionUnknown(f"the request would break its contract ({problems}); check --actor and accounts") from e
    return (
        f"[green]{args.exception_id}[/] -> [bold]correction_requested[/]: LEDGER_CORRECTION [bold]{row['request_id']}"
        f"[/] moves {kaus_to_decimal(row['amount_kaus_units'])} K-AUS from {row['from_account']} to "
        f"{row['to_account']}, expires {row['expires_at'].isoformat()}; the signers sign it "
        "(`python -m streams.security.signer_cli pending`), then `exceptions check-corrections` closes it"
    )


def _publish(con: Any, settings: ReconSettings, always_say: bool = False) -> int:
    """Send the outbox; say clearly what stays queued. 0 when nothing is left queued."""
    if not settings.talks_to_platform:
        requests, audits = outbox.queued(con)
        err.print(
            f"[yellow]queued[/]: {audits} audit records and {requests} correction requests stay in the warehouse "
            "(no platform Kafka: NEXUS_RECON_PLATFORM_KAFKA=false or seeded exports); "
            "`exceptions publish` sends them once it is reachable"
        )
        return 1 if requests or audits else 0
    done = outbox.publish(con, settings.bootstrap, settings.publish_timeout_s)
    if done.queued:
        err.print(
            f"[yellow]queued[/]: the action is committed, but {done.audits_queued} audit records and "
            f"{done.requests_queued} correction requests are not on Kafka yet ({done.error}); they are sent with "
            "the next action, the nightly review or `python -m warehouse.cli exceptions publish`"
        )
        return 1
    if always_say or done.audits_sent or done.requests_sent:
        console.print(f"published: {done.audits_sent} audit records, {done.requests_sent} correction requests")
    return 0


def _check_corrections(con: Any, settings: ReconSettings) -> int:
    waiting = waiting_corrections(con)
    if not settings.talks_to_platform:
        err.print(f"[yellow]{len(waiting)} corrections wait[/]; governance.multisig is not read without the platform")
        return 1
    try:
        states = read_multisig(settings.bootstrap, waiting, settings.multisig_read_timeout_s)
    except (RuntimeError, TimeoutError, KafkaException) as exc:
        err.print(f"[red]governance.multisig not read[/] ({exc}); {len(waiting)} corrections still wait")
        return 1
    closed = close_corrections(con, states)
    console.print(
        f"corrections: {closed.corrected} executed (exceptions corrected), {closed.reopened} rejected or expired "
        f"(open again), {closed.waiting} still waiting for the signers"
    )
    return _publish(con, settings)


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
