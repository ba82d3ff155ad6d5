"""The demo's governed operations (docs/governance.md, "What each operation executes"): a parameter change and a
payout approval, signed by the dev signers as the security scene signs (``devtools.security_demo.sign``).

1. A PARAMETER_CHANGE of GOLD's cashback (``cashback.bps.GOLD``, 300 -> 450 bps; back to 300 on a broker that
   already has 450 from an earlier run) signed by 3 of 5: it waits out its scaled 24 h timelock, the governance
   service publishes it on ``governance.parameters``, and once the bridge's log says it applied it the API scene
   (devtools/api_demo.py) pays with a GOLD payer again and shows the cashback it earned.
2. The payout above the auto-approval limit (50,000 K-AUS) of the money-out scene's approval holder
   (devtools/payouts_demo.py): the payouts service asks the signers (``PAYOUT:<payout_id>``, ELEVATED: 4 of 5, 48 h)
   and waits APPROVAL_PENDING; the scene signs with as many signers as the request needs; after its timelock the
   payouts service pays exactly the approved amount, once.

The panel shows both requests' states, the value in force, the payout's wait and result, and how many payouts the
provider simulator made for it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.table import Table

from contracts import models as m
from contracts.topics import (
    GOVERNANCE_MULTISIG,
    GOVERNANCE_PARAMETERS,
    GOVERNANCE_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
    Topic,
)
from devtools.provider_sim.launcher import SimError
from devtools.scene import WAIT_S, GovernanceScene, Stopped
from devtools.security_demo import DEMO_TIMELOCK_S, produce, sign, state_text
from domain import governance as g
from domain import parameters
from domain.cashback import PayerTier
from domain.money import kaus_text
from streams.kafka.partition_log import read_partition
from streams.security.governance import to_request
from streams.settings import Settings

log = logging.getLogger("nexus.demo.governed")
GOLD = parameters.cashback_name(PayerTier.GOLD)
GOLD_BPS_NEW = 450
APPLIED_WAIT_S = 30.0  # the longest the scene waits for the bridge's log to say it applied the change
PAYOUT_SIGNERS = ("signer-2", "signer-3", "signer-4", "signer-5")  # as many as the request needs, in this order
WATCHED: tuple[Topic, ...] = (GOVERNANCE_REQUESTS, GOVERNANCE_MULTISIG, GOVERNANCE_PARAMETERS, PAYOUT_WAITING,
                              PAYOUT_RESULTS)  # fmt: skip


def parameter_in_force(bootstrap: str, name: str, timeout_s: float = 10.0) -> int:
    """The value of ``name`` on ``governance.parameters`` now: its latest record (read to the topic's end), else
    its default."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-parameters-probe"})
    try:
        topic = probe.list_topics(GOVERNANCE_PARAMETERS.name, timeout=timeout_s).topics[GOVERNANCE_PARAMETERS.name]
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic.topic, p), timeout=timeout_s)[1]
                for p in topic.partitions}  # fmt: skip
    finally:
        probe.close()
    value: bytes | None = None
    for partition, end in ends.items():
        for _offset, key, raw, _ms in read_partition(bootstrap, GOVERNANCE_PARAMETERS.name, partition, end):
            if key == name.encode():
                value = raw
    if value is None:
        return parameters.PARAMETERS[name].default
    return parameters.parse(name, GOVERNANCE_PARAMETERS.decode(value).value)


