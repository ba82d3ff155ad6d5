"""Auto-payouts end to end (issue 17): the payouts service as a real process between the platform's ledger and the
bridge, on the session broker.

The P2P worker runs the ledger (``streams.p2p``), the bridge its plain runtime (``streams.bridge.loop``) against the
provider simulator, an FX feed publishes fresh quotes, and ``python -m streams.payouts`` decides. Deposits fund
holders through ``ledger.commands``; KYC statuses go straight to ``kyc.status`` (what the KYC receiver writes);
rules to ``payouts.rules``. Checked:

(a) a THRESHOLD payout pays exactly the excess: afterwards the holder has keep-minimum to the unit, the
    ``payouts.results`` record is PAID with its payout id, the K-AUS debited and the fiat paid;
(b) a KYC-pending holder waits (``payouts.waiting``, a PAYOUT_WAITING notification), and is paid under the same
    payout id once verified;
(c) a DAILY schedule whose time has just passed pays once; the service is then SIGKILLed having saved nothing since
    before the rule, restarts, decides the period again under the same payout id and the bridge answers it with the
    original result: one payout at the provider, one capture, nothing more for the period;
(d) a provider failure: FAILED, the hold voided, the holder's balance unchanged, nothing at the provider.

The service's state file (``<data>/payouts/state.json``) tells when it has read a record (its mirror's balances,
its KYC statuses and input offsets): a step that needs it waits for it, never for a time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    FX_RATES,
    KYC_STATUS,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
    Topic,
)
from devtools.fx_feed import fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import bridge_tx_id_for, kaus_to_minor_floor
from domain.money import Currency
from tests.integration.provider_fixtures import free_port, provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

FX_DAY = date(2026, 10, 30)
K = 1_000_000
CLOCK_OFFSET_MS = 10 * 60_000  # the payouts service's rules clock runs 10 minutes ahead (schedules only)


def values(kafka: KafkaIO, topic: Topic) -> list[dict[str, Any]]:
    return kafka.values(topic)  # other tests' deliberately bad records on the shared broker are skipped


@dataclass
class Platform:
    kafka: KafkaIO
    sim: ProviderSimProcess
    payouts: WorkerProcess
    token: str

    @property
    def state_path(self) -> Path:
        return self.payouts.data_dir / "payouts" / "state.json"

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_bytes()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait_state(self, what: str, check: Callable[[dict[str, Any]], bool], timeout_s: float = 120) -> dict[str, Any]:
        """The service's saved state once ``check`` holds (the service has read what the test needs)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state()
            if state and check(state):
                return state
            time.sleep(0.2)
        raise AssertionError(f"payouts state never showed {what}: {json.dumps(self.state())[:2000]}")

    def mirrored(self, account: str, units: int) -> dict[str, Any]:
        return self.wait_state(f"{account} at {units}", lambda s: s["mirror"]["balances"].get(account) == units)

    def read_past(self, topic: Topic, at: tuple[int, int]) -> dict[str, Any]:
        """The saved state once the service has read the record at ``at`` (its outputs are then on their topics)."""
        partition, offset = at
        key = f"{topic.name}:{partition}"
        return self.wait_state(f"{key} past {offset}", lambda s: s["offsets"].get(key, 0) > offset)

    def kyc(self, account: str, status: str, email: str | None = None) -> None:
        message = m.KycStatusChanged(
            account_id=account,
            status=status,
            provider="SUMSUB",
            applicant_id=f"app-{account}",
            event_id=f"evt-{account}-{time.time_ns()}",
            email=email,
            occurred_at=datetime.now(UTC),
        )
        self.read_past(KYC_STATUS, self.kafka.produce_acked(KYC_STATUS, account.encode(), KYC_STATUS.encode(message)))

    def deposit(self, account: str, units: int) -> None:
        self.kafka.produce_messages(
            LEDGER_COMMANDS,
            [m.Deposit(command_id=f"dep-{account}-{units}-{time.time_ns()}", account_id=account,
                       amount_kaus_units=units, occurred_at=datetime.now(UTC))],
        )  # fmt: skip

    def rule(self, rule_id: str, account: str, **fields: Any) -> tuple[int, int]:
        base: dict[str, Any] = {
            "rule_id": rule_id,
            "account_id": account,
            "payout_provider": "STRIPE",
            "payout_currency": "USD",
            "payout_account": f"acct_{self.token}{rule_id[-4:]}",
            "max_payout_per_tx_kaus_units": 100_000 * K,
        }
        value = PAYOUT_RULES.encode(m.AutoPayoutRule.model_validate({**base, **fields}))
        return self.kafka.produce_acked(PAYOUT_RULES, rule_id.encode(), value)

    def results(self, payout_id: str, count: int = 1, timeout_s: float = 90) -> list[dict[str, Any]]:
        def mine(records: list[Any]) -> list[dict[str, Any]]:
            found = [json.loads(r.value) for r in records if r.value]
            return [v for v in found if v["payout_id"] == payout_id]

        return mine(self.kafka.wait_for(PAYOUT_RESULTS, lambda rs: len(mine(rs)) >= count, timeout_s=timeout_s))

    def of(self, topic: Topic, account: str, field: str = "account_id") -> list[dict[str, Any]]:
        return [v for v in values(self.kafka, topic) if v.get(field) == account]

    def at_least(self, topic: Topic, account: str, count: int, timeout_s: float = 90) -> list[dict[str, Any]]:
        """The account's records on ``topic`` once there are ``count`` of them."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.of(topic, account)) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} {topic.name} records of {account}"
            time.sleep(0.5)
        return found

    def ledger_balance(self, account: str) -> tuple[int, set[str]]:
        """The holder's posted K-AUS and its open holds, from the ledger's own records."""
        total, placed, resolved = 0, set(), set()
        for t in values(self.kafka, LEDGER_TRANSFERS):
            if account not in (t["debit_account_id"], t["credit_account_id"]) or t["asset"] != "KAUS":
                continue
            if t["kind"] in ("POSTED", "POST_PENDING"):
                total += t["amount_units"] * ((t["credit_account_id"] == account) - (t["debit_account_id"] == account))
            if t["kind"] == "PENDING":
                placed.add(t["transfer_id"])
            if t["kind"] in ("POST_PENDING", "VOID_PENDING"):
                resolved.add(t["pending_id"])
        return total, placed - resolved

    def provider_payouts(self, payout_id: str) -> list[dict[str, Any]]:
        tx = bridge_tx_id_for(payout_id)
        return [p for p in self.sim.payouts() if tx in json.dumps(p)]


@pytest.fixture(scope="module")
def platform(
    kafka: KafkaIO, provider_sim: ProviderSimProcess, sim_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    provider_sim.reset()
    token = f"{time.time_ns() % 10**10:010d}"
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            kafka.produce_messages(FX_RATES, fx_quotes(FX_DAY, 0, datetime.now(UTC)))
            stop.wait(0.5)

    fx = threading.Thread(target=feed, daemon=True)
    fx.start()
    data = tmp_path_factory.mktemp("payouts-e2e")
    provider = {"NEXUS_PROVIDER_SIM_URL": provider_sim.url, "NEXUS_PROVIDER_KEYS_DIR": str(sim_keys_dir),
                "NEXUS_PROVIDER_TRANSPORT": "aiohttp"}  # fmt: skip

    def worker(name: str, module: str, env: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(kafka.bootstrap, f"nexus-payouts-e2e-{name}-{token}", data / name, free_port(),
                             free_port(), env, module=module)  # fmt: skip

    workers = [
        worker("ledger", "streams.p2p", {"NEXUS_AGENTS": "settlement"}),
        worker("bridge", "streams.bridge.loop", provider),
        worker("payouts", "streams.payouts", {"NEXUS_PAYOUTS_CLOCK_OFFSET_MS": str(CLOCK_OFFSET_MS)}),
    ]
    try:
        for w in workers:
            w.start(wait=False)
        for w in workers:
            w.wait_ready(120)
        yield Platform(kafka, provider_sim, workers[2], token)
    finally:
        stop.set()
        fx.join(5)
        for w in workers:
            w.stop()
        for w in workers:  # the holders' contacts never reach a log
            assert "@example.com" not in w.log_text(since_start=False), w.app_id


def usd_of(units: int, result: dict[str, Any]) -> int:
    return kaus_to_minor_floor(units, Decimal(result["rate"]), Currency.USD)


def test_a_threshold_payout_pays_exactly_the_excess(platform: Platform) -> None:
    holder = f"holder-thr-{platform.token}"
    platform.kyc(holder, "VERIFIED", email=f"thr-{platform.token}@example.com")
    platform.rule(f"r-thr-{platform.token}", holder, trigger_type="THRESHOLD", threshold_kaus_units=1_000 * K,
                  keep_minimum_kaus_units=200 * K)  # fmt: skip
    platform.deposit(holder, 1_500 * K + 7)
    payout_id = f"r-thr-{platform.token}:T0"
    [result] = platform.results(payout_id)
    excess = 1_300 * K + 7
    assert (result["status"], result["kaus_debited_units"], result["account_id"]) == ("PAID", excess, holder)
    assert result["amount_minor"] == usd_of(excess, result) > 0 and result["currency"] == "USD"
    assert result["rail"] == "STRIPE_INSTANT" and result["provider"] == "STRIPE"
    balance, open_holds = platform.ledger_balance(holder)
    assert balance == 200 * K and open_holds == set()  # keep-minimum, to the unit
    [paid] = platform.provider_payouts(payout_id)
    assert paid["amount_minor"] == result["amount_minor"]
    [request] = [r for r in platform.of(BRIDGE_REQUESTS, holder, "payer_account_id")]
    assert request["request_id"] == payout_id and request["payout"]["amount_kaus_units"] == excess
    notes = platform.of(NOTIFICATIONS_HOLDERS, holder)
    assert [n["notification_id"] for n in notes] == [f"{payout_id}:PAYOUT_COMPLETED:EMAIL"]


def test_a_kyc_pending_holder_waits_and_is_paid_once_verified(platform: Platform) -> None:
    holder, rule_id = f"holder-kyc-{platform.token}", f"r-kyc-{platform.token}"
    platform.kyc(holder, "PENDING", email=f"kyc-{platform.token}@example.com")
    platform.rule(rule_id, holder, trigger_type="THRESHOLD", threshold_kaus_units=100 * K)
    platform.deposit(holder, 250 * K)

    def waits(records: list[Any]) -> list[dict[str, Any]]:
        return [v for v in (json.loads(r.value) for r in records if r.value) if v["account_id"] == holder]

    [wait] = waits(platform.kafka.wait_for(PAYOUT_WAITING, lambda rs: bool(waits(rs))))
    assert (wait["payout_id"], wait["reason_code"], wait["amount_kaus_units"]) == (
        f"{rule_id}:T0",
        "KYC_PENDING",
        250 * K,
    )
    platform.mirrored(holder, 250 * K)
    assert platform.of(PAYOUT_REQUESTS, holder) == [] and platform.of(BRIDGE_REQUESTS, holder, "payer_account_id") == []
    platform.kyc(holder, "VERIFIED", email=f"kyc-{platform.token}@example.com")
    [result] = platform.results(wait["payout_id"])
    assert (result["status"], result["kaus_debited_units"]) == ("PAID", 250 * K)
    assert platform.ledger_balance(holder) == (0, set())
    events = sorted(n["event"] for n in platform.of(NOTIFICATIONS_HOLDERS, holder))
    assert events == ["PAYOUT_COMPLETED", "PAYOUT_WAITING"]


def test_a_schedule_pays_once_for_its_period_across_a_sigkill_and_restart(platform: Platform) -> None:
    holder, rule_id = f"holder-day-{platform.token}", f"r-day-{platform.token}"
    platform.deposit(holder, 400 * K)
    platform.mirrored(holder, 400 * K)
    platform.kyc(holder, "VERIFIED")
    # A second instance that saves nothing after its first loop: the SIGKILL below loses the rule, the decision and
    # the result, so the restart decides the period again.
    payouts = platform.payouts
    payouts.stop()
    payouts.extra_env["NEXUS_PAYOUTS_SAVE_EVERY_S"] = "3600"
    started = time.time()
    payouts.start()
    platform.wait_state("the first save of the new instance", lambda _: platform.state_path.stat().st_mtime > started)
    # Due at once: the rule is written now, its time is two minutes on, and the rules' clock is ten minutes ahead.
    # Capped at 300 K-AUS: 100 are left, which the period would pay if it were decided again.
    due = datetime.now(UTC) + timedelta(minutes=2)
    at = platform.rule(rule_id, holder, trigger_type="SCHEDULE", schedule_type="DAILY",
                       schedule_time_utc=due.strftime("%H:%M"), max_payout_per_tx_kaus_units=300 * K)  # fmt: skip
    payout_id = f"{rule_id}:D{due.date().isoformat()}"
    [first] = platform.results(payout_id)
    assert (first["status"], first["kaus_debited_units"]) == ("PAID", 300 * K)
    payouts.kill()
    assert platform.state()["offsets"].get(f"{PAYOUT_RULES.name}:{at[0]}", 0) <= at[1]  # saved before the rule
    payouts.extra_env.pop("NEXUS_PAYOUTS_SAVE_EVERY_S")
    payouts.start()
    # The restart reads the rule again and decides the period again, under the same payout id; having read its own
    # payouts.requests back first, it keeps the 300 K-AUS it was sent with (not the 100 left now). The bridge
    # answers that request id with its original result, which is reported once more. The restart may also read the
    # original answer before it decides the period again and report it then: the second request can come after it.
    [_, again] = platform.results(payout_id, count=2)
    assert again == first
    requests = platform.at_least(PAYOUT_REQUESTS, holder, 2)
    assert [(r["payout_id"], r["amount_kaus_units"]) for r in requests] == [(payout_id, 300 * K), (payout_id, 300 * K)]
    period = f"D{due.date().isoformat()}"
    platform.wait_state(
        "the period paid and its payout settled",
        lambda s: s["book"]["periods"].get(rule_id) == period and s["book"]["accounts"][holder]["in_flight"] is None,
    )
    platform.kyc(holder, "VERIFIED")  # evaluated again: the period is paid
    assert len(platform.of(PAYOUT_REQUESTS, holder)) == 2
    assert len(platform.provider_payouts(payout_id)) == 1
    assert platform.ledger_balance(holder) == (100 * K, set())


def test_a_provider_failure_voids_the_hold_and_leaves_the_balance(platform: Platform) -> None:
    holder, rule_id = f"holder-fail-{platform.token}", f"r-fail-{platform.token}"
    platform.kyc(holder, "VERIFIED", email=f"fail-{platform.token}@example.com")
    platform.sim.configure({"STRIPE_INSTANT": {"fail_next": 1}})
    platform.rule(rule_id, holder, trigger_type="THRESHOLD", threshold_kaus_units=10 * K)
    platform.deposit(holder, 80 * K)
    [result] = platform.results(f"{rule_id}:T0")
    assert (result["status"], result["reason_code"], result["kaus_debited_units"]) == ("FAILED", "PAYOUT_FAILED", None)
    assert platform.ledger_balance(holder) == (80 * K, set())  # held, then voided: nothing moved
    hold = f"{bridge_tx_id_for(result['payout_id'])}:hold"
    kinds = sorted(
        t["kind"] for t in values(platform.kafka, LEDGER_TRANSFERS) if hold in (t["transfer_id"], t["pending_id"])
    )
    assert kinds == ["PENDING", "VOID_PENDING"]
    assert platform.provider_payouts(result["payout_id"]) == []
    [note] = platform.of(NOTIFICATIONS_HOLDERS, holder)
    assert note["event"] == "PAYOUT_FAILED" and "Nothing was debited" in note["text"]
