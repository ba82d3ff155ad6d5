"""Seeded data for reconciliation: both sides (platform events and provider statements) with known breaks.

Test and benchmark data only (never imported by production code): it emits the registry's contract messages
(bridge completions/failures, payout requests/results, trade settlements, ledger transfers, FX quotes, audit
records) as JSONL topic exports, and the matching provider statements in each provider's own format. Ledger
movements are written the way the services write them: transfer ids, accounts and typed references (a card
payment's hold, capture, release and cashback; a trade's payment, fee, dividend pool accrual and carbon mint).
A holder's auto-payout is written as the platform executes it (contract 1.2.0): the auto-payout service's
``payouts.requests`` record, the bridge's settlement carrying the ``payout_id`` (request_id = payout_id, no
cashback or bonus), its ledger hold and capture (or release) under reference kind ``PAYOUT`` with the payout_id,
and the service's ``payouts.results`` record derived from the settlement.

Injected breaks (``breaks_per_class`` of each class over the period) and their expected classification are
returned as ``truth``; legitimate noise that must *not* raise an exception is always present: fee rounding
(±1 minor unit), FX rates rounded to the provider's published precision (and the amount rounding that goes
with it), bookings just across the midnight cut-off within the grace, lines without references (tier 2) and
batched payouts (tier 3).
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from contracts import models as m
from contracts import topics as t
from domain.bridge import BridgeConfig, bridge_tx_id_for
from domain.ledger import Leg, SettlementKind
from domain.money import KAUS_UNITS_PER_TOKEN, MINOR_UNIT_EXPONENT, Currency
from domain.rails import RAILS, payout_region
from domain.timeconv import to_ms
from domain.variance_rules import MATCHING_BREAKS, BreakClass, Tolerances
from warehouse.provider_statements import FORMATS, StatementLine, assign_line_ids, write_statement

BASE_RATES: dict[Currency, Decimal] = {
    Currency.USD: Decimal("0.15"),
    Currency.EUR: Decimal("0.138"),
    Currency.GBP: Decimal("0.118"),
    Currency.JPY: Decimal("22.5"),
    Currency.KRW: Decimal("203.5"),
    Currency.AUD: Decimal("0.229"),
    Currency.SGD: Decimal("0.201"),
    Currency.HKD: Decimal("1.17"),
    Currency.AED: Decimal("0.551"),
    Currency.CNY: Decimal("1.085"),
}

# (kind, provider, rail, region, currencies, weight)
_ROUTES: list[tuple[str, m.Provider, m.Rail | None, m.Region | None, tuple[Currency, ...], int]] = [
    ("bridge", m.Provider.TOSS, m.Rail.TOSS_PAYMENTS, m.Region.KR, (Currency.KRW,), 22),
    ("bridge", m.Provider.STRIPE, m.Rail.STRIPE_INSTANT, m.Region.US, (Currency.USD,), 18),
    ("bridge", m.Provider.STRIPE, m.Rail.STRIPE_SEPA, m.Region.EU, (Currency.EUR,), 8),
    ("bridge", m.Provider.STRIPE, m.Rail.STRIPE_ASIA, m.Region.SG, (Currency.SGD,), 4),
    ("bridge", m.Provider.STRIPE, m.Rail.STRIPE_AU, m.Region.AU, (Currency.AUD,), 4),
    ("bridge", m.Provider.STRIPE, m.Rail.STRIPE_HK, m.Region.HK, (Currency.HKD,), 3),
    ("bridge", m.Provider.WISE, m.Rail.WISE, m.Region.EU, (Currency.EUR, Currency.GBP), 8),
    ("bridge", m.Provider.ALIPAY, m.Rail.ALIPAY, m.Region.HK, (Currency.HKD, Currency.USD), 8),
    # holders' auto-payouts go out through the bridge too: the provider's rail for the currency (_payout_rail)
    ("payout", m.Provider.PAYPAL, None, None, (Currency.USD, Currency.EUR, Currency.GBP, Currency.AUD), 12),
    ("payout", m.Provider.WISE, None, None, (Currency.EUR, Currency.GBP, Currency.USD), 8),
    ("payout", m.Provider.STRIPE, None, None, (Currency.USD, Currency.EUR), 5),
]


def _payout_rail(provider: m.Provider, ccy: Currency) -> m.Rail:
    """The provider's rail that pays ``ccy`` (Stripe: one per currency; PayPal and Wise: their own)."""
    [rail] = [spec.rail for spec in RAILS.values() if spec.provider is provider and ccy in spec.currencies]
    return rail


def _payout_region(provider: m.Provider, ccy: Currency) -> m.Region:
    """The region the auto-payout service names on a payout's bridge request (domain.rails.payout_region)."""
    region = payout_region(provider, ccy)
    assert region is not None, (provider, ccy)
    return region


_FEE_BPS = {
    m.Provider.STRIPE: 25,
    m.Provider.PAYPAL: 250,
    m.Provider.WISE: 80,
    m.Provider.TOSS: 230,
    m.Provider.ALIPAY: 150,
}
_VALUE_LAG_DAYS = {
    m.Provider.STRIPE: 0,
    m.Provider.PAYPAL: 0,
    m.Provider.WISE: 0,
    m.Provider.TOSS: 1,
    m.Provider.ALIPAY: 1,
}


