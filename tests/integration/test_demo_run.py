"""Issue 2 acceptance: the run command brings the stack up, shows events flowing, and stops cleanly
(no broker, worker, Alertmanager, simulator or dashboard left behind) — at the end of a run and on Ctrl-C.
Issue 16: before it stops, it reconciles today's traffic (the nightly steps on its broker and simulator) and
shows the figures, which the copy of the warehouse it publishes for readers holds too. Issue 19 and the governed
operations: the settlement API's scene and the signers' parameter change and payout approval, as the demo's last
panel shows them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests.support.demo_env import METRICS_PORTS, PORT_SETTINGS, demo_env, read_until_streaming, start_demo

pytestmark = pytest.mark.slow


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _row(out: str, label: str) -> str:
    """The last value the demo's reconciliation panel showed for ``label`` (one table row, borders stripped)."""
    rows = re.findall(rf"│ {re.escape(label)} +│ (.+?) +│", out)
    assert rows, f"no {label!r} row in the reconciliation panel:\n{out[-4000:]}"
    return str(rows[-1])


def _assert_reconciled_today(out: str, data_dir: Path, days: set[date]) -> None:
    """The panel ends with today's figures of the traffic just streamed, and the published copy holds them."""
    assert "reconciling today's traffic before stopping" in out
    assert "2026-11-02" not in out  # not the seeded day the panel once showed
    day = date.fromisoformat(_row(out, "date").split()[0])
    assert day in days
    counts = re.findall(r"(\w+ \w+) ([\d,]+)", _row(out, "settlements today"))
    by_kind = {kind: int(n.replace(",", "")) for kind, n in counts}
    assert by_kind.get("bridge completed", 0) > 0 and by_kind.get("trade completed", 0) > 0, by_kind
    rate = Decimal(_row(out, "automatic match rate").rstrip("%"))
    breaks = _row(out, "tie-out breaks")
    assert breaks.startswith("not tied 0, without ledger 0, orphans 0"), breaks  # exact, by the services' references
    assert _row(out, "data quality") == "every check passed"
    assert _row(out, "exceptions by class") == "0" and rate == 100, (rate, _row(out, "exceptions by class"))
    assert Path(_row(out, "report")) == data_dir / "recon" / "reports" / f"recon-{day}.pdf"
    assert Path(_row(out, "report")).stat().st_size > 0
    copy = Path(_row(out, "analyst copy").split(" (")[0])
    assert copy == data_dir / "recon" / "warehouse.published.duckdb"
    with duckdb.connect(str(copy), read_only=True) as con:  # what an analyst opens: the same figures
        [(settlements, amr)] = con.execute(
            "SELECT settlements, automatic_match_rate FROM recon_runs WHERE recon_date = $d", {"d": day}
        ).fetchall()
        [(completed,)] = con.execute(
            "SELECT count(*) FROM fct_settlements WHERE settled_date = $d AND kind = 'bridge' AND status = 'completed'",
            {"d": day},
        ).fetchall()
    assert (Decimal(amr) * 100).quantize(Decimal("0.01")) == rate and settlements > 0
    assert completed == by_kind["bridge completed"]


def _assert_money_out(out: str) -> None:
    """Issue 17: rules created (one dead-lettered), a threshold payout paid, one declined with its hold voided, the
    KYC-pending holder waiting or already paid once verified, and the holders notified."""
    assert "Money out: auto-payouts, KYC, dividend epochs" in out
    assert re.search(r"THRESHOLD PAYPAL +│ PAID 2400\.000000 K-AUS", out), out[-6000:]
    assert re.search(r"THRESHOLD WISE +│ FAILED PROVIDER_DECLINED in MERCHANT_CREDIT: hold voided", out)
    assert "KEEP_MINIMUM_ABOVE_THRESHOLD 1" in out
    assert "KYC_PENDING" in out or re.search(r"THRESHOLD TOSS +│ PAID", out)
    assert re.search(r"EMAIL DELIVERED [1-9]", out)


