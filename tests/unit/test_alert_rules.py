"""The pure alert rule engine: thresholds at their exact boundaries, windows, fingerprints, transitions, dedupe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from domain.alert_rules import (
    AlertEngine,
    Entity,
    RuleConfigError,
    Sample,
    fingerprint,
    format_quantity,
    load_rules,
    parse_quantity,
)

RULES_FILE = Path(__file__).resolve().parents[2] / "streams" / "alerting" / "rules.toml"
T0 = datetime(2026, 1, 23, 10, 0, tzinfo=UTC)


def engine() -> AlertEngine:
    return AlertEngine(load_rules(RULES_FILE.read_text()))


def ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def duration(at: datetime, millis: int, region: str = "KR", id: str | None = None) -> Sample:
    return Sample(
        "settlement_duration",
        at,
        Decimal(millis) / 1000,
        {"flow": "bridge", "region": region, "rail": "TOSS_PAYMENTS"},
        id,
    )


def failure(at: datetime, id: str, region: str = "KR", reason: str = "PAYOUT_FAILED") -> Sample:
    return Sample(
        "settlement_failed", at, Decimal(1), {"region": region, "reason_code": reason, "phase": "MERCHANT_CREDIT"}, id
    )


def settlement(at: datetime, id: str) -> Sample:
    return Sample("settlement", at, Decimal(1), {"flow": "bridge", "status": "COMPLETED", "region": "KR"}, id)


def quote(at: datetime, rate: str, pair: str = "KAUS/USD", source: str = "BLOOMBERG") -> Sample:
    return Sample("fx_rate", at, Decimal(rate), {"pair": pair, "source": source})


def key(version: datetime, expires_at: datetime | None, key_id: str = "hsm-signing-1") -> Entity:
    return Entity(
        "key_expiry", key_id, version, expires_at, {"key_id": key_id, "key_label": "signing", "algorithm": "ECDSA-P256"}
    )


def multisig(version: datetime, created_at: datetime | None, request_id: str = "ms-1") -> Entity:
    return Entity(
        "multisig_pending",
        request_id,
        version,
        created_at,
        {"request_id": request_id, "required_signers": "3", "signatures": "1"},
    )


def rules_firing(e: AlertEngine, rule: str) -> list[str]:
    return [n.fingerprint for n in e.firing() if n.rule == rule]


# ----------------------------------------------------------------------------- config


def test_shipped_rules_file_matches_spec_table() -> None:
    config = load_rules(RULES_FILE.read_text())
    table = {r.name: (r.threshold, r.unit, r.channel, r.escalation) for r in config.rules}
    assert table == {
        "SettlementDelay": (Decimal("1.000"), "duration", "slack", "L1"),
        "SettlementFailed": (Decimal(0), "count", "pagerduty", "immediate"),
        "HighVolume": (Decimal(5000), "count", "email", "L2"),
        "FxSlippage": (Decimal("0.005"), "ratio", "slack", "L1"),
        "HsmKeyExpiry": (Decimal(7 * 86400), "duration", "email", "L3"),
        "MultisigPending": (Decimal(7200), "duration", "sms", "L2"),
    }
    assert config.rule("HighVolume").window_s == 60
    assert config.repost_every_s == 60


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000ms", (Decimal(1), "duration")),
        ("2h", (Decimal(7200), "duration")),
        ("7d", (Decimal(604800), "duration")),
        ("0.5%", (Decimal("0.005"), "ratio")),
        (5000, (Decimal(5000), "count")),
        ("250ms", (Decimal("0.25"), "duration")),
    ],
)
def test_parse_quantity(text: object, expected: tuple[Decimal, str]) -> None:
    assert parse_quantity(text) == expected


def test_format_quantity() -> None:
    assert format_quantity(Decimal("1.001"), "duration") == "1001 ms"
    assert format_quantity(Decimal("7201"), "duration") == "2h 0m 1s"
    assert format_quantity(Decimal(6 * 86400 + 3600 * 23), "duration") == "6d 23h 0m"
    assert format_quantity(Decimal("0.0051"), "ratio") == "0.51%"
    assert format_quantity(Decimal(5001), "count") == "5001"


BASE_RULE = """
[[rules]]
name = "X"
signal = "settlement_duration"
aggregate = "max"
op = ">"
threshold = "1000ms"
window = "5m"
severity = "warning"
channel = "slack"
escalation = "L1"
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('threshold = "1000ms"', 'threshold = "0.5%"'), "is a ratio but max of settlement_duration is a duration"),
        (('channel = "slack"', 'channel = "teams"'), "channel = 'teams'; allowed: slack, pagerduty, email, sms"),
        (('aggregate = "max"', 'aggregate = "age"'), "does not apply to sample signal"),
        (('window = "5m"', 'window = "soon"'), "window: not a quantity"),
        (
            ('severity = "warning"', 'severity = "warning"\ngroup_by = ["merchant"]'),
            "not labels of settlement_duration",
        ),
        (('op = ">"', 'op = ">"\nthresold = 3'), "unknown field(s) thresold"),
    ],
)
def test_config_errors_name_rule_and_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(RuleConfigError, match="rules\\[0\\] \\(X\\)") as info:
        load_rules(BASE_RULE.replace(*change))
    assert message in str(info.value)


