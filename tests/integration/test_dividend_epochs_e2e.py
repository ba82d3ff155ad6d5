"""Issue 17 items 6 and 7 end to end: the ledger worker's own epoch timer declares each dividend epoch once, pro rata
over an energy node and a staker (the staker's weight from the vault), the pool conserved to the unit, and neither a
re-sent declaration nor a SIGKILL of the worker declares an epoch twice.

The broker is the test's own: the ledger is one fold over all of ledger.commands, and the session broker's ledger
holds other tests' pools and holders. One-minute epochs, a timer every second.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts.topics import DIVIDENDS_DECLARED, LEDGER_COMMANDS, LEDGER_TRANSFERS
from domain.staking import staked_account_id
from domain.trade_settlement import SYS_DIVIDENDS
from tests.integration.provider_fixtures import free_port
from tests.integration.recon_kafka import backdated_broker
from tests.support import schema_check
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

POOL_UNITS = 1_000_001
STAKED_UNITS = 4_000_000


def dividends(kafka: KafkaIO, accounts: set[str]) -> list[dict[str, Any]]:
    rows = [orjson.loads(r.value) for r in kafka.read_all(DIVIDENDS_DECLARED) if r.value is not None]
    return [r for r in rows if r["account_id"] in accounts]


def balances(kafka: KafkaIO) -> dict[str, int]:
    """Posted K-AUS per account from every ledger.transfers record (the test's broker holds only this test's)."""
    out: dict[str, int] = defaultdict(int)
    for record in kafka.read_all(LEDGER_TRANSFERS):
        assert record.value is not None
        t = orjson.loads(record.value)
        if t["asset"] == "KAUS" and t["kind"] in ("POSTED", "POST_PENDING"):
            out[t["debit_account_id"]] -= t["amount_units"]
            out[t["credit_account_id"]] += t["amount_units"]
    return out


def test_the_ledger_declares_each_epoch_once_over_nodes_and_stakers(tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    node, staker = f"acct-node-{token}", f"acct-staker-{token}"
    # Staked two minutes back: whichever closed epoch the timer declares first after the pool arrives, the staker
    # has been staked through all of it (the pool is deposited last: a declaration before it has nothing to split).
    now = datetime.now(UTC) - timedelta(minutes=2)
    with backdated_broker(tmp_path / "kafka") as bootstrap:
        kafka = KafkaIO(bootstrap)
        env = {
            "NEXUS_AGENTS": "settlement",
            "NEXUS_DIVIDEND_EPOCH_MINUTES": "1",
            "NEXUS_DIVIDEND_TIMER_EVERY_S": "1",
            "NEXUS_LEDGER_SNAPSHOT_EVERY_S": "1",
        }
        worker = WorkerProcess(
            bootstrap, f"nexus-epochs-{token}", tmp_path / "w", free_port(), free_port(), env, module="streams.p2p"
        )
        worker.start()
        try:
            commands: list[Any] = [
                m.Deposit(command_id=f"dep-s-{token}", account_id=staker, amount_kaus_units=10**7, occurred_at=now),
                m.Stake(command_id=f"pos-{token}", account_id=staker, amount_kaus_units=STAKED_UNITS, occurred_at=now),
                m.RegisterDividendHolder(
                    command_id=f"reg-{token}", account_id=node, source="ENERGY_NODE", weight=3, occurred_at=now
                ),
                m.Deposit(
                    command_id=f"pool-{token}", account_id=SYS_DIVIDENDS, amount_kaus_units=POOL_UNITS, occurred_at=now
                ),
            ]
            kafka.produce_messages(LEDGER_COMMANDS, commands)
            kafka.flush()
            kafka.wait_for(DIVIDENDS_DECLARED, lambda _: len(dividends(kafka, {node, staker})) >= 2, timeout_s=150)
            paid = dividends(kafka, {node, staker})
            [epoch_id] = {d["dividend_id"].split("/")[0] for d in paid}
            assert epoch_id.startswith("div-") and epoch_id.endswith("-1m")
            # half the pool per source, each source one holder; the floors stay in the pool
            assert {(d["account_id"], d["source"]): d["amount_kaus_units"] for d in paid} == {
                (node, "ENERGY_NODE"): 500_000,
                (staker, "STAKING"): 500_000,
            }
            held = balances(kafka)
            assert held[SYS_DIVIDENDS] == POOL_UNITS - 1_000_000  # Σ declared + carried = pool
            assert held[staked_account_id(staker)] == STAKED_UNITS  # staked K-AUS is not paid out

            worker.kill()  # SIGKILL, then a restarted timer and a re-sent declaration of the same epoch
            worker.start()
            kafka.produce_messages(LEDGER_COMMANDS, [m.DeclareDividends(command_id=epoch_id, occurred_at=now)])
            kafka.flush()
            marker = f"dep-after-{token}"
            kafka.produce_messages(
                LEDGER_COMMANDS,
                [m.Deposit(command_id=marker, account_id=node, amount_kaus_units=1, occurred_at=datetime.now(UTC))],
            )
            kafka.flush()
            kafka.wait_for(LEDGER_TRANSFERS, lambda rs: any(r.key == marker.encode() for r in rs), timeout_s=60)
            again = dividends(kafka, {node, staker})
            # Sorted: the declarations are keyed by account, so they sit on different partitions and a read may
            # interleave them either way; a duplicate still shows as an extra entry.
            assert sorted(
                (d for d in again if d["dividend_id"].startswith(epoch_id)), key=lambda d: d["dividend_id"]
            ) == sorted((d for d in paid if d["dividend_id"].startswith(epoch_id)), key=lambda d: d["dividend_id"])
            assert sum(d["amount_kaus_units"] for d in again) <= 1_000_001  # later epochs share only what was carried
        finally:
            worker.stop()
            schema_check.verify(bootstrap, "the dividend epochs broker")