def _assert_security(out: str) -> None:
    """Issue 18: what the security scene reliably shows 20 s into a run: the HSM's keys published by the key manager,
    checkpoints signed by its signing key, the treasury transfer signed 3/5 (in its scaled timelock, or executed)
    and the emergency pause executed with 2/5. The rest of the scene (unpause, rotation, verifier) comes later; a
    run by hand shows it."""
    assert "Security: multi-sig governance, pause, HSM keys, audit log" in out, out[-6000:]
    assert re.search(
        r"│ request TREASURY_TRANSFER +│ 1,000\.000000 K-AUS, (APPROVED 3/3, in its timelock|EXECUTED 3/3)", out
    )
    assert re.search(r"│ request PAUSE +│ EXECUTED 2/2 \(demo-pause-", out), out[-6000:]
    assert re.search(r"│ HSM keys +│ ENCRYPTION v1 ACTIVE; MASTER v1 ACTIVE; SIGNING v1 ", out)
    assert re.search(r"│ audit log +│ [\d,]+ records; last checkpoint [\d:]+ UTC signed by nexus-signing-v\d", out)
    assert "failed:" not in _security_scene(out)


def _assert_sealed(out: str, data_dir: Path) -> None:
    """Issue 18 item 2 in the demo: personal data sealed end to end under the HSM's encryption key. Every payout request
    carries its account sealed and masked, every KYC record its contacts, every notification its destination; the
    provider simulator paid the holders at their rules' own accounts (which only the bridge opened), never a mask;
    and the payouts service's state file keeps no contact or account in clear. Fails with sealing off."""
    for topic, what in (("payouts.requests", "payout accounts"), ("kyc.status", "KYC contacts"),
                        ("notifications.holders", "destinations")):  # fmt: skip
        counts = re.findall(rf"│ sealed {re.escape(topic)} +│ {what}: (\d+) of (\d+) sealed and masked", out)
        assert counts, f"no sealed {topic} row:\n{out[-6000:]}"
        sealed, seen = (int(n) for n in counts[-1])
        assert seen > 0 and sealed == seen, (topic, sealed, seen)
    assert re.search(r"│ sealed with +│ nexus-encryption-v\d", out), out[-6000:]
    paid = re.findall(r"│ holder payouts +│ (\d+) paid to the rule's own account, (\d+) to a masked one", out)
    assert paid and int(paid[-1][0]) > 0 and paid[-1][1] == "0", paid[-1:]
    state = (data_dir / "payouts" / "state.json").read_text()
    assert "enc:v1:nexus-encryption-v" in state
    for plain in (r"[A-Za-z0-9-]{2,}@example\.com", r"\+8210\d{8}", r"acct_[0-9a-f]+schedule", r"push-[0-9a-f]{6}"):
        assert not re.search(plain, state), f"{plain} in clear in the payouts service's state file"


def _scenes_at_end(out: str) -> str:
    """The demo's last panel: the API's, the governed operations' and the security scene's tables as they ended."""
    title = "NEXUS-X demo: the scenes as they ended"
    assert title in out, out[-6000:]
    return out[out.rindex(title) :]


def _assert_api(out: str) -> None:
    """Issue 19 in the demo: the status service and the API run; a merchant client's token; a GOLD payer's payment
    settled (cashback at GOLD's 300 bps), the same key replayed (same body, the provider paid once), a payer without
    funds refused at BALANCE_LOCK, a payment after the signers' change earning 450 bps; each payment's status from the
    read model and the merchant's history page, newest first."""
    assert "status worker (streams.status) ready" in out and "api worker (streams.api) ready" in out
    end = _scenes_at_end(out)
    assert re.search(r"│ scene +│ done: token, payments", end), end[:4000]
    assert re.search(r"│ POST /oauth/token +│ 200 Bearer JWT for \d+ s, scopes settlements:read settlements:write", end)
    paid = r"200 COMPLETED on STRIPE_SEPA: [\d,]+\.\d{6} K-AUS, cashback"
    assert re.search(rf"│ POST /bridge \(GOLD\) +│ {paid} 300 bps \(key demo-api-gold-\w+\)", end), end[:4000]
    assert re.search(r"│ same key again +│ 200, Idempotent-Replayed: true, the same body byte for byte", end)
    assert re.search(r"│ provider paid +│ 1 time\(s\) for demo-api-gold-", end)
    assert re.search(r"│ POST /bridge \(no funds\) +│ 200 FAILED in BALANCE_LOCK: INSUFFICIENT_FUNDS", end)
    after = re.search(rf"│ POST /bridge \(GOLD, new rate\) +│ {paid} 450 bps \(key demo-api-gold-after-", end)
    assert after, end[:4000]
    statuses = dict(re.findall(r"│ GET /status/demo-api-([a-z-]+)-\w{6} +│ (.+?) +│", end))
    assert statuses == {
        "gold": "COMPLETED STRIPE_SEPA, owner merchant-demo",
        "poor": "FAILED BALANCE_LOCK INSUFFICIENT_FUNDS, owner merchant-demo",
        "gold-after": "COMPLETED STRIPE_SEPA, owner merchant-demo",
    }, statuses
    assert re.search(r"│ GET /history +│ 3 of merchant-demo's, newest first: demo-api-gold-after-\w+ COMPLETED, "
                     r"demo-api-poor-\w+ FAILED,", end), end[:4000]  # fmt: skip


