"""contracts/README.md states every rule with the numbers the code runs with, and every code an answer can carry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from contracts import reason_codes, rules
from contracts.docs import render_readme
from contracts.models import OrderStatus
from contracts.topics import TOPICS
from domain import cashback, fx
from domain import order_book as ob

README = Path(__file__).resolve().parents[2] / "contracts" / "README.md"
SCHEMA_DIR = README.parent / "schemas"


def test_the_readme_follows_the_tick_size_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Change the tick the order book runs with, and the README must change with it (so its test fails)."""
    committed = README.read_text()
    assert "**tick, 1,000 units/kWh**" in committed  # today's value, as the order book defaults it
    monkeypatch.setattr(ob, "DEFAULT_RULES", dataclasses.replace(ob.DEFAULT_RULES, tick_size_units=5_000))
    assert ob.default_market_config("2026-11-24T10:00Z/KR-SEOUL").tick_size_units == 5_000  # the platform's too
    rendered = render_readme()
    assert rendered != committed
    assert "**tick, 5,000 units/kWh**" in rendered


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda mp: mp.setattr(ob, "DEFAULT_RULES", ob.MarketRules(lot_size_wh=500)), "**lot, 500 Wh**"),
        (
            lambda mp: mp.setattr(ob, "DEFAULT_RULES", ob.MarketRules(gate_closure_lead_ms=30 * 60_000)),
            "**30 minutes before its delivery start**",
        ),
        (lambda mp: mp.setattr(ob, "DEFAULT_RULES", ob.MarketRules(price_band_bps=1_500)), "±1,500 bps (±15 %)"),
        (lambda mp: mp.setitem(cashback.CASHBACK_BPS, cashback.PayerTier.GOLD, 350), "GOLD 3.5 %"),
    ],
    ids=["lot", "gate", "band", "cashback"],
)
def test_the_readme_follows_other_constants(monkeypatch: pytest.MonkeyPatch, change, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert expected not in README.read_text()
    change(monkeypatch)
    assert expected in render_readme()


def test_the_readme_follows_the_fx_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The staleness limit and slippage the bridge runs with (FxPolicy's defaults) are the README's."""
    names = [f.name for f in dataclasses.fields(fx.FxPolicy)]
    assert fx.FxPolicy.__init__.__defaults__ is not None
    defaults = dict(zip(names, fx.FxPolicy.__init__.__defaults__, strict=True))
    monkeypatch.setattr(fx.FxPolicy.__init__, "__defaults__", tuple({**defaults, "max_age_ms": 20_000}.values()))
    assert fx.FxPolicy().max_age_ms == 20_000
    assert "at most 20 s old" in rules.fx_rules()
    monkeypatch.setattr(fx.FxPolicy.__init__, "__defaults__", tuple({**defaults, "slippage_limit_bps": 50}.values()))
    assert "`ceil(amount / (quoted_rate × 0.995))`" in render_readme()


def test_the_committed_readme_states_the_card_rules() -> None:
    text = README.read_text()
    assert "`ceil(amount / (quoted_rate × 0.997))`" in text
    assert "exactly covers the debit at the quoted rate is refused `INSUFFICIENT_FUNDS`" in text
    assert "needs 1,003,009,028 units available" in text
    assert "**An FX producer must re-send every currency every few seconds**" in text
    assert "**ecosystem bonus of 10 % of the cashback**" in text
    assert "| `PAYPAY_BUSINESS` | `PAYPAY` | `JP` (primary) | JPY |" in text
    assert "**Self-trade prevention cancels the RESTING order**" in text
    assert "Regex: `^(\\d{4})-(\\d{2})-(\\d{2})T(\\d{2}):(\\d{2})Z/([A-Z0-9][A-Z0-9-]{0,31})$`" in text


def test_every_upstream_topic_has_its_rules_in_the_readme() -> None:
    upstream = {t.name for t in TOPICS.values() if t.upstream}
    assert set(rules.UPSTREAM_RULES) == upstream
    text = README.read_text()
    for name in upstream:
        section = text.split(f"\n### `{name}`\n", 1)[1].split("\n### ", 1)[0]
        assert "#### Rules" in section, name


def test_every_code_of_every_answer_has_a_meaning() -> None:
    tables = [table for tables in rules.ANSWER_CODES.values() for table in tables]
    for table in tables:
        assert set(table.meanings) == set(table.codes), table.field
        assert all(table.meanings[c].strip() for c in table.codes), table.field
    assert set(rules.ORDER_STATUS_MEANINGS) == set(OrderStatus)
    every_set = {
        reason_codes.ORDER_EVENT_CODES,
        reason_codes.SETTLEMENT_CODES,
        reason_codes.LEDGER_CODES,
        reason_codes.BRIDGE_FAILURE_CODES,
        reason_codes.DEAD_LETTER_CODES,
        reason_codes.PAYOUT_WAIT_CODES,
        reason_codes.GOVERNANCE_CODES,
    }
    assert every_set <= {t.codes for t in tables}, "a reason-code set has no table"


def _enum_of(schema: dict, field: str) -> list[str]:  # type: ignore[type-arg]
    node = schema["properties"][field]
    options = node.get("anyOf", [node])
    for option in options:
        if "$ref" in option:
            option = schema["$defs"][option["$ref"].rsplit("/", 1)[-1]]
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"{field} has no enum")


@pytest.mark.parametrize("topic_name", sorted(rules.ANSWER_CODES))
def test_each_code_table_is_what_the_schema_lists(topic_name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{topic_name}.schema.json").read_text())
    for table in rules.ANSWER_CODES[topic_name]:
        assert _enum_of(schema, table.field) == list(table.codes), (topic_name, table.field)
        section = README.read_text().split(f"\n### `{topic_name}`\n", 1)[1].split("\n### ", 1)[0]
        if topic_name != "platform.deadletters":  # its table is the one under "What happens to a bad message"
            assert all(f"| `{code}` | {table.meanings[code]} |" in section for code in table.codes)


def test_the_readme_tells_consumers_how_to_read() -> None:
    text = README.read_text()
    for promise in (
        "**Ignore fields you do not know.**",
        "**Treat an unknown reason code as a plain refusal.**",
        "**At least once, so deduplicate.**",
        "**the two fill events of a trade share the trade's `sequence`**",
        "**`remaining_quantity_wh` is the order's open quantity after the event**",
        '`"repeat": true`',
    ):
        assert promise in text, promise