@dataclass
class GovernedDemo(GovernanceScene):
    settings: Settings
    bridge_log: Path  # the log of the process running the bridge: it says when it applies a parameter
    payout_rule_id: str  # the money-out scene's rule whose payout needs the signers' approval
    sim: Any = None  # the provider simulator: how many payouts it made for the approved one
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    sent: dict[str, m.GovernanceRequest] = field(default_factory=dict)  # the requests the scene signs, by id
    requests: dict[str, m.MultisigRequest] = field(default_factory=dict)  # their states on governance.multisig
    waits: Counter[str] = field(default_factory=Counter)  # the approval payout's waits, by reason code
    results: list[m.PayoutResult] = field(default_factory=list)  # the approval payout's results
    paid_at_provider: int | None = None
    gold_before: int | None = None
    gold_after: int | None = None
    gold_in_force: int | None = None  # GOLD's value on governance.parameters, as the scene last read it
    cashback_applied: threading.Event = field(default_factory=threading.Event)  # the bridge applies the new value
    approval_signed: threading.Event = field(default_factory=threading.Event)  # the payout approval got its quorum
    done: threading.Event = field(default_factory=threading.Event)
    steps: dict[str, str] = field(default_factory=lambda: {"parameter": "starting", "payout": "starting"})
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def cashback_rid(self) -> str:
        return f"demo-cashback-{self.tag}"

    def start(self) -> None:
        for target in (self._observe, self._parameter_scene, self._payout_scene):
            thread = threading.Thread(target=target, name=f"governed-demo-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)

    # ------------------------------------------------------------------ the scenes

    def _parameter_scene(self) -> None:
        self._guarded("parameter", self._change_gold_cashback)

    def _payout_scene(self) -> None:
        self._guarded("payout", self._approve_payout)
        self.approval_signed.set()  # signed or failed: the pause waits no longer
        self.done.set()

    def _guarded(self, which: str, scene: Any) -> None:
        try:
            scene()
        except Stopped:
            return
        except Exception as exc:  # the rest of the demo goes on; the panel says what failed
            log.exception("governed %s scene failed", which)
            self.steps[which] = f"[red]failed: {exc}[/]"

    def _change_gold_cashback(self) -> None:
        """300 -> 450 bps (or back to 300 where an earlier run left 450), signed 3/5, applied by the bridge."""
        before = parameter_in_force(self.settings.bootstrap_servers, GOLD)
        default = parameters.PARAMETERS[GOLD].default
        after = GOLD_BPS_NEW if before != GOLD_BPS_NEW else default
        self.gold_before, self.gold_after = before, after
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "enable.idempotence": True})
        now = datetime.now(UTC)
        request = m.GovernanceRequest(
            request_id=self.cashback_rid, operation=m.GovernanceOperation.PARAMETER_CHANGE, amount_kaus_units=0,
            params={"name": GOLD, "value": str(after), "reason": "GOLD promotion (demo)"},
            nonce=uuid.uuid4().int % 2**63, expires_at=now + timedelta(days=7), requested_by="demo-cfo",
            created_at=now,
        )  # fmt: skip
        problem = g.check_request(to_request(request))
        if problem is not None:
            raise RuntimeError(f"{request.request_id}: the platform would refuse it: {problem}")
        produce(producer, GOVERNANCE_REQUESTS, request)
        self.sent[request.request_id] = request
        sign(producer, self.settings, request, "signer-1", "signer-2", "signer-3")
        self.steps["parameter"] = f"{GOLD} {before} -> {after} bps signed 3/5: waiting in its timelock"
        self._wait(lambda: self._state(self.cashback_rid) == "EXECUTED", "the parameter change's execution",
                   2 * DEMO_TIMELOCK_S + WAIT_S)  # fmt: skip
        applied = f"parameter {GOLD} = {after} (request {self.cashback_rid})"
        self._wait(lambda: applied in self.bridge_log.read_text(errors="replace"), "the bridge applying it",
                   APPLIED_WAIT_S)  # fmt: skip
        self.gold_in_force = after
        self.cashback_applied.set()
        self.steps["parameter"] = f"[green]done[/]: {GOLD} = {after} bps in force, the bridge applied it"

    def _approve_payout(self) -> None:
        prefix = f"PAYOUT:{self.payout_rule_id}:"
        self.steps["payout"] = f"waiting for the payouts service to ask the signers ({prefix}...)"
        self._wait(lambda: self._asked(prefix) is not None, "the payout approval request", 2 * WAIT_S)
        rid = str(self._asked(prefix))
        required = self.requests[rid].required_signers
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "enable.idempotence": True})
        sign(producer, self.settings, self.sent[rid], *PAYOUT_SIGNERS[:required])
        self._wait(lambda: self._state(rid) in ("APPROVED", "EXECUTED"), "the payout approval's quorum")
        self.approval_signed.set()
        self.steps["payout"] = f"approved {required}/5: the payout waits out its timelock, then is paid"
        self._wait(lambda: bool(self.results), "the approved payout's result", 4 * DEMO_TIMELOCK_S + WAIT_S)
        self._sleep(2.0)  # a second result or payout for the same id would show by now
        self._count_paid()
        self.steps["payout"] = "[green]done[/]: asked, approved by the signers, paid"

    def _asked(self, prefix: str) -> str | None:
        """The id of the payouts service's approval request for the rule, once it is on governance.multisig."""
        return next((rid for rid in self.requests if rid.startswith(prefix) and rid in self.sent), None)

    def _count_paid(self) -> None:
        if self.sim is None or not self.results:
            return
        payout_id = self.results[0].payout_id
        try:
            self.paid_at_provider = sum(1 for p in self.sim.payouts() if f"BRIDGE-{payout_id}" in str(p))
        except (OSError, SimError):
            log.debug("the provider simulator did not answer", exc_info=True)

    # ------------------------------------------------------------------ what came out

    def _observe(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "group.id": f"demo-governed-{os.getpid()}-{self.tag}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # a request read before the scene looks for it
            }
        )
        consumer.subscribe([t.name for t in WATCHED])
        try:
            while not self.stop_event.is_set():
                for msg in consumer.consume(500, timeout=0.5):
                    value = msg.value()
                    if msg.error() is None and value is not None:
                        self._seen_valid(msg.topic(), value)
        finally:
            consumer.close()

    def _seen_valid(self, topic: str | None, value: bytes) -> None:
        try:
            self._seen(topic, value)
        except ValueError:  # not the contract's: the services dead-letter it
            log.debug("skipped an invalid record on %s", topic)

    def _ours(self, rid: str) -> bool:
        return rid == self.cashback_rid or rid.startswith(f"PAYOUT:{self.payout_rule_id}:")

    def _seen(self, topic: str | None, value: bytes) -> None:
        if topic == GOVERNANCE_REQUESTS.name:
            request: m.GovernanceRequest = GOVERNANCE_REQUESTS.decode(value)
            if self._ours(request.request_id):
                self.sent.setdefault(request.request_id, request)
        elif topic == GOVERNANCE_MULTISIG.name:
            state: m.MultisigRequest = GOVERNANCE_MULTISIG.decode(value)
            if self._ours(state.request_id):
                self.requests[state.request_id] = state
        elif topic == GOVERNANCE_PARAMETERS.name:
            setting: m.ParameterSetting = GOVERNANCE_PARAMETERS.decode(value)
            if setting.name == GOLD:
                self.gold_in_force = parameters.parse(GOLD, setting.value)
        elif topic == PAYOUT_WAITING.name:
            wait: m.PayoutWaiting = PAYOUT_WAITING.decode(value)
            if wait.payout_id.startswith(f"{self.payout_rule_id}:"):
                self.waits[str(wait.reason_code)] += 1
        elif topic == PAYOUT_RESULTS.name:
            result: m.PayoutResult = PAYOUT_RESULTS.decode(value)
            if result.payout_id.startswith(f"{self.payout_rule_id}:"):
                self.results.append(result)

    def render(self) -> Table:
        table = Table(title="Governed operations: a parameter change, a payout approval", show_header=False,
                      expand=True)  # fmt: skip
        table.add_column("what", style="bold")
        table.add_column("seen")
        table.add_row("parameter scene", self.steps["parameter"])
        table.add_row("payout scene", self.steps["payout"])
        for rid in sorted(self.requests, key=lambda r: self.requests[r].created_at):
            table.add_row(f"request {self.requests[rid].operation}", f"{state_text(self.requests[rid])} ({rid})")
        if self.gold_before is not None:
            in_force = "—" if self.gold_in_force is None else f"{self.gold_in_force} bps"
            requested = f"{self.gold_before} -> {self.gold_after} bps requested"
            table.add_row("GOLD cashback", f"{requested}; in force: {in_force}")
        waits = ", ".join(f"{code} {n}" for code, n in sorted(self.waits.items()))
        table.add_row("payout above the limit", f"{self.payout_rule_id}: waits {waits or 'none yet'}")
        for result in self.results:
            if result.status is m.PayoutStatus.PAID:
                what = f"[green]PAID[/] {kaus_text(result.kaus_debited_units or 0)} K-AUS"
            else:
                what = f"[red]FAILED[/] {result.reason_code}"
            table.add_row("payout result", f"{what} ({result.payout_id}, approval {result.approval_request_id})")
        if self.results:
            paid = "?" if self.paid_at_provider is None else str(self.paid_at_provider)
            table.add_row("paid once", f"{len(self.results)} result(s), {paid} payout(s) at the provider")
        return table