def _assert_governed(out: str) -> None:
    """Governed operations in the demo: GOLD's cashback changed 300 -> 450 bps by a PARAMETER_CHANGE signed 3/5 (in
    force, applied by the bridge: the API's next payment earned it, _assert_api); a payout one K-AUS above the
    50,000 K-AUS auto-approval limit waited APPROVAL_PENDING once, was approved 4/5 and paid once, for exactly that."""
    end = _scenes_at_end(out)
    assert re.search(r"│ parameter scene +│ done: cashback\.bps\.GOLD = 450 bps in force", end), end[:6000]
    assert re.search(r"│ payout scene +│ done: asked, approved by the signers, paid", end), end[:6000]
    assert re.search(r"│ request PARAMETER_CHANGE +│ EXECUTED 3/3 \(demo-cashback-", end)
    assert re.search(r"│ GOLD cashback +│ 300 -> 450 bps requested; in force: 450 bps", end)
    approval = r"50,001\.000000 K-AUS, EXECUTED 4/4 \(PAYOUT:r-approval-\w+:T0\)"
    assert re.search(rf"│ request PAYOUT_APPROVAL +│ {approval}", end), end[:6000]
    assert re.search(r"│ payout above the limit +│ r-approval-\w+: waits APPROVAL_PENDING 1 ", end)
    results = re.findall(r"│ payout result +│ (.+?) +│", end[: end.index("Security: multi-sig governance")])
    assert len(results) == 1 and re.fullmatch(
        r"PAID 50,001\.000000 K-AUS \((r-approval-\w+:T0), approval PAYOUT:\1\)", results[0]
    ), results
    assert re.search(r"│ paid once +│ 1 result\(s\), 1 payout\(s\) at the provider", end)


# Issue 20 item 5: every process serving /metrics, per runtime, as Prometheus labels it (its `component`).
SCRAPED = {  # each on its own port from NEXUS_METRICS_PORT up
    "faust": {"worker", "payouts", "notifier", "audit", "governance", "status"},
    "plain": {"p2p", "bridge", "worker", "payouts", "notifier", "audit", "governance", "status"},
}
STANDBY_SCRAPED = "replication-monitor"  # on NEXUS_STANDBY_MONITOR_PORT (devtools/standby_demo.py)


def _assert_scraped(out: str, data_dir: Path, runtime: str) -> None:
    """Prometheus scraped every worker's /metrics (the live view's last word: all up), and its Watchdog went through
    the demo's Alertmanager to the dead man's switch at the sink, which the notifications do not count as an alert."""
    assert "Prometheus ready at http://127.0.0.1:" in out, out[-3000:]
    rows = re.findall(r"│ Prometheus +│ (\d+)/(\d+) targets up(.*?) +│", out)
    assert rows, out[-6000:]
    up, total, which = rows[-1]
    expected = SCRAPED[runtime] | {STANDBY_SCRAPED}
    assert (int(up), int(total)) == (len(expected), len(expected)), rows[-1]
    assert set(which.strip(" ()").split(", ")) == expected, which
    sink = [json.loads(line) for line in (data_dir / "alertmanager" / "sink.jsonl").read_text().splitlines()]
    heard = [r for r in sink if r.get("path") == "/deadmansswitch"]
    assert heard, [r.get("path") for r in sink]
    assert {a["labels"]["alertname"] for r in heard for a in r["body"]["alerts"]} == {"Watchdog"}
    assert re.search(r"│ Watchdog +│ watchdog ok \(\d+ heard", out), out[-6000:]
    assert not re.search(r"│ [\d:]{8} +│ other /deadmansswitch", out)  # not among the notifications