@dataclass
class _Settlement:
    sid: str
    kind: str
    provider: m.Provider
    rail: m.Rail | None
    region: m.Region | None
    currency: Currency
    amount: int
    fee: int
    rate: Decimal
    settled_at: datetime
    provider_reference: str | None
    counterparty: str
    payer: str
    role: str = "normal"  # normal | tier2 | batch | late | injected class name


@dataclass
class _Line:
    provider: m.Provider
    line: StatementLine
    truth: BreakClass | None = None  # expected class when the *line* carries the exception


@dataclass
class SeededPeriod:
    days: list[date]
    events: dict[date, dict[str, list[Any]]]
    statements: dict[date, dict[m.Provider, list[StatementLine]]]
    truth: dict[str, BreakClass]  # exception key ("S:<id>" / "L:<line id>") -> class expected after the last day
    pending: set[str]  # keys expected to be pending (no exception) after the last day
    settlements: int

    def write(self, inbox_dir: Path, statements_dir: Path) -> None:
        write_inbox(self.events, inbox_dir)
        for day, by_provider in sorted(self.statements.items()):
            for provider in FORMATS:
                write_statement(
                    provider, sorted(by_provider.get(provider, []), key=lambda x: x.created_at), statements_dir, day
                )


@dataclass
class GeneratorConfig:
    settlements_per_day: int = 400
    breaks_per_class: int = 10
    batches_per_day: int = 3
    tier2_share: float = 0.03
    late_share: float = 0.02
    trades_per_day: int = 150
    failed_share: float = 0.005
    failed_payouts_per_day: int = 1  # holders' payouts the provider declined: hold released, FAILED result
    missing_audit: int = 0
    ledger_break: bool = False  # drop one settlement's ledger movements: the tie-out (a critical check) fails
    tolerances: Tolerances = field(default_factory=Tolerances)


def _q10(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.0000000001"), rounding=ROUND_HALF_EVEN)


def _kaus_units(amount_minor: int, ccy: Currency, rate: Decimal) -> int:
    major = Decimal(amount_minor).scaleb(-MINOR_UNIT_EXPONENT[ccy])
    return max(1, int((major / rate * KAUS_UNITS_PER_TOKEN).to_integral_value(rounding=ROUND_HALF_EVEN)))


def _provider_ref(provider: m.Provider, rng: random.Random) -> str:
    if provider is m.Provider.STRIPE:
        return "po_" + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=24))
    if provider is m.Provider.TOSS:
        return "tgen_" + "".join(rng.choices("0123456789ABCDEF", k=20))
    if provider is m.Provider.WISE:
        return f"TRANSFER-{rng.randrange(10**9, 10**10)}"
    if provider is m.Provider.ALIPAY:
        return f"2026{rng.randrange(10**21, 10**22)}"
    return "".join(rng.choices("0123456789ABCDEFGHJKLMNPRSTUVWXY", k=17))


def _amount(ccy: Currency, rng: random.Random) -> int:
    major = Decimal(str(round(10 ** rng.uniform(0.7, 3.3), 2)))  # ~5 .. ~2000 in major units
    if ccy in (Currency.KRW, Currency.JPY):
        major *= 150
    return max(1, int(major.scaleb(MINOR_UNIT_EXPONENT[ccy]).to_integral_value()))


def _round_rate(rate: Decimal, places: int | None) -> Decimal:
    if places is None:
        return rate
    return rate.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def generate_period(seed: int, first_day: date, days: int, cfg: GeneratorConfig | None = None) -> SeededPeriod:
    cfg = cfg or GeneratorConfig()
    rng = random.Random(seed)
    day_list = [first_day + timedelta(days=i) for i in range(days)]
    period = _PeriodBuilder(cfg, rng)
    for d_i, day in enumerate(day_list):
        last = d_i == len(day_list) - 1
        day_end = datetime.combine(day, time(), UTC) + timedelta(days=1)
        period.regular(day)
        period.late(day, day_end, last)
        period.batches(day)
        per_day = _split(cfg.breaks_per_class, len(day_list), d_i)
        timing_per_day = _split(cfg.breaks_per_class, len(day_list) - 1, d_i) if len(day_list) > 1 else 0
        period.breaks(day, day_end, per_day, 0 if last else timing_per_day)
    statements = period.statements(day_list)
    events = _events(period.settlements, day_list, cfg, rng)
    return SeededPeriod(day_list, events, statements, period.truth, period.pending, len(period.settlements))