def test_threshold_change_needs_no_code_change() -> None:
    config = load_rules(RULES_FILE.read_text().replace('threshold = "1000ms"', 'threshold = "800ms"'))
    e = AlertEngine(config)
    e.observe(duration(T0, 801))
    assert [n.rule for n in e.evaluate(T0).changes] == ["SettlementDelay"]


# ----------------------------------------------------------------------------- settlement delay (> 1000 ms)


@pytest.mark.parametrize(("millis", "fires"), [(999, False), (1000, False), (1001, True)])
def test_settlement_delay_boundary(millis: int, fires: bool) -> None:
    e = engine()
    e.observe(duration(T0, millis))
    assert bool(e.evaluate(T0).changes) is fires


def test_settlement_delay_fires_once_per_region_then_resolves_after_window() -> None:
    e = engine()
    e.observe_all([duration(T0, 1500, "KR", "a"), duration(T0, 1200, "KR", "b"), duration(T0, 300, "US", "c")])
    first = e.evaluate(T0)
    assert [(n.rule, n.labels["region"], n.firing, n.value) for n in first.changes] == [
        ("SettlementDelay", "KR", True, "1500 ms")
    ]
    notice = first.changes[0]
    assert notice.fingerprint == fingerprint("SettlementDelay", [("region", "KR")])
    assert notice.labels == {"region": "KR", "escalation": "L1"}
    assert "rail: TOSS_PAYMENTS 2" in notice.summary
    # still firing inside the window: no new transition
    assert e.evaluate(T0 + timedelta(minutes=4, seconds=59)).changes == []
    # the window is (now - 5m, now]: at exactly 5m the sample is out
    cleared = e.evaluate(T0 + timedelta(minutes=5))
    assert [(n.firing, n.fingerprint, n.ends_at) for n in cleared.changes] == [
        (False, notice.fingerprint, T0 + timedelta(minutes=5))
    ]
    assert cleared.changes[0].starts_at == T0
    assert e.evaluate(T0 + timedelta(minutes=6)).changes == []
    assert e.firing() == []


def test_refire_after_resolve_keeps_fingerprint_with_new_start() -> None:
    e = engine()
    e.observe(duration(T0, 2000))
    fp = e.evaluate(T0).changes[0].fingerprint
    e.evaluate(T0 + timedelta(minutes=5))
    later = T0 + timedelta(minutes=10)
    e.observe(duration(later, 2000))
    again = e.evaluate(later).changes
    assert [(n.fingerprint, n.firing, n.starts_at) for n in again] == [(fp, True, later)]


# ----------------------------------------------------------------------------- failed settlement (any)


