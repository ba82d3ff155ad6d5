"""Issue 21: a card payment whose capture times out after the merchant was paid is never reported as failed.

On the real broker, with the platform ledger (``streams.p2p``, its own process) and the bridge (plain loop, or
the Faust worker with only the bridge agent): the provider simulator takes a few seconds to pay, so the test
sees the payout intent on ``bridge.payouts.journal`` (the hold was answered, the capture not sent yet) and
SIGSTOPs the ledger's process group. The capture (``POST_HOLD``) then goes unanswered: the bridge waits its
ledger timeout (lowered to 2 s through ``NEXUS_BRIDGE_LEDGER_TIMEOUT_S``), re-sends it under the same transfer
id after the backoffs, and parks the payment. The ledger stays stopped past all of that; meanwhile nothing may
appear on ``bridge.settlements.failed`` (the old behaviour: ``HOLD_POST_FAILED`` after payout) nor ``.completed``.
After SIGCONT the ledger applies the capture once (its re-sends are answered with the original outcome), the
parked payment is resolved, and the request has exactly one outcome, on ``.completed``; the simulator paid once,
the ledger posted the hold once, and the bridge's group committed past the request.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    LEDGER_COMMANDS,
    LEDGER_OUTCOMES,
    LEDGER_TRANSFERS,
)
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import BridgeConfig, bridge_tx_id_for
from streams.bridge.runner import CAPTURE_BACKOFF_S
from tests.integration.provider_fixtures import provider_sim, sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import (  # noqa: F401  (fx_feed: a fixture)
    FUNDS_UNITS,
    balance,
    deposit,
    fx_feed,
    open_holds,
    request,
    transfers_of,
)
from tests.support.kafka_io import KafkaIO
from tests.support.topic_tail import TopicTail, committed_offset
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

PROVIDER_LATENCY_MS = 3_000  # the window between the journaled intent and the capture
LEDGER_TIMEOUT_S = 2.0  # the bridge worker's NEXUS_BRIDGE_LEDGER_TIMEOUT_S (default 10 s); the hold waits it too
CAPTURE_SENDS = BridgeConfig().max_capture_sends
# From the first capture send to the payment being parked: each send waits the timeout, re-sends after a backoff.
CAPTURE_GIVE_UP_S = CAPTURE_SENDS * LEDGER_TIMEOUT_S + sum(
    CAPTURE_BACKOFF_S[min(n, len(CAPTURE_BACKOFF_S) - 1)] for n in range(CAPTURE_SENDS - 1)
)


def decoded(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.value]


@pytest.fixture(params=["plain", "faust"])
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_capture_unanswered_past_its_timeout_after_payout_stays_pending_then_completes_once(
    kafka: KafkaIO,
    sim: ProviderSimProcess,
    sim_keys_dir: Path,
    run_id: str,
    fx_feed: None,
    worker_factory: Any,
    runtime: str,
) -> None:
    payer = f"acct-capdelay-{run_id}"
    request_id = f"card-capdelay-{run_id}"
    key = request_id.encode()
    tx_id = bridge_tx_id_for(request_id)
    capture_key = f"{tx_id}:post".encode()
    hold_id = f"{tx_id}:hold"
    watched = [BRIDGE_PAYOUTS_JOURNAL, LEDGER_COMMANDS, LEDGER_OUTCOMES, LEDGER_TRANSFERS]
    tail = TopicTail(kafka.bootstrap, [*watched, BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED]).start()

    def never_failed() -> None:
        failed = decoded(tail.of(BRIDGE_SETTLEMENTS_FAILED, key))
        assert not failed, f"a paid payment was reported failed: {failed}"

    def no_outcome_yet() -> None:
        never_failed()
        assert not tail.of(BRIDGE_SETTLEMENTS_COMPLETED, key), "completed while the ledger was stopped"

    try:
        deposit(kafka, payer, FUNDS_UNITS)
        sim.configure({"STRIPE_INSTANT": {"latency_ms": PROVIDER_LATENCY_MS}})
        # The ledger's group session outlasts the stop: the delay is a slow ledger, not a rebalance.
        ledger: WorkerProcess = worker_factory(
            module="streams.p2p", agents="settlement", broker_session_timeout_s="120"
        )
        # The ledger is live (it replayed ledger.commands up to the deposit): the hold is answered within its timeout.
        tail.wait_until(
            lambda: any(v["credit_account_id"] == payer for v in decoded(tail.of(LEDGER_TRANSFERS))),
            60,
            "the ledger to apply the deposit",
        )
        bridge_env = {
            "provider_sim_url": sim.url,
            "provider_keys_dir": str(sim_keys_dir),
            "provider_transport": "aiohttp",
            "provider_timeout_ms": "10000",
            "bridge_ledger_timeout_s": str(LEDGER_TIMEOUT_S),
        }
        if runtime == "plain":
            bridge: WorkerProcess = worker_factory(module="streams.bridge.loop", **bridge_env)
            group = f"{bridge.app_id}-bridge"
        else:
            bridge = worker_factory(agents="bridge", **bridge_env)
            group = bridge.app_id

        payment = request(request_id, payer)
        partition, offset = kafka.produce_acked(
            BRIDGE_REQUESTS, BRIDGE_REQUESTS.key_of(payment), BRIDGE_REQUESTS.encode(payment)
        )

        # The intent is journaled once the hold was answered, before the provider is called (which takes 3 s).
        def intent_journaled() -> bool:
            return any(v["request_id"] == request_id and v["intent"] for v in decoded(tail.of(BRIDGE_PAYOUTS_JOURNAL)))

        tail.wait_until(intent_journaled, 60, "the payout intent on the journal", during=no_outcome_yet)
        hold_answers = decoded(tail.of(LEDGER_OUTCOMES, hold_id.encode()))
        assert [a["status"] for a in hold_answers] == ["APPLIED"], hold_answers
        assert not tail.of(LEDGER_COMMANDS, capture_key), "the capture was sent before the ledger was stopped"

        os.killpg(ledger.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        stopped_at = time.monotonic()
        try:
            # Every send of the capture goes unanswered; after the last one's timeout the payment is parked.
            tail.wait_until(
                lambda: len(tail.of(LEDGER_COMMANDS, capture_key)) >= CAPTURE_SENDS,
                PROVIDER_LATENCY_MS / 1000 + CAPTURE_GIVE_UP_S + 30,
                f"{CAPTURE_SENDS} sends of the capture",
                during=no_outcome_yet,
            )
            tail.wait_until(
                lambda: f"parked {tx_id}" in bridge.log_text(),
                LEDGER_TIMEOUT_S + 30,
                "the bridge to park the payment",
                during=no_outcome_yet,
            )
            pending_until = time.monotonic() + 3  # parked: still no outcome a while later
            tail.wait_until(lambda: time.monotonic() > pending_until, 10, "", during=no_outcome_yet)
            assert not tail.of(LEDGER_OUTCOMES, capture_key), "the stopped ledger answered"
            stopped_s = time.monotonic() - stopped_at
        finally:
            os.killpg(ledger.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        assert stopped_s > LEDGER_TIMEOUT_S + CAPTURE_GIVE_UP_S
        log = bridge.log_text()
        assert f"{tx_id}: capture send {CAPTURE_SENDS} unanswered" in log, log[-3000:]

        # The ledger answers; the parked payment is resolved (retried every 5 s): one outcome, completed.
        tail.wait_until(
            lambda: bool(tail.of(BRIDGE_SETTLEMENTS_COMPLETED, key)), 90, "the settlement", during=never_failed
        )
        deadline = time.monotonic() + 30
        while committed_offset(kafka.bootstrap, group, BRIDGE_REQUESTS, partition) <= offset:
            assert time.monotonic() < deadline, f"{group} never committed past {BRIDGE_REQUESTS.name}[{partition}]"
            time.sleep(0.5)
        settle_until = time.monotonic() + 3  # nothing more comes for it
        tail.wait_until(lambda: time.monotonic() > settle_until, 10, "", during=never_failed)

        [result] = decoded(tail.of(BRIDGE_SETTLEMENTS_COMPLETED, key))
        assert result["request_id"] == request_id and result["rail"] == "STRIPE_INSTANT", result
        assert result["repeat"] is False, result  # the one answer is the first one
        never_failed()
        assert len(sim.payouts()) == 1  # paid once: the recovery asked the provider under the same key
        capture_answers = decoded(tail.of(LEDGER_OUTCOMES, capture_key))
        assert capture_answers and all(a["status"] == "APPLIED" for a in capture_answers), capture_answers
        assert sum(not a["duplicate"] for a in capture_answers) == 1, capture_answers  # applied once
    finally:
        tail.close()

    # The ledger: the hold was captured once, the rewards applied once, nothing stays held.
    transfers = transfers_of(kafka, payer)
    assert sum(t["kind"] == "POST_PENDING" and t["pending_id"] == hold_id for t in transfers) == 1, transfers
    assert open_holds(transfers) == set()
    assert result["cashback_kaus_units"] > 0
    assert balance(transfers, payer) == FUNDS_UNITS - result["kaus_debited_units"] + result["cashback_kaus_units"]
