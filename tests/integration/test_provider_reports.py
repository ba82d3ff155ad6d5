"""Provider reports end to end: real payouts through the adapters to the provider simulator (a process started by
its launcher), a break of every kind injected at the source, then provider_sync pulls each provider's report for
the day through its API into DuckDB; the lines show exactly the injected differences and nothing else.

Per provider, one payout stays clean and each other one gets one break: dropped from the report, another amount,
another fee, reported twice, booked after the cut-off (on the next day's report), and, where the report carries a
rate (Stripe, Wise), another FX rate. PayPay has no report API: its report is the simulator's statement file.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import PayoutStatus
from domain.money import Currency
from domain.rails import Provider, Rail
from streams.bridge.providers import build_adapters
from streams.bridge.providers.base import ProviderSettings
from tests.integration.provider_fixtures import (  # fixtures are imported: they live beside, not in conftest.py
    make_intent,
    provider_sim,
    settings_for,
    sim,
    sim_keys_dir,
)
from warehouse.db import warehouse
from warehouse.provider_statements import FORMATS, statement_path
from warehouse.provider_sync import sync_statements

_FIXTURES = (provider_sim, sim, sim_keys_dir)

RAILS = {
    Provider.STRIPE: (Rail.STRIPE_INSTANT, Currency.USD, 150_00),
    Provider.PAYPAL: (Rail.PAYPAL, Currency.USD, 80_00),
    Provider.WISE: (Rail.WISE, Currency.EUR, 99_00),
    Provider.TOSS: (Rail.TOSS_PAYMENTS, Currency.KRW, 150_000),
    Provider.ALIPAY: (Rail.ALIPAY, Currency.CNY, 888_00),
    Provider.PAYPAY: (Rail.PAYPAY_BUSINESS, Currency.JPY, 15_000),
    Provider.PAYFORT: (Rail.PAYFORT, Currency.AED, 550_00),
}
FX_REPORTS = {Provider.STRIPE, Provider.WISE}
KINDS = ["clean", "drop", "amount", "fee", "duplicate", "late", "fx_rate"]
INJECTED_RATE = "1.0876"


def break_value(kind: str, amount: int, fee: int) -> Any:
    return {"amount": amount - 7, "fee": fee + 3, "fx_rate": INJECTED_RATE}.get(kind)


def pay_everything(settings: ProviderSettings) -> dict[Provider, dict[str, dict[str, Any]]]:
    """Per provider and kind, the payout made: its provider reference, amount and fee."""

    async def go() -> dict[Provider, dict[str, dict[str, Any]]]:
        adapters = build_adapters(settings)
        made: dict[Provider, dict[str, dict[str, Any]]] = {}
        for provider, (rail, ccy, amount) in RAILS.items():
            made[provider] = {}
            for i, kind in enumerate(KINDS):
                if kind == "fx_rate" and provider not in FX_REPORTS:
                    continue
                intent = make_intent(rail, amount + i, ccy, request_id=f"rpt-{provider.value}-{kind}")
                outcome = await adapters[provider].payout(intent)
                assert outcome.status is PayoutStatus.PAID, (provider, kind, outcome)
                made[provider][kind] = {
                    "ref": outcome.provider_reference,
                    "amount": amount + i,
                    "fee": intent.fee_minor,
                }
        return made

    return asyncio.run(go())


def expected_lines(payouts: dict[str, dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """(reference, amount, fee, fx) of every line the day's report should hold, breaks applied."""
    out: Counter[tuple[Any, ...]] = Counter()
    for kind, p in payouts.items():
        amount, fee, fx = p["amount"], p["fee"], None
        if kind in ("drop", "late"):
            continue
        if kind == "amount":
            amount = break_value(kind, p["amount"], p["fee"])
        if kind == "fee":
            fee = break_value(kind, p["amount"], p["fee"])
        if kind == "fx_rate":
            fx = Decimal(INJECTED_RATE)
        out[(p["ref"], amount, fee, fx)] += 2 if kind == "duplicate" else 1
    return out