def _security_scene(out: str) -> str:
    rows = re.findall(r"│ scene +│ (.+?) +│", out[out.rindex("Security: multi-sig governance") :])
    assert rows, out[-6000:]
    return str(rows[0])


def _assert_standby(out: str, data_dir: Path) -> None:
    """The standby region got everything: each partition's last committed record, the workers' group offsets."""
    assert "standby Kafka ready on 127.0.0.1:" in out, out[-3000:]
    caught_up = re.search(r"standby region: caught up in [\d.]+ s: .*?(\d+) consumer groups' offsets translated", out)
    assert caught_up, "\n".join(line for line in out.splitlines() if "standby" in line)
    assert int(caught_up.group(1)) >= 2  # the P2P or Faust worker's group and the bridge's at least
    # the replication monitor probed both regions while MM2 ran, and found the standby within the RPO at the end
    delay = re.search(r"replication delay ([\d.]+) s now, worst [\d.]+ s over (\d+) probes of (\d+) partitions", out)
    assert delay, "\n".join(line for line in out.splitlines() if "standby" in line)
    assert float(delay.group(1)) < 60 and int(delay.group(2)) >= 1 and int(delay.group(3)) >= 20
    assert not (data_dir / "kafka" / "mirror" / "mirror.pid").exists()  # MirrorMaker 2 stopped with the demo


def _utc_today() -> date:
    return datetime.now(UTC).date()


def _assert_nothing_listens(ports: list[int]) -> None:
    for port in ports:
        assert not _port_open(port), f"something still listens on {port} after the demo stopped"


@pytest.mark.parametrize("runtime", ["faust", "plain"])
def test_demo_streams_events_and_leaves_nothing_running(tmp_path: Path, runtime: str) -> None:
    env, ports = demo_env(tmp_path, "demo-test")
    before = _utc_today()
    run = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--duration", "20", "--rate", "200", "--runtime", runtime],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "Kafka broker ready" in out and "Faust worker ready" in out
    assert "→ energy.trades" in out and "→ energy.settlements" in out
    assert "Latest dead letters" in out and "MALFORMED_JSON" in out
    assert "OVERSIZED" in out  # the gzip-compressed 3 MB order: a bounded dead letter, its bytes stored aside
    assert "High-Speed Bridge" in out and "settled" in out
    assert "duplicates answered, marked repeat" in out and "results on disk" in out  # the result index
    assert "answers differing" not in out
    assert "keys worker (streams.security.keys) ready" in out and "governance worker" in out
    assert "FILLED" in out and "bid kWh" in out  # fill events on energy.orders.events, sizes on energy.prices
    assert "stopped the worker and the broker" in out
    _assert_money_out(out)
    _assert_security(out)
    _assert_sealed(out, tmp_path)
    _assert_api(out)
    _assert_governed(out)
    _assert_reconciled_today(out, tmp_path, {before, _utc_today()})
    _assert_scraped(out, tmp_path, runtime)
    _assert_standby(out, tmp_path)
    metrics = ports[PORT_SETTINGS.index("METRICS_PORT")]
    _assert_nothing_listens([*ports, *range(metrics, metrics + METRICS_PORTS)])
    assert not list((tmp_path / "run").glob("*.pid"))
    assert not list((tmp_path / "prometheus").glob("*.pid"))
    if runtime == "plain":
        assert "p2p worker (streams.p2p) ready" in out and "bridge worker (streams.bridge.loop) ready" in out


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the foreground process group: the demo reconciles what it streamed,
    then cleans up (`make run` streams until Ctrl-C, so this is where its reconciliation panel shows)."""
    env, ports = demo_env(tmp_path, "demo-test")
    before = _utc_today()
    demo = start_demo(env)
    seen = read_until_streaming(demo, 180)
    assert "press Ctrl-C to stop" in seen, seen[-3000:]
    time.sleep(5)
    os.killpg(demo.pid, signal.SIGINT)
    out, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, out[-3000:]
    assert "stopped the worker and the broker" in out
    _assert_reconciled_today(seen + out, tmp_path, {before, _utc_today()})
    _assert_nothing_listens(ports)
