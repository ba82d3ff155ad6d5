"""A seeded stream of card payments for the bridge (bench, demo, integration tests).

Regions are drawn with the weights of the spec's "active bridges" panel (§5.1: KR 2,145, US 3,892,
EU 1,567, JP 987, AU 1,234, SG 567, HK 445, AE 231), each paid in its rail's currency; amounts are
log-uniform between roughly 2 and 400 USD-equivalent (whole units for JPY/KRW); tiers are uniform; one
merchant in ten belongs to AURA_SYDNEY or NOMAD_MONTHLY. The quoted rate is the day's combined rate with
a small deterministic offset (under 0.05%), as if the payer's app had quoted a moment earlier.
"""

from __future__ import annotations

import math
import random
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

from devtools.fx_feed import domain_quotes
from domain.bridge import CardPayment
from domain.cashback import PayerTier
from domain.fx import FxBook
from domain.money import MINOR_UNIT_EXPONENT
from domain.rails import REGION_CURRENCY, Region

REGION_WEIGHTS: dict[Region, int] = {
    Region.KR: 2_145,
    Region.US: 3_892,
    Region.EU: 1_567,
    Region.JP: 987,
    Region.AU: 1_234,
    Region.SG: 567,
    Region.HK: 445,
    Region.AE: 231,
}


def card_payments(
    n: int, seed: int = 0, day: date = date(2026, 10, 30), now_ms: int = 0, payers: int = 500, prefix: str = "card"
) -> list[CardPayment]:
    rng = random.Random(seed)
    book = FxBook().with_quotes(domain_quotes(day, 0, now_ms))
    regions = list(REGION_WEIGHTS)
    weights = list(REGION_WEIGHTS.values())
    out = []
    for k in range(n):
        region = rng.choices(regions, weights)[0]
        ccy = REGION_CURRENCY[region]
        rate = book.combined_rate(ccy, now_ms).rate
        usd_equiv = math.exp(rng.uniform(math.log(2), math.log(400)))
        # fiat per USD = rate / 0.15 (rate is fiat per K-AUS, K-AUS is 0.15 USD)
        major = Decimal(str(round(usd_equiv, 2))) * rate / Decimal("0.15")
        exp = MINOR_UNIT_EXPONENT[ccy]
        amount_minor = max(1, int(major.scaleb(exp).quantize(Decimal(1), ROUND_HALF_EVEN)))
        offset_ppm = rng.randint(-500, 500)  # ±0.05%
        quoted = (rate * (1_000_000 + offset_ppm) / 1_000_000).quantize(Decimal("1E-10"), ROUND_HALF_EVEN)
        program = rng.choice(["AURA_SYDNEY", "NOMAD_MONTHLY"]) if rng.random() < 0.1 else None
        out.append(
            CardPayment(
                request_id=f"{prefix}-{seed}-{k}",
                payer_account_id=f"acct-payer-{rng.randrange(payers)}",
                merchant_id=f"merchant-{region.value.lower()}-{rng.randrange(50)}",
                merchant_program=program,
                amount_minor=amount_minor,
                currency=ccy,
                region=region,
                payer_tier=rng.choice(list(PayerTier)),
                quoted_rate=quoted,
                requested_at_ms=now_ms,
            )
        )
    return out