def stored_lines(con: Any, provider: Provider, day: date) -> Counter[tuple[Any, ...]]:
    rows = con.execute(
        "SELECT provider_reference, amount_minor, fee_minor, fx_rate FROM raw_provider_lines "
        "WHERE provider = $p AND statement_date = $d",
        {"p": provider.value, "d": day},
    ).fetchall()
    return Counter((r, a, f, None if fx is None else Decimal(fx).normalize()) for r, a, f, fx in rows)


def test_injected_report_breaks_arrive_exactly_through_each_providers_api(
    sim: ProviderSimProcess, sim_keys_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(sim, sim_keys_dir)
    made = pay_everything(settings)
    days = {datetime.fromisoformat(p["created_at"]).astimezone(UTC).date() for p in sim.payouts()}
    if len(days) != 1:
        pytest.skip("the payouts straddle midnight UTC")
    (day,) = days
    for payouts in made.values():
        for kind, p in payouts.items():
            if kind != "clean":
                sim.report_break(p["ref"], kind, break_value(kind, p["amount"], p["fee"]))

    statements = tmp_path / "statements"
    sim.statements(statements)  # PayPay's report is its file; the others' files are not read in API mode
    with warehouse(tmp_path / "recon.duckdb") as con:
        imports = {i.provider: i for i in sync_statements(con, statements, day, "api", settings)}
        assert all(i.delivered for i in imports.values()), [i for i in imports.values() if not i.delivered]
        assert {p for p, i in imports.items() if i.source == "file"} == {"PAYPAY"}
        for provider, payouts in made.items():
            assert stored_lines(con, provider, day) == expected_lines(payouts), provider

        # The late bookings are on the next day's report, booked after the cut-off.
        sync_statements(con, statements, day + timedelta(days=1), "api", settings)
        late = con.execute(
            "SELECT provider, provider_reference, booked_at FROM raw_provider_lines WHERE statement_date = $d",
            {"d": day + timedelta(days=1)},
        ).fetchall()
        next_day_1am = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=1)
        assert sorted((p, r) for p, r, _ in late) == sorted((p.value, m["late"]["ref"]) for p, m in made.items())
        assert {b.astimezone(UTC) for _, _, b in late} == {next_day_1am}

        # Re-running the day changes nothing; a provider correcting its report replaces, never duplicates.
        again = {i.provider: i for i in sync_statements(con, statements, day, "api", settings)}
        assert {(i.new_lines, i.replaced) for p, i in again.items() if p != "PAYPAY"} == {(0, False)}
        clean = made[Provider.STRIPE]["clean"]
        sim.report_break(clean["ref"], "amount", clean["amount"] + 1)
        corrected = {i.provider: i for i in sync_statements(con, statements, day, "api", settings)}
        assert corrected["STRIPE"].replaced and not corrected["TOSS"].replaced
        stripe = stored_lines(con, Provider.STRIPE, day)
        assert stripe[(clean["ref"], clean["amount"] + 1, clean["fee"], None)] == 1
        assert sum(stripe.values()) == sum(expected_lines(made[Provider.STRIPE]).values())


def test_statement_files_hold_the_same_lines_as_the_report_apis(
    sim: ProviderSimProcess, sim_keys_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(sim, sim_keys_dir)
    made = pay_everything(settings)
    day = datetime.fromisoformat(sim.payouts()[0]["created_at"]).astimezone(UTC).date()
    for payouts in made.values():
        sim.report_break(payouts["duplicate"]["ref"], "duplicate")
        sim.report_break(payouts["fee"]["ref"], "fee", payouts["fee"]["fee"] + 1)
    statements = tmp_path / "statements"
    sim.statements(statements, day.isoformat())
    assert {p: statement_path(statements, day, p).exists() for p in FORMATS} == dict.fromkeys(FORMATS, True)

    with warehouse(tmp_path / "api.duckdb") as api, warehouse(tmp_path / "files.duckdb") as files:
        sync_statements(api, statements, day, "api", settings)
        sync_statements(files, statements, day, "files", settings)
        for provider in FORMATS:
            assert stored_lines(api, provider, day) == stored_lines(files, provider, day), provider