class _PeriodBuilder:
    """Both sides of a period as they are drawn. One RNG serves every step, so the order of calls fixes the data."""

    def __init__(self, cfg: GeneratorConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.tol = cfg.tolerances
        self.rng = rng
        self.weights = [r[5] for r in _ROUTES]
        self.fx_routes = [r for r in _ROUTES if FORMATS[r[1]].reports_fx]
        self.settlements: list[_Settlement] = []
        self.lines: list[_Line] = []
        self.truth: dict[str, BreakClass] = {}
        self.pending: set[str] = set()
        self.counter = 0

    def new_settlement(
        self, day: date, role: str = "normal", route: Any = None, start_s: float = 60.0, end_s: float = 86_400 - 3_600.0
    ) -> _Settlement:
        rng = self.rng
        self.counter += 1
        kind, provider, rail, region, ccys, _ = route or rng.choices(_ROUTES, self.weights)[0]
        ccy = rng.choice(ccys)
        amount = _amount(ccy, rng)
        fee = amount * _FEE_BPS[provider] // 10_000 + (
            25 if provider is m.Provider.STRIPE and MINOR_UNIT_EXPONENT[ccy] == 2 else 0
        )
        rate = _q10(BASE_RATES[ccy] * (1 + Decimal(rng.gauss(0, 0.001)).quantize(Decimal("0.000001"))))
        settled = datetime.combine(day, time(), UTC) + timedelta(seconds=rng.uniform(start_s, end_s))
        settled = settled.replace(microsecond=(settled.microsecond // 1000) * 1000)
        prefix = "BR" if kind == "bridge" else "PO"
        sid = f"{prefix}-{day:%Y%m%d}-{self.counter:06d}"
        merchant = f"MERCHANT-{rng.randrange(1, 400):04d}" if kind == "bridge" else f"ACCT-{rng.randrange(1, 900):05d}"
        s = _Settlement(
            sid,
            kind,
            provider,
            rail,
            region,
            ccy,
            amount,
            fee,
            rate,
            settled,
            _provider_ref(provider, rng),
            merchant,
            f"PAYER-{rng.randrange(1, 5000):05d}",
            role,
        )
        self.settlements.append(s)
        return s

    def line_for(self, s: _Settlement, booked: datetime | None = None, **overrides: Any) -> StatementLine:
        rng = self.rng
        fmt = FORMATS[s.provider]
        fx = _round_rate(s.rate, fmt.rate_places) if fmt.reports_fx else None
        amount = s.amount
        if fx is not None and rng.random() < 0.3:
            # provider converts with its rounded rate: the amount moves by what the rounding explains
            amount = int((Decimal(s.amount) * fx / s.rate).to_integral_value(rounding=ROUND_HALF_EVEN))
        fee = s.fee + (rng.choice((-1, 1)) if rng.random() < 0.2 and s.fee > 0 else 0)
        booked = booked or s.settled_at + timedelta(seconds=rng.uniform(0.2, 90))
        values: dict[str, Any] = dict(
            provider_reference=s.provider_reference or _provider_ref(s.provider, rng),
            our_reference=s.sid,
            amount_minor=amount,
            fee_minor=fee,
            currency=s.currency,
            fx_rate=fx,
            value_date=booked.date() + timedelta(days=_VALUE_LAG_DAYS[s.provider]),
            created_at=booked,
            counterparty=None,
        )
        values.update(overrides)
        return StatementLine(**values)

    def regular(self, day: date) -> None:
        """The day's ordinary settlements, a share of them reported without our reference (tier 2)."""
        for _ in range(self.cfg.settlements_per_day):
            s = self.new_settlement(day)
            if self.rng.random() < self.cfg.tier2_share:
                s.role = "tier2"
                ref = s.provider_reference
                s.provider_reference = None
                booked = s.settled_at + timedelta(seconds=self.rng.uniform(1, 300))
                line = self.line_for(s, booked, provider_reference=ref, our_reference=None)
                self.lines.append(_Line(s.provider, line))
            else:
                self.lines.append(_Line(s.provider, self.line_for(s)))

    def late(self, day: date, day_end: datetime, last: bool) -> None:
        """Bookings across midnight within the grace (legitimate cut-off differences)."""
        grace_s = self.tol.cutoff_grace.total_seconds()
        for _ in range(max(1, int(self.cfg.settlements_per_day * self.cfg.late_share))):
            s = self.new_settlement(day, "late", start_s=86_400 - grace_s + 30, end_s=86_400 - 60)
            booked = s.settled_at + timedelta(seconds=self.rng.uniform(61, max(62.0, grace_s - 30)))
            self.lines.append(_Line(s.provider, self.line_for(s, booked)))
            if last and booked >= day_end:
                self.pending.add(f"S:{s.sid}")

    def batches(self, day: date) -> None:
        """Batched payouts: one statement line for several settlements (tier 3, many-to-one)."""
        rng = self.rng
        for b in range(self.cfg.batches_per_day):
            route = rng.choice(
                [r for r in _ROUTES if r[0] == "payout" and r[1] in (m.Provider.PAYPAL, m.Provider.WISE)]
            )
            account = f"BATCHACCT-{day:%Y%m%d}-{b:02d}"
            members = [
                self.new_settlement(day, "batch", route, start_s=3_600, end_s=72_000) for _ in range(rng.randint(3, 5))
            ]
            ccy = members[0].currency
            for s in members:
                s.counterparty, s.provider_reference, s.currency = account, None, ccy
            booked = max(s.settled_at for s in members) + timedelta(minutes=5)
            line = StatementLine(
                provider_reference=_provider_ref(route[1], rng),
                our_reference=None,
                amount_minor=sum(s.amount for s in members),
                fee_minor=sum(s.fee for s in members),
                currency=ccy,
                fx_rate=None,
                value_date=booked.date(),
                created_at=booked,
                counterparty=account,
            )
            self.lines.append(_Line(route[1], line))

    def breaks(self, day: date, day_end: datetime, per_class: int, timing: int) -> None:
        """Injected breaks: ``per_class`` of every class matching finds but timing, which gets ``timing``."""
        for cls in MATCHING_BREAKS:
            for _ in range(timing if cls is BreakClass.TIMING else per_class):
                route: Any = self.rng.choice(self.fx_routes) if cls is BreakClass.FX_VARIANCE else None
                if cls is BreakClass.MISSING_INTERNALLY:
                    self._ghost_line(day)
                elif cls is BreakClass.TIMING:
                    s = self.new_settlement(day, cls.value, route, start_s=43_200, end_s=81_000)
                    booked = day_end + self.tol.cutoff_grace + timedelta(seconds=self.rng.uniform(60, 9_000))
                    self.lines.append(_Line(s.provider, self.line_for(s, booked)))
                    self.truth[f"S:{s.sid}"] = cls
                else:
                    s = self.new_settlement(day, cls.value, route, start_s=600, end_s=86_400 - 2 * 3_600)
                    self.truth[f"S:{s.sid}"] = cls
                    self._break_line(cls, s)

    def _ghost_line(self, day: date) -> None:
        """A provider line for a settlement we never recorded (missing internally)."""
        ghost = self.new_settlement(day, "ghost", start_s=600, end_s=86_400 - 2 * 3_600)
        self.settlements.remove(ghost)
        ours = None if self.rng.random() < 0.5 else f"GHOST-{ghost.sid}"
        line = self.line_for(ghost, our_reference=ours, fx_rate=None)
        self.lines.append(_Line(ghost.provider, line, truth=BreakClass.MISSING_INTERNALLY))

    def _break_line(self, cls: BreakClass, s: _Settlement) -> None:
        """The provider side of a settlement that breaks as ``cls`` (none when it is missing at the provider)."""
        rng, tol = self.rng, self.tol
        if cls is BreakClass.AMOUNT_VARIANCE:
            delta = max(tol.amount_minor + 2, s.amount // 50) * rng.choice((-1, 1))
            if s.amount + delta <= 0:
                delta = abs(delta)
            self.lines.append(_Line(s.provider, self.line_for(s, amount_minor=s.amount + delta)))
        elif cls is BreakClass.FEE_VARIANCE:
            fee = s.fee + max(tol.fee_minor + 2, s.fee // 5 + 3)
            self.lines.append(_Line(s.provider, self.line_for(s, fee_minor=fee)))
        elif cls is BreakClass.FX_VARIANCE:
            places = FORMATS[s.provider].rate_places
            bad = _round_rate(
                s.rate * (1 + Decimal(rng.choice((-1, 1))) * Decimal(str(round(rng.uniform(0.002, 0.01), 5)))),
                places,
            )
            amount = int((Decimal(s.amount) * bad / s.rate).to_integral_value())
            self.lines.append(_Line(s.provider, self.line_for(s, fx_rate=bad, amount_minor=amount)))
        elif cls is BreakClass.DUPLICATE:
            original = self.line_for(s)
            self.lines.append(_Line(s.provider, original))
            again = original.created_at + timedelta(minutes=rng.uniform(1, 60))
            if rng.random() < 0.5:
                dup = self.line_for(s, again)  # the same transaction reported twice
                dup = StatementLine(**{**_asdict(dup), "provider_reference": original.provider_reference})
            else:
                dup = self.line_for(s, again, provider_reference=_provider_ref(s.provider, rng))  # paid twice
            self.lines.append(_Line(s.provider, dup, truth=cls))
            del self.truth[f"S:{s.sid}"]

    def statements(self, day_list: list[date]) -> dict[date, dict[m.Provider, list[StatementLine]]]:
        """Lines grouped by booking day and provider; a line carrying a break adds its line id to ``truth``."""
        statements: dict[date, dict[m.Provider, list[StatementLine]]] = defaultdict(lambda: defaultdict(list))
        for ln in self.lines:
            statements[ln.line.created_at.astimezone(UTC).date()][ln.provider].append(ln.line)
        truth_lines = {id(ln.line): ln.truth for ln in self.lines if ln.truth is not None}
        for day, by_provider in statements.items():
            for provider, items in by_provider.items():
                items.sort(key=lambda x: x.created_at)
                for line, line_id in zip(items, assign_line_ids(provider, day, items), strict=True):
                    expected = truth_lines.get(id(line))
                    if expected is not None:
                        self.truth[f"L:{line_id}"] = expected
        for day in [*day_list, day_list[-1] + timedelta(days=1)]:
            statements.setdefault(day, defaultdict(list))
        return {d: dict(v) for d, v in statements.items()}


def _asdict(line: StatementLine) -> dict[str, Any]:
    return {f: getattr(line, f) for f in StatementLine.__slots__}


def _split(total: int, parts: int, index: int) -> int:
    if parts <= 0:
        return 0
    return total // parts + (1 if index < total % parts else 0)


# --------------------------------------------------------------------------- platform events


Emit = Callable[[t.Topic, Any, datetime], None]


def _events(
    settlements: list[_Settlement], days: list[date], cfg: GeneratorConfig, rng: random.Random
) -> dict[date, dict[str, list[Any]]]:
    out: dict[date, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))

    def emit(topic: t.Topic, value: Any, ts: datetime) -> None:
        out[ts.astimezone(UTC).date()][topic.name].append(value)

    ledger_dropped = not cfg.ledger_break
    audits_missing = cfg.missing_audit
    for s in settlements:
        kaus = _kaus_units(s.amount, s.currency, s.rate)
        if s.kind == "bridge":
            audit_tx, transfers = _bridge_events(emit, s, kaus, rng), _card_transfers(s, kaus)
        else:
            audit_tx, transfers = _payout_events(emit, s, kaus, rng), _payout_transfers(s, kaus)
        if not ledger_dropped:
            ledger_dropped = True
        else:
            for transfer in transfers:
                emit(t.LEDGER_TRANSFERS, transfer, transfer.occurred_at)
        if audits_missing > 0:
            audits_missing -= 1
        else:
            emit(t.AUDIT_RECORDS, _audit(audit_tx, s, rng), s.settled_at)
    for day in days:
        _failed_bridge_events(emit, day, cfg, rng)
        _failed_payout_events(emit, day, cfg, rng)
        _trade_events(emit, day, cfg, rng)
        _fx_events(emit, day)
    return {d: dict(v) for d, v in out.items()}


def _bridge_events(emit: Emit, s: _Settlement, kaus: int, rng: random.Random) -> str:
    """A completed bridge settlement; returns the transaction id its audit record names."""
    assert s.rail is not None and s.region is not None
    phases = {
        m.BridgePhase.BALANCE_LOCK: rng.randint(40, 150),
        m.BridgePhase.FX_CONVERSION: rng.randint(60, 200),
        m.BridgePhase.MERCHANT_CREDIT: rng.randint(80, 220),
        m.BridgePhase.CONFIRMATION: rng.randint(20, 100),
    }
    tx = bridge_tx_id_for(s.sid)
    emit(
        t.BRIDGE_SETTLEMENTS_COMPLETED,
        m.BridgeSettlementCompleted(
            request_id=s.sid,
            bridge_tx_id=tx,
            payer_account_id=s.payer,
            merchant_id=s.counterparty,
            region=s.region,
            currency=s.currency,
            amount_minor=s.amount,
            kaus_debited_units=kaus,
            rate=s.rate,
            rail=s.rail,
            provider_reference=s.provider_reference or "",
            provider_fee_minor=s.fee,
            cashback_kaus_units=_cashback(kaus),
            ecosystem_bonus_kaus_units=0,
            phase_durations_ms=phases,
            total_duration_ms=sum(phases.values()),
            completed_at=s.settled_at,
        ),
        s.settled_at,
    )
    return tx


def _payout_request(s: _Settlement, kaus: int, at: datetime) -> m.PayoutRequest:
    """The auto-payout service's decision (a THRESHOLD rule of the holder's, its n-th payout)."""
    rule_id = f"rule-{s.counterparty}"
    return m.PayoutRequest(
        payout_id=s.sid,
        rule_id=rule_id,
        account_id=s.counterparty,
        provider=s.provider,
        currency=s.currency,
        amount_kaus_units=kaus,
        payout_account=f"{s.provider.value.lower()}:{s.counterparty}",
        requested_at=at,
        trigger_type=m.PayoutTrigger.THRESHOLD,
        trigger_id=f"T{zlib.crc32(s.sid.encode()) % 1000}",
    )


def _payout_events(emit: Emit, s: _Settlement, kaus: int, rng: random.Random) -> str:
    """A holder's payout as the platform executes it: the service's request, the bridge's settlement (with the
    payout_id, no rewards) and the service's result derived from it; returns the bridge_tx_id (the audit's)."""
    requested = s.settled_at - timedelta(seconds=rng.uniform(1, 30))
    request = _payout_request(s, kaus, requested)
    emit(t.PAYOUT_REQUESTS, request, requested)
    rail = _payout_rail(s.provider, s.currency)
    phases = {
        m.BridgePhase.BALANCE_LOCK: rng.randint(40, 150),
        m.BridgePhase.FX_CONVERSION: rng.randint(60, 200),
        m.BridgePhase.MERCHANT_CREDIT: rng.randint(150, 400),
        m.BridgePhase.CONFIRMATION: rng.randint(20, 100),
    }
    tx = bridge_tx_id_for(s.sid)
    emit(
        t.BRIDGE_SETTLEMENTS_COMPLETED,
        m.BridgeSettlementCompleted(
            request_id=s.sid,
            bridge_tx_id=tx,
            payer_account_id=s.counterparty,  # the holder paid out
            merchant_id=s.counterparty,
            region=_payout_region(s.provider, s.currency),
            currency=s.currency,
            amount_minor=s.amount,
            kaus_debited_units=kaus,
            rate=s.rate,
            rail=rail,
            provider_reference=s.provider_reference or "",
            provider_fee_minor=s.fee,
            cashback_kaus_units=0,
            ecosystem_bonus_kaus_units=0,
            phase_durations_ms=phases,
            total_duration_ms=sum(phases.values()),
            completed_at=s.settled_at,
            payout_id=s.sid,
        ),
        s.settled_at,
    )
    result_at = s.settled_at + timedelta(milliseconds=rng.randint(5, 80))
    emit(
        t.PAYOUT_RESULTS,
        m.PayoutResult(
            payout_id=s.sid,
            status=m.PayoutStatus.PAID,
            provider=s.provider,
            provider_reference=s.provider_reference,
            currency=s.currency,
            amount_minor=s.amount,
            fee_minor=s.fee,
            rate=s.rate,
            completed_at=result_at,
            account_id=s.counterparty,
            rule_id=request.rule_id,
            bridge_tx_id=tx,
            kaus_debited_units=kaus,
            rail=rail,
        ),
        result_at,
    )
    return tx


def _failed_bridge_events(emit: Emit, day: date, cfg: GeneratorConfig, rng: random.Random) -> None:
    """Failed bridge settlements: no provider line, and no exception either."""
    for i in range(int(cfg.settlements_per_day * cfg.failed_share)):
        ts = datetime.combine(day, time(), UTC) + timedelta(seconds=rng.uniform(0, 80_000))
        tx = bridge_tx_id_for(f"BRF-{day:%Y%m%d}-{i:05d}")
        emit(
            t.BRIDGE_SETTLEMENTS_FAILED,
            m.BridgeSettlementFailed(
                request_id=f"BRF-{day:%Y%m%d}-{i:05d}",
                payer_account_id=f"PAYER-{i:05d}",
                region=m.Region.US,
                currency=Currency.USD,
                amount_minor=1000 + i,
                failed_phase=m.BridgePhase.MERCHANT_CREDIT,
                reason_code="PAYOUT_FAILED",  # a documented bridge failure code (domain.bridge.ReasonCode)
                reason="STRIPE_INSTANT did not answer within 200 ms",
                rail=m.Rail.STRIPE_INSTANT,
                failed_at=ts,
                bridge_tx_id=tx,
            ),
            ts,
        )
        # The payment's hold, released when it failed: linked to it, but nothing moved.
        hold = _hold(tx, f"PAYER-{i:05d}", 1_000_000 + i, ts - _HOLD_LEAD)
        emit(t.LEDGER_TRANSFERS, hold, hold.occurred_at)
        release = _resolution(tx, hold, m.TransferKind.VOID_PENDING, 1_000_000 + i, ts - _CAPTURE_LEAD)
        emit(t.LEDGER_TRANSFERS, release, release.occurred_at)


def _failed_payout_events(emit: Emit, day: date, cfg: GeneratorConfig, rng: random.Random) -> None:
    """Holders' payouts the provider declined: the bridge's failure (with the payout_id), the hold released under
    the payout's reference, the service's FAILED result. No provider line, no exception, no K-AUS moved."""
    for i in range(cfg.failed_payouts_per_day):
        ts = datetime.combine(day, time(), UTC) + timedelta(seconds=rng.uniform(0, 80_000))
        payout_id, holder = f"POF-{day:%Y%m%d}-{i:05d}", f"ACCT-F{i:04d}"
        tx, kaus, ccy = bridge_tx_id_for(payout_id), 2_000_000 + i, Currency.USD
        s = _Settlement(payout_id, "payout", m.Provider.PAYPAL, None, None, ccy, 30_00 + i, 0, BASE_RATES[ccy], ts,
                        None, holder, holder)  # fmt: skip
        request = _payout_request(s, kaus, ts - timedelta(seconds=2))
        emit(t.PAYOUT_REQUESTS, request, request.requested_at)
        reason = "PAYPAL declined the payout: RECEIVER_UNREGISTERED"
        phase, code = m.BridgePhase.MERCHANT_CREDIT, "PAYOUT_FAILED"
        emit(
            t.BRIDGE_SETTLEMENTS_FAILED,
            m.BridgeSettlementFailed(request_id=payout_id, bridge_tx_id=tx, payer_account_id=holder,
                                     region=_payout_region(s.provider, ccy), currency=ccy, amount_minor=s.amount,
                                     failed_phase=phase, reason_code=code, reason=reason, rail=m.Rail.PAYPAL,
                                     failed_at=ts, payout_id=payout_id),
            ts,
        )  # fmt: skip
        hold = _hold(tx, holder, kaus, ts - _HOLD_LEAD, payout_id)
        emit(t.LEDGER_TRANSFERS, hold, hold.occurred_at)
        release = _resolution(tx, hold, m.TransferKind.VOID_PENDING, kaus, ts - _CAPTURE_LEAD, payout_id)
        emit(t.LEDGER_TRANSFERS, release, release.occurred_at)
        result_at = ts + timedelta(milliseconds=20)
        emit(
            t.PAYOUT_RESULTS,
            m.PayoutResult(payout_id=payout_id, status=m.PayoutStatus.FAILED, provider=s.provider, currency=ccy,
                           amount_minor=0, fee_minor=0, reason=reason, completed_at=result_at, account_id=holder,
                           rule_id=request.rule_id, bridge_tx_id=tx, reason_code=code, failed_phase=phase,
                           rail=m.Rail.PAYPAL),
            result_at,
        )  # fmt: skip


def _trade_events(emit: Emit, day: date, cfg: GeneratorConfig, rng: random.Random) -> None:
    """P2P trades: they settle on the ledger only, so they must tie out without a provider line."""
    for i in range(cfg.trades_per_day):
        ts = datetime.combine(day, time(), UTC) + timedelta(seconds=rng.uniform(0, 86_000))
        trade_id = f"TR-{day:%Y%m%d}-{i:06d}"
        qty = rng.randint(100, 50_000)
        price = rng.randint(50_000, 200_000)
        notional = qty * price // 1000
        fee = notional // 400  # 0.25 %, as the settlement engine charges (its carried remainder aside)
        seller = f"ACC-S{i % 89}"
        carbon = qty // 1000 if i % 89 % 3 == 0 else 0  # a third of the sellers are renewable
        emit(
            t.ENERGY_SETTLEMENTS,
            m.TradeSettled(
                trade_id=trade_id,
                market_id=f"{day.isoformat()}T10:00Z/KR-SEOUL",
                buyer_account_id=f"ACC-B{i % 97}",
                seller_account_id=seller,
                notional_kaus_units=notional,
                fee_kaus_units=fee,
                seller_net_kaus_units=notional - fee,
                delivered_wh=qty,
                carbon_credits_minted_milli=carbon,
                phase_durations_us={"matching": 35_000, "validation": 22_000, "transfer": 78_000, "minting": 41_000},
                settled_at=ts,
            ),
            ts,
        )
        for transfer in _trade_transfers(trade_id, f"ACC-B{i % 97}", seller, (notional, fee, carbon), ts):
            emit(t.LEDGER_TRANSFERS, transfer, ts)
        emit(
            t.AUDIT_RECORDS,
            m.AuditRecord(
                audit_id=f"AUDIT-{trade_id}",
                timestamp=ts,
                transaction_id=trade_id,
                action="SETTLEMENT_EXECUTED",
                actor=m.AuditActor(user_id=f"ACC-B{i % 97}"),
                details=m.AuditDetails(kaus_amount=f"{Decimal(notional).scaleb(-6):.6f}"),
            ),
            ts,
        )


def _trade_transfers(
    trade_id: str, buyer: str, seller: str, amounts: tuple[int, int, int], at: datetime
) -> list[m.LedgerTransfer]:
    """A trade's legs as the ledger writes them (``domain.trade_settlement``): payment, fee, dividend pool accrual
    and, for a renewable seller, the carbon mint, each with the trade's reference; milli-credits are not money
    (the tie-out and K-AUS balances must leave them out)."""
    notional, fee, carbon_milli = amounts
    legs = [
        ("pay", buyer, seller, m.LedgerAsset.KAUS, notional, Leg.PAYMENT),
        ("fee", seller, "sys:fees", m.LedgerAsset.KAUS, fee, Leg.FEE),
        ("dividend", "sys:fees", "sys:dividends", m.LedgerAsset.KAUS, fee // 2, Leg.DIVIDEND_POOL),
        ("carbon", "sys:carbon", f"carbon:{seller}", m.LedgerAsset.CARBON_MILLICREDIT, carbon_milli, Leg.CARBON),
    ]
    return [
        m.LedgerTransfer(
            transfer_id=f"{trade_id}/{suffix}",
            debit_account_id=debit,
            credit_account_id=credit,
            asset=asset,
            amount_units=units,
            reason=f"trade:{trade_id}",
            reference=m.LedgerReference(kind=SettlementKind.TRADE, id=trade_id, leg=leg),
            occurred_at=at,
        )
        for suffix, debit, credit, asset, units, leg in legs
        if units
    ]


_BRIDGE = BridgeConfig()
_HOLD_LEAD = timedelta(milliseconds=300)  # the hold is placed this long before the settlement completes
_CAPTURE_LEAD = timedelta(milliseconds=40)  # and captured (or released) this long before


def _cashback(kaus: int) -> int:
    return kaus // 100


def _reference(tx: str, leg: Leg, payout_id: str | None = None) -> m.LedgerReference:
    """A bridge movement's reference: a card payment's bridge_tx_id, or a holder payout's payout_id."""
    if payout_id is not None:
        return m.LedgerReference(kind=SettlementKind.PAYOUT, id=payout_id, leg=leg)
    return m.LedgerReference(kind=SettlementKind.CARD_PAYMENT, id=tx, leg=leg)


def _hold(tx: str, payer: str, units: int, at: datetime, payout_id: str | None = None) -> m.LedgerTransfer:
    """A bridge hold as the ledger writes it (PENDING, the bridge's hold id and reference)."""
    return m.LedgerTransfer(
        transfer_id=f"{tx}:hold",
        kind=m.TransferKind.PENDING,
        debit_account_id=payer,
        credit_account_id=_BRIDGE.settlement_account_id,
        asset=m.LedgerAsset.KAUS,
        amount_units=units,
        expires_at=at + timedelta(milliseconds=_BRIDGE.hold_ttl_ms),
        reason="bridge.hold",
        reference=_reference(tx, Leg.HOLD, payout_id),
        occurred_at=at,
    )


def _resolution(
    tx: str, hold: m.LedgerTransfer, kind: m.TransferKind, units: int, at: datetime, payout_id: str | None = None
) -> m.LedgerTransfer:
    """The hold's capture (POST_PENDING, ``units`` moved) or release (VOID_PENDING, the hold's amount)."""
    capture = kind is m.TransferKind.POST_PENDING
    return m.LedgerTransfer(
        transfer_id=f"{tx}:post" if capture else f"{tx}:void",
        kind=kind,
        debit_account_id=hold.debit_account_id,
        credit_account_id=hold.credit_account_id,
        asset=m.LedgerAsset.KAUS,
        amount_units=units if capture else hold.amount_units,
        pending_id=hold.transfer_id,
        reference=_reference(tx, Leg.CAPTURE if capture else Leg.RELEASE, payout_id),
        occurred_at=at,
    )


def _card_transfers(s: _Settlement, kaus: int) -> list[m.LedgerTransfer]:
    """A completed card payment on the ledger: its hold (sized above the debit, as for the worst accepted rate),
    the capture of the K-AUS debited, and the cashback riding on the capture."""
    tx = bridge_tx_id_for(s.sid)
    hold = _hold(tx, s.payer, kaus + kaus * 30 // 10_000 + 1, s.settled_at - _HOLD_LEAD)
    captured_at = s.settled_at - _CAPTURE_LEAD
    transfers = [hold, _resolution(tx, hold, m.TransferKind.POST_PENDING, kaus, captured_at)]
    if _cashback(kaus):
        transfers.append(
            m.LedgerTransfer(
                transfer_id=f"{tx}:cashback",
                debit_account_id=_BRIDGE.rewards_account_id,
                credit_account_id=s.payer,
                asset=m.LedgerAsset.KAUS,
                amount_units=_cashback(kaus),
                reason="bridge.reward",
                reference=_reference(tx, Leg.CASHBACK),
                occurred_at=captured_at,
            )
        )
    return transfers


def _payout_transfers(s: _Settlement, kaus: int) -> list[m.LedgerTransfer]:
    """A completed holder payout on the ledger: the bridge's hold of exactly the payout's K-AUS on the holder and
    its capture, under the payout's reference (kind PAYOUT, the payout_id); no reward."""
    tx = bridge_tx_id_for(s.sid)
    hold = _hold(tx, s.counterparty, kaus, s.settled_at - _HOLD_LEAD, s.sid)
    return [hold, _resolution(tx, hold, m.TransferKind.POST_PENDING, kaus, s.settled_at - _CAPTURE_LEAD, s.sid)]


def _fx_events(emit: Emit, day: date) -> None:
    """The internal FX quotes, every six hours."""
    for ccy, base in BASE_RATES.items():
        for h in range(0, 24, 6):
            ts = datetime.combine(day, time(h), UTC)
            emit(
                t.FX_RATES,
                m.FxRate(
                    quote_id=f"FX-{ccy}-{ts:%Y%m%d%H}", source=m.FxSource.NEXUS_INTERNAL, quote=ccy, rate=base, as_of=ts
                ),
                ts,
            )


def _audit(tx: str, s: _Settlement, rng: random.Random) -> m.AuditRecord:
    major = Decimal(s.amount).scaleb(-MINOR_UNIT_EXPONENT[s.currency])
    payout = s.kind == "payout"
    return m.AuditRecord(
        audit_id=f"AUDIT-{s.sid}",
        timestamp=s.settled_at,
        transaction_id=tx,
        action="PAYOUT_COMPLETED" if payout else "SETTLEMENT_EXECUTED",  # the bridge's own action for a payout
        actor=m.AuditActor(user_id=s.counterparty if payout else s.payer, ip=f"203.0.113.{rng.randrange(1, 250)}"),
        details=m.AuditDetails(
            fiat_amount=f"{major:f}",
            currency=s.currency,
            exchange_rate=s.rate,
            settlement_rail=_payout_rail(s.provider, s.currency) if payout else s.rail,
            duration=rng.randint(200, 640),
        ),
    )


def write_inbox(events: dict[date, dict[str, list[Any]]], inbox_dir: Path) -> None:
    """JSONL per topic per event day: {"partition", "offset", "timestamp_ms", "key", "value"} per line.

    Offsets are contiguous per (topic, partition) across days, as a broker would assign them.
    """
    next_offset: dict[tuple[str, int], int] = defaultdict(int)
    for day in sorted(events):
        folder = Path(inbox_dir) / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        for topic_name, values in sorted(events[day].items()):
            topic = t.topic(topic_name)
            rows = []
            for value in values:
                key = topic.key_of(value)
                partition = zlib.crc32(key) % topic.partitions
                offset = next_offset[(topic_name, partition)]
                next_offset[(topic_name, partition)] += 1
                ts = _event_time(value)
                rows.append(
                    json.dumps(
                        {
                            "partition": partition,
                            "offset": offset,
                            "timestamp_ms": to_ms(ts),
                            "key": key.decode(),
                            "value": json.loads(topic.encode(value)),
                        },
                        separators=(",", ":"),
                    )
                )
            (folder / f"{topic_name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _event_time(value: Any) -> datetime:
    for attr in ("completed_at", "failed_at", "settled_at", "occurred_at", "requested_at", "as_of", "timestamp"):
        ts = getattr(value, attr, None)
        if isinstance(ts, datetime):
            return ts
    raise ValueError(f"no event time on {type(value).__name__}")