def test_single_failure_pages() -> None:
    e = engine()
    assert e.evaluate(T0).changes == []
    e.observe(failure(T0, "r1"))
    changes = e.evaluate(T0).changes
    assert [(n.rule, n.severity, n.channel, n.escalation, n.value) for n in changes] == [
        ("SettlementFailed", "critical", "pagerduty", "immediate", "1")
    ]


def test_burst_of_1000_failures_is_one_alert_with_breakdown() -> None:
    e = engine()
    transitions = []
    for i in range(1000):
        e.observe(failure(T0 + ms(i), f"r{i}", region="KR" if i % 5 else "US", reason="PAYOUT_FAILED"))
        if i % 100 == 99:  # evaluated many times during the burst, as the agent does after each batch
            transitions += e.evaluate(T0 + ms(i)).changes
    assert len(transitions) == 1
    alert = e.firing()[0]
    assert alert.value == "1000"
    assert alert.labels == {"escalation": "immediate"}
    assert "region: KR 800, US 200" in alert.summary and "reason_code: PAYOUT_FAILED 1000" in alert.summary
    resolved = e.evaluate(T0 + ms(999) + timedelta(minutes=5)).changes
    assert [(n.firing, n.fingerprint) for n in resolved] == [(False, alert.fingerprint)]


def test_redelivered_failures_count_once() -> None:
    e = engine()
    for _ in range(3):
        e.observe(failure(T0, "same-request"))
    e.evaluate(T0)
    assert e.firing()[0].value == "1"
    assert e.duplicates == 2


# ----------------------------------------------------------------------------- high volume (> 5000 tx/min)


@pytest.mark.parametrize(("count", "fires"), [(4999, False), (5000, False), (5001, True)])
def test_high_volume_boundary(count: int, fires: bool) -> None:
    e = engine()
    e.observe_all(settlement(T0 + ms(i * 10), f"s{i}") for i in range(count))
    now = T0 + ms(count * 10)
    assert [n.rule for n in e.evaluate(now).changes] == (["HighVolume"] if fires else [])


def test_high_volume_resolves_when_rate_drops_without_new_events() -> None:
    e = engine()
    e.observe_all(settlement(T0 + ms(i), f"s{i}") for i in range(5001))
    assert [n.rule for n in e.evaluate(T0 + timedelta(seconds=6)).changes] == ["HighVolume"]
    # 60 s after the first sample it leaves the window: 5000 remain -> resolved (no event needed)
    resolved = e.evaluate(T0 + timedelta(seconds=60)).changes
    assert [(n.rule, n.firing) for n in resolved] == [("HighVolume", False)]


# ----------------------------------------------------------------------------- FX slippage (> 0.5%)


@pytest.mark.parametrize(("second_rate", "fires"), [("0.1507499", False), ("0.15075", False), ("0.1507501", True)])
def test_fx_slippage_boundary(second_rate: str, fires: bool) -> None:
    e = engine()
    e.observe(quote(T0, "0.15"))
    e.observe(quote(T0 + timedelta(seconds=1), second_rate, source="REUTERS"))
    changes = e.evaluate(T0 + timedelta(seconds=1)).changes
    assert [n.labels.get("pair") for n in changes] == (["KAUS/USD"] if fires else [])


def test_fx_slippage_is_per_pair_and_window() -> None:
    e = engine()
    e.observe_all([quote(T0, "0.15"), quote(T0, "1354.21", pair="KAUS/KRW")])
    e.observe(quote(T0 + timedelta(seconds=61), "0.16"))  # the 0.15 quote left the 1m window
    e.observe(quote(T0 + timedelta(seconds=30), "1361.0", pair="KAUS/KRW"))  # +0.501%
    changes = e.evaluate(T0 + timedelta(seconds=61)).changes
    assert [n.labels["pair"] for n in changes] == []
    e.observe(quote(T0 + timedelta(seconds=61), "1361.0", pair="KAUS/KRW"))
    e.observe(quote(T0 + timedelta(seconds=61), "1354.21", pair="KAUS/KRW"))
    changes = e.evaluate(T0 + timedelta(seconds=61)).changes
    assert [(n.labels["pair"], n.value) for n in changes] == [("KAUS/KRW", "0.5014%")]


