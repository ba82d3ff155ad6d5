"""The spec §5.1 dashboard figures, computed from registry messages (no I/O; time passed in).

Settlements are folded into one-minute buckets as they arrive, so memory stays bounded (24 h = 1,440
buckets) whatever the volume; windows are therefore minute-aligned at their far edge.

Definitions (shown on the dashboard too):
  24h volume          K-AUS moved by completed settlements in the last 24 h (bridge debits + P2P notional)
  settlements today   completed settlements (bridge + P2P) since 00:00 UTC
  avg settlement time mean end-to-end duration of completed bridge settlements, last 24 h (target 650 ms)
  success rate        completed / (completed + failed) bridge settlements, last 24 h
  currency breakdown  share of completed bridge settlements per fiat currency, last 24 h
  active bridges      completed bridge settlements per region, last 24 h
  (a holder's auto-payout is a bridge settlement too: it counts in the bridge figures above)
  payouts             see dashboards.payouts; avg payout time: mean total_duration_ms of the completed bridge
                      settlements that carry a payout_id, last 24 h: the bridge's execution (hold to capture),
                      not the time queued before it nor a wait for KYC (payouts.requests is not read here)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from contracts import models as m
from dashboards.payouts import PayoutFigures

TARGET_MS = 650
UNITS_PER_KAUS = 1_000_000
REGIONS = [r.value for r in m.Region]
BUCKET = timedelta(minutes=1)
RETAIN = timedelta(hours=25)


@dataclass
class Bucket:
    completed: int = 0  # bridge
    failed: int = 0  # bridge
    p2p: int = 0
    kaus_units: int = 0
    duration_ms_sum: int = 0
    payouts: int = 0  # completed bridge settlements of holders' payouts
    payout_ms_sum: int = 0
    currencies: Counter[str] = field(default_factory=Counter)
    regions: Counter[str] = field(default_factory=Counter)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class Figures:
    """Accumulates settlements and alerts; ``summary(now)`` is what the dashboard shows."""

    def __init__(self) -> None:
        self.buckets: dict[datetime, Bucket] = {}
        self.alerts: dict[str, m.Alert] = {}
        self.seen: set[str] = set()  # settlement ids in retained buckets (a replayed record counts once)
        self._ids_by_minute: dict[datetime, list[str]] = {}
        self.records = 0
        self.payouts = PayoutFigures()

    def _bucket(self, at: datetime, sid: str) -> Bucket | None:
        if sid in self.seen:
            return None
        minute = _minute(at)
        self.seen.add(sid)
        self._ids_by_minute.setdefault(minute, []).append(sid)
        return self.buckets.setdefault(minute, Bucket())

    def add(self, message: Any) -> None:
        self.records += 1
        if self.payouts.add(message):
            return
        if isinstance(message, m.BridgeSettlementCompleted):
            bucket = self._bucket(message.completed_at, f"bridge:{message.request_id}")
            if bucket is not None:
                bucket.completed += 1
                bucket.kaus_units += message.kaus_debited_units
                bucket.duration_ms_sum += message.total_duration_ms
                bucket.currencies[message.currency.value] += 1
                bucket.regions[message.region.value] += 1
                if message.payout_id is not None:
                    bucket.payouts += 1
                    bucket.payout_ms_sum += message.total_duration_ms
        elif isinstance(message, m.BridgeSettlementFailed):
            bucket = self._bucket(message.failed_at, f"bridge:{message.request_id}")
            if bucket is not None:
                bucket.failed += 1
        elif isinstance(message, m.TradeSettled):
            bucket = self._bucket(message.settled_at, f"p2p:{message.trade_id}")
            if bucket is not None:
                bucket.p2p += 1
                bucket.kaus_units += message.notional_kaus_units
        elif isinstance(message, m.Alert):
            if message.state is m.AlertState.FIRING:
                self.alerts[message.fingerprint] = message
            else:
                self.alerts.pop(message.fingerprint, None)

    def prune(self, now: datetime) -> None:
        for minute in [k for k in self.buckets if k < now - RETAIN]:
            del self.buckets[minute]
            for sid in self._ids_by_minute.pop(minute, []):
                self.seen.discard(sid)

    def summary(self, now: datetime) -> dict[str, Any]:
        self.prune(now)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        last_24h = [b for k, b in self.buckets.items() if now - timedelta(hours=24) < k + BUCKET and k <= now]
        today = [b for k, b in self.buckets.items() if day_start <= k <= now]
        completed = sum(b.completed for b in last_24h)
        failed = sum(b.failed for b in last_24h)
        currencies: Counter[str] = Counter()
        regions: Counter[str] = Counter()
        for b in last_24h:
            currencies.update(b.currencies)
            regions.update(b.regions)
        kaus = Decimal(sum(b.kaus_units for b in last_24h)) / UNITS_PER_KAUS
        avg_ms = (sum(b.duration_ms_sum for b in last_24h) / completed) if completed else None
        payouts = self.payouts.summary(now)
        executed = sum(b.payouts for b in last_24h)
        payout_ms = (sum(b.payout_ms_sum for b in last_24h) / executed) if executed else None
        payouts["avg_payout_ms"] = round(payout_ms, 1) if payout_ms is not None else None
        payouts["display"]["avg_payout"] = f"{payout_ms:.0f}ms" if payout_ms is not None else "n/a"
        return {
            "as_of": now.isoformat(),
            "volume_24h_kaus": str(kaus),
            "settlements_today": sum(b.completed + b.p2p for b in today),
            "avg_settlement_ms": round(avg_ms, 1) if avg_ms is not None else None,
            "target_ms": TARGET_MS,
            "success_rate": round(completed / (completed + failed), 6) if completed + failed else None,
            "bridge_completed_24h": completed,
            "bridge_failed_24h": failed,
            "currency_breakdown": [
                {"currency": c, "count": n, "share": round(n / completed, 6)} for c, n in currencies.most_common()
            ],
            "active_bridges": {region: regions.get(region, 0) for region in REGIONS},
            "firing_alerts": [
                {
                    "rule": a.rule,
                    "severity": a.severity.value,
                    "channel": a.channel,
                    "summary": a.summary,
                    "since": a.starts_at.isoformat(),
                }
                for a in sorted(self.alerts.values(), key=lambda a: a.starts_at)
            ],
            "payouts": payouts,
            "records": self.records,
            "display": {
                "volume_24h": f"{compact_number(kaus)} K-AUS",
                "settlements_today": f"{sum(b.completed + b.p2p for b in today):,} txns",
                "avg_settlement": f"{avg_ms:.0f}ms" if avg_ms is not None else "n/a",
                "target": f"target: {TARGET_MS}ms",
                "success_rate": f"{100 * completed / (completed + failed):.2f}%" if completed + failed else "n/a",
                "currency_breakdown": {c: f"{100 * n / completed:.0f}%" for c, n in currencies.most_common()},
                "active_bridges": {region: f"{regions.get(region, 0):,}" for region in REGIONS},
            },
        }


def compact_number(value: Decimal | float | int) -> str:
    """``2_400_000`` -> ``2.4M``; ``12_847`` -> ``12.8K`` (as the spec's 24H VOLUME tile)."""
    number = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}{suffix}"
    return f"{number:.0f}" if number == int(number) else f"{number:.2f}"


__all__ = ["REGIONS", "TARGET_MS", "Figures", "compact_number"]
