"""Issue 20 item 4, reduced: the chaos soak in bounded time — seeded mixed traffic (orders, deposits, card
payments, THRESHOLD payouts) through the P2P worker, the bridge and the payouts service on a 3-node cluster while
the workers are SIGKILLed and a broker is restarted; nothing lost, nothing duplicated, K-AUS conserved exactly,
every hold posted or voided (``tests/support/chaos_soak.py``, ``docs/chaos-soak.md``).

The seed is printed; ``NEXUS_CHAOS_SEED=<seed>`` replays a run's traffic and faults. The full soak (100,000
events, 20 kills, 3 broker restarts) is ``bench/bench_chaos_soak.py``.

``test_the_checks_see_each_kind_of_breakage`` checks the checks: it breaks the records the soak read one way at a
time (a settlement missing, a provider payout twice, a transfer written again with another amount, a hold never
released, two card answers that disagree, a payout result missing) and expects the tally to say so. The last tests
are the soak's findings reduced to records (docs/chaos-soak.md, "What the soak found"); the payouts service's is in
tests/unit/test_payouts_service.py, where its fix is.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from contracts import models as m
from contracts.bridge_codec import payment_from_request, request_json
from contracts.topics import BRIDGE_REQUESTS
from devtools.chaos.plan import FAULTS_FROM, FAULTS_TO, FaultKind, Kind, plan_faults, plan_traffic
from devtools.provider_sim.launcher import ProviderSimProcess
from infra.kafka.cluster import LocalKafkaCluster
from tests.integration.provider_fixtures import provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_cluster_leader_kill import cluster  # noqa: F401  (fixture: a 3-node cluster)
from tests.support.chaos_soak import Soak, SoakSettings, run_soak, tally

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("NEXUS_CHAOS_SEED", "20261206"))
REDUCED = SoakSettings(SEED, events=5_000, kills=6, broker_restarts=1, rate_per_s=100.0, settle_timeout_s=180.0)


@pytest.fixture(scope="module")
def soak(
    cluster: LocalKafkaCluster,
    provider_sim: ProviderSimProcess,
    sim_keys_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Soak]:
    print(f"chaos soak seed {SEED} (replay: NEXUS_CHAOS_SEED={SEED})")
    try:
        result = run_soak(cluster, provider_sim, sim_keys_dir, tmp_path_factory.mktemp("chaos"), REDUCED)
    finally:
        provider_sim.reset()
    print("\n".join(result.report.lines()))
    yield result


@pytest.mark.timeout(600)
def test_nothing_lost_nothing_duplicated_kaus_conserved_no_hold_open(soak: Soak) -> None:
    report = soak.report
    assert report.violations() == [], f"seed {SEED}:\n" + "\n".join(report.lines())
    assert report.kaus_conserved and report.holds_open == 0 and report.balances_exact
    assert sum(report.lost.values()) == sum(report.duplicated.values()) == 0


def test_every_kind_of_traffic_and_every_fault_happened(soak: Soak) -> None:
    """What the checks above held on (so that they cannot hold for want of traffic or of faults)."""
    report = soak.report
    assert soak.sent == REDUCED.events
    assert all(report.events[k.value] > 0 for k in Kind), report.events
    assert report.outcomes["trades settled"] > 300
    assert report.outcomes["cards completed"] > 100
    assert report.outcomes["payouts paid"] > 10
    assert sum(report.kills.values()) == REDUCED.kills and report.kills.keys() == {"p2p", "bridge", "payouts"}
    assert report.restarts_after_kill == report.kills  # the supervisor started each killed worker again
    assert len(report.broker_restarts) == REDUCED.broker_restarts


def test_the_checks_see_each_kind_of_breakage(soak: Soak) -> None:
    """Each property, broken on purpose in the records the soak read, is reported by the tally."""
    seen = soak.seen

    def broken(change: str) -> list[str]:
        mangled = copy.deepcopy(seen)
        if change == "settlement":
            settled = next(s for s in mangled.settlements if s["status"] == "SETTLED")
            mangled.settlements = [s for s in mangled.settlements if s["trade_id"] != settled["trade_id"]]
        elif change == "provider":
            mangled.sim_payouts.append({**mangled.sim_payouts[0]})
        elif change == "transfer":
            first = mangled.transfers[0]
            mangled.transfers.append({**first, "amount_units": first["amount_units"] + 1})
        elif change == "release":
            void = next(t for t in mangled.transfers if t["kind"] in ("VOID_PENDING", "POST_PENDING"))
            mangled.transfers = [t for t in mangled.transfers if t is not void]
        elif change == "answer":
            request_id = soak.traffic.of(Kind.CARD)[0].request_id
            mangled.answers[request_id].append({**mangled.answers[request_id][0], "kaus_debited_units": 1})
        elif change == "result":
            mangled.payout_results = [
                r for r in mangled.payout_results if r["payout_id"] != seen.payout_results[0]["payout_id"]
            ]
        return tally(soak.traffic, soak.sent, mangled).violations()

    assert tally(soak.traffic, soak.sent, seen).violations() == []
    assert any("trades: 1 lost" in v for v in broken("settlement"))
    assert any("duplicated" in v for v in broken("provider"))
    assert any("ledger.transfers: 1 conflicting" in v for v in broken("transfer"))
    assert any("holds neither posted nor voided" in v for v in broken("release"))
    assert any("card answers: 1 conflicting" in v for v in broken("answer"))
    assert any("payout results" in v and "lost" in v for v in broken("result"))


def test_a_seed_fixes_the_traffic_and_the_faults() -> None:
    """The replay promise: the same seed gives the same events and faults, another seed others; the faults keep
    their bounds (kills shared out over the workers, broker restarts one per stretch, within the traffic)."""
    events, workers, nodes = 3_000, ("p2p", "bridge", "payouts"), [1, 2, 3]
    one, again, other = (plan_traffic(seed, events, "t") for seed in (SEED, SEED, SEED + 1))
    wire = [[(e.kind, e.topic.name, e.topic.encode(e.message)) for e in t.events] for t in (one, again, other)]
    # the same bytes but for the card payments' and deposits' stamps (when the plan was made)
    stable = [[(k, n, v) for k, n, v in w if k is Kind.ORDER] for w in wire]
    assert stable[0] == stable[1] != stable[2]
    assert [e.kind for e in one.events] == [e.kind for e in again.events]
    assert [c.request_id for c in one.of(Kind.CARD)] == [c.request_id for c in again.of(Kind.CARD)]
    faults = plan_faults(SEED, events, 20, 3, workers, nodes)
    assert (
        faults
        == plan_faults(SEED, events, 20, 3, workers, nodes)
        != plan_faults(SEED + 1, events, 20, 3, workers, nodes)
    )
    kills = Counter(f.target for f in faults if f.kind is FaultKind.KILL_WORKER)
    assert sorted(kills.values()) == [6, 7, 7] and kills.keys() == set(workers)
    restarts = [f.at_event for f in faults if f.kind is FaultKind.RESTART_BROKER]
    stretch = (events * (FAULTS_TO - FAULTS_FROM)) / 3
    assert len(restarts) == 3 and all(int(f - events * FAULTS_FROM) // stretch == i for i, f in enumerate(restarts))
    assert all(events * FAULTS_FROM <= f.at_event < events * FAULTS_TO for f in faults)


def test_a_payment_recovered_from_its_intent_has_the_requests_fingerprint() -> None:
    """Found by the soak (fixed in 06ebe92): after a bridge SIGKILL, card payments sent once were logged as "request
    id reused with a different payload". The journal's intent keeps the request with its rate normalized
    (format_rate: 0.1500220500 -> 0.15002205); the fingerprint hashed the rate's text, so the payment recovered from
    the intent had another fingerprint than its request, and the request read again was taken for another payment."""
    [request] = plan_traffic(SEED, 40, "fp", mix={Kind.CARD: 1}).of(Kind.CARD)[:1]
    request = request.model_copy(update={"quoted_rate": Decimal("0.1500220500")})
    read = payment_from_request(BRIDGE_REQUESTS.decode(BRIDGE_REQUESTS.encode(request)))
    recovered = payment_from_request(m.BridgeRequest.model_validate(request_json(read)))
    assert recovered.quoted_rate == read.quoted_rate
    assert recovered.fingerprint() == read.fingerprint()