# ----------------------------------------------------------------------------- HSM key expiry (< 7 days)

SEVEN_DAYS = timedelta(days=7)


@pytest.mark.parametrize(
    ("left", "fires"),
    [(SEVEN_DAYS + ms(1), False), (SEVEN_DAYS, False), (SEVEN_DAYS - ms(1), True), (-timedelta(days=1), True)],
)
def test_key_expiry_boundary(left: timedelta, fires: bool) -> None:
    e = engine()
    e.observe(key(T0, T0 + left))
    assert bool(e.evaluate(T0).changes) is fires


def test_key_expiry_fires_by_time_alone_and_resolves_on_rotation() -> None:
    e = engine()
    e.observe(key(T0, T0 + SEVEN_DAYS + timedelta(seconds=30)))
    assert e.evaluate(T0).changes == []
    assert e.evaluate(T0 + timedelta(seconds=30)).changes == []  # exactly 7 days left
    fired = e.evaluate(T0 + timedelta(seconds=31)).changes
    assert [(n.rule, n.channel, n.escalation, n.labels["key_id"]) for n in fired] == [
        ("HsmKeyExpiry", "email", "L3", "hsm-signing-1")
    ]
    assert "expires in 6d 23h 59m" in fired[0].summary
    rotated = T0 + timedelta(minutes=1)
    e.observe(key(rotated, rotated + timedelta(days=90)))
    assert [(n.rule, n.firing) for n in e.evaluate(rotated).changes] == [("HsmKeyExpiry", False)]


def test_stale_key_update_does_not_overwrite_newer() -> None:
    e = engine()
    e.observe(key(T0 + timedelta(hours=1), T0 + timedelta(days=90)))
    assert e.observe(key(T0, T0 + timedelta(days=1))) is False  # replayed older version
    assert e.evaluate(T0 + timedelta(hours=2)).changes == []


# ----------------------------------------------------------------------------- multi-sig pending (> 2 h)

TWO_HOURS = timedelta(hours=2)


@pytest.mark.parametrize(("age", "fires"), [(TWO_HOURS - ms(1), False), (TWO_HOURS, False), (TWO_HOURS + ms(1), True)])
def test_multisig_pending_boundary(age: timedelta, fires: bool) -> None:
    e = engine()
    e.observe(multisig(T0, T0))
    assert bool(e.evaluate(T0 + age).changes) is fires


def test_multisig_fires_per_request_and_resolves_when_approved() -> None:
    e = engine()
    e.observe_all([multisig(T0, T0, "ms-1"), multisig(T0, T0 + timedelta(hours=1), "ms-2")])
    fired = e.evaluate(T0 + TWO_HOURS + timedelta(seconds=1)).changes
    assert [(n.labels["request_id"], n.value) for n in fired] == [("ms-1", "2h 0m 1s")]
    assert fired[0].summary == "Multi-sig request ms-1 pending for 2h 0m 1s (1/3 signatures)"
    approved_at = T0 + TWO_HOURS + timedelta(minutes=1)
    e.observe(multisig(approved_at, None, "ms-1"))  # APPROVED: the entity is removed
    assert [(n.labels["request_id"], n.firing) for n in e.evaluate(approved_at).changes] == [("ms-1", False)]
    # a replay of the old PENDING record (older version) must not resurrect it
    assert e.observe(multisig(T0, T0, "ms-1")) is False
    assert e.evaluate(approved_at + timedelta(seconds=1)).changes == []


# ----------------------------------------------------------------------------- reposts (Alertmanager resolve_timeout)


def test_firing_alerts_are_reposted_every_repost_interval_not_more() -> None:
    e = engine()
    e.observe(multisig(T0, T0 - TWO_HOURS - timedelta(seconds=1)))
    assert len(e.evaluate(T0).changes) == 1
    assert e.evaluate(T0 + timedelta(seconds=59)).reposts == []
    reposted = e.evaluate(T0 + timedelta(seconds=60)).reposts
    assert [(n.firing, n.starts_at) for n in reposted] == [(True, T0)]
    assert reposted[0].value == "2h 1m 1s"  # current value, original start
    assert e.evaluate(T0 + timedelta(seconds=61)).reposts == []
    assert len(e.evaluate(T0 + timedelta(seconds=120)).reposts) == 1


def test_fingerprint_is_stable_and_label_order_free() -> None:
    a = fingerprint("R", [("region", "KR"), ("rail", "TOSS")])
    assert a == fingerprint("R", [("rail", "TOSS"), ("region", "KR")])
    assert a != fingerprint("R", [("region", "US"), ("rail", "TOSS")])
    assert len(a) == 16 and int(a, 16) >= 0


def test_unused_signals_are_ignored_and_windows_are_pruned() -> None:
    e = engine()
    for i in range(100):
        e.observe(duration(T0 + ms(i), 10, id=f"d{i}"))
    e.evaluate(T0 + timedelta(minutes=10))
    assert e.stats()["window_samples"]["settlement_duration"] == 0
    # after pruning, the same id counts again (it is a new event in a new window)
    assert e.observe(duration(T0 + timedelta(minutes=10), 10, id="d1")) is True


# ------------------------------------------------------------------------- the agent's mapping (registry -> signals)


def test_registry_messages_map_to_signals() -> None:
    from contracts import models as m
    from contracts.examples import build
    from streams.alerting.agent import observations, region_of_market

    failed = build(m.BridgeSettlementFailed, request_id="r9", reason_code="SLIPPAGE", rail=None, failed_at=T0)
    obs = observations(failed)
    assert [(o.signal, o.labels["reason_code"], o.labels["rail"], o.id) for o in obs if isinstance(o, Sample)] == [
        ("settlement_failed", "SLIPPAGE", "none", "bridge:r9"),
        ("settlement", "SLIPPAGE", "none", "bridge:r9"),
    ]
    quote_obs = observations(build(m.FxRate, quote=m.Currency.KRW, rate=Decimal("1354.21"), as_of=T0))
    assert [(o.signal, o.value, o.labels["pair"]) for o in quote_obs if isinstance(o, Sample)] == [
        ("fx_rate", Decimal("1354.21"), "KAUS/KRW")
    ]
    approved = build(
        m.MultisigRequest,
        request_id="ms",
        signatures=4,
        state=m.MultisigState.APPROVED,
        created_at=T0,
        updated_at=T0 + TWO_HOURS,
    )
    assert [(o.key, o.reference, o.version) for o in observations(approved) if isinstance(o, Entity)] == [
        ("ms", None, T0 + TWO_HOURS)
    ]
    active = build(m.KeyMetadata, key_id="k-v2", state=m.KeyState.ACTIVE, observed_at=T0)
    retired = build(m.KeyMetadata, key_id="k-v1", state=m.KeyState.RETIRED, observed_at=T0)
    [(key_active, ref_active)] = [(o.key, o.reference) for o in observations(active) if isinstance(o, Entity)]
    [(key_retired, ref_retired)] = [(o.key, o.reference) for o in observations(retired) if isinstance(o, Entity)]
    assert (key_active, ref_active) == ("k-v2", active.expires_at)  # its expiry is watched
    assert (key_retired, ref_retired) == ("k-v1", None)  # a rotated-out version never pages (the fact is removed)
    trade = build(m.TradeSettled, phase_durations_us={"matching": 35_000, "transfer": 1_000_000}, settled_at=T0)
    durations = [o.value for o in observations(trade) if isinstance(o, Sample) and o.signal == "settlement_duration"]
    assert durations == [Decimal("1.035")]
    assert region_of_market("2026-11-24T10:00Z/KR-SEOUL") == "KR"
    assert region_of_market("2026-11-24T10:00Z/ZZ-NOWHERE") == "OTHER"
