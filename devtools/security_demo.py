"""The demo's security scene (issue 18 item 6): multi-sig governance, the pause, a key ceremony and the auditor.

Before the workers start (``prepare_environment``): five dev signers and their signer set under the demo's data
directory, timelocks scaled so that 24 h lasts ``DEMO_TIMELOCK_S`` seconds, the audit log signing its checkpoints
with the HSM's key (the key manager creates the SoftHSM2 dev token and the keys under ``<data dir>/hsm`` when it
starts). Then the scene, one step after the other:

1. ``treasury:main`` is funded by a Deposit; a TREASURY_TRANSFER of 1,000 K-AUS to ``treasury:ops`` is requested
   and signed by 3 of the 5 signers: APPROVED, it waits out its (scaled) 24 h timelock, then the ledger applies one
   GovernedTransfer and the request is EXECUTED;
2. an emergency PAUSE signed by 2, once the scenes that must not meet it have done what they send (``pause_after``:
   the API's card payments, the threshold payouts answered, the one the signers approved too; devtools/demo.py): the
   bridge refuses card payments with PAUSED (the bridge scene keeps sending them) for ``PAUSE_S``; then an UNPAUSE
   signed by 3;
3. a KEY_CEREMONY rotating the SIGNING key, signed by 3: a new version on ``governance.keys``;
4. the auditor: the audit log and its checkpoints exported into the data directory and checked with the HSM's
   public keys (passes); a copy with one byte changed is checked again (fails, the verifier's message shown).

Personal data runs sealed (``NEXUS_SEAL_MODE=hsm``; the token and its keys are made before any process that seals
starts): the panel counts, per topic, the records whose personal fields came sealed under the HSM's encryption key
(payout accounts on ``payouts.requests``, contacts on ``kyc.status``, destinations on ``notifications.holders``) and
the holders' payouts the provider simulator made to the rule's own account, which only the bridge opened.

Requests and approvals are built with the signers' own functions (the canonical hash of ``domain.governance``,
``streams.security.governance.sign_hash``) from the dev key files; nothing secret is printed.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.table import Table

from contracts import models as m
from contracts.topics import (
    AUDIT_CHECKPOINTS,
    BRIDGE_SETTLEMENTS_FAILED,
    GOVERNANCE_APPROVALS,
    GOVERNANCE_KEYS,
    GOVERNANCE_MULTISIG,
    GOVERNANCE_PAUSE,
    GOVERNANCE_REQUESTS,
    KYC_STATUS,
    LEDGER_COMMANDS,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RULES,
    Topic,
)
from devtools.provider_sim.launcher import SimError
from devtools.scene import WAIT_S, GovernanceScene, Stopped
from devtools.signers import generate, key_path
from domain import governance as g
from domain.money import kaus_text
from streams.security.governance import GovernanceSettings, sign_hash, to_request
from streams.security.verify import LOG_FILE
from streams.settings import Settings

log = logging.getLogger("nexus.demo.security")
KAUS = 1_000_000
DAY_S = 86_400
# What the 24 h timelock of a request below 50,000 K-AUS lasts in the demo (48 h: twice that), short enough that a
# payout approved by 4 signers is paid, and the pause that waits for it signed, within the demo test's 20 s of
# streaming on a loaded machine (devtools/governed_demo.py); long enough that the panel shows requests waiting in it.
DEMO_TIMELOCK_S = 3
PAUSE_S = 6.0  # how long the platform stays paused
PAUSE_AFTER_WAIT_S = 60.0  # the longest the pause waits for the scenes it must not meet
TREASURY, OPS = "treasury:main", "treasury:ops"
TREASURY_FUND_KAUS = 10_000
TRANSFER_KAUS = 1_000
BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
VERIFY_TIMEOUT_S = 120.0
# What the demo's security processes run with (unless the environment says otherwise).
DEMO_ENV = {
    "NEXUS_SECURITY_GOVERNANCE_TIMELOCK_SCALE": str(Decimal(DEMO_TIMELOCK_S) / DAY_S),
    "NEXUS_SECURITY_GOVERNANCE_TICK_EVERY_S": "0.5",
    "NEXUS_AUDIT_LOG_SIGNER": "hsm",
    "NEXUS_AUDIT_LOG_CHECKPOINT_EVERY_S": "2",
    "NEXUS_AUDIT_LOG_SIGNER_REFRESH_S": "5",  # a rotated signing key signs within seconds
    # Personal data sealed with the HSM, or the process refuses to start (auto would fall back to plain).
    "NEXUS_SEAL_MODE": "hsm",
}
HSM_INIT_TIMEOUT_S = 60.0
PAID_CHECK_EVERY_S = 2.0  # each check reads every payout the simulator made (a few hundred in a demo)
WATCHED: tuple[Topic, ...] = (
    GOVERNANCE_MULTISIG,
    GOVERNANCE_PAUSE,
    GOVERNANCE_KEYS,
    AUDIT_CHECKPOINTS,
    BRIDGE_SETTLEMENTS_FAILED,
    PAYOUT_RULES,
    PAYOUT_REQUESTS,
    KYC_STATUS,
    NOTIFICATIONS_HOLDERS,
)


def signers_dir(settings: Settings) -> Path:
    return settings.data_dir / "governance"


def prepare_environment(settings: Settings) -> None:
    """Before the workers start: the dev signers and their set (NEXUS_SECURITY_SIGNERS_FILE), the scaled timelocks,
    the audit log signing with the HSM, sealing on, and the HSM token with its keys (``python -m infra.hsm``): every
    process that seals or opens personal data finds the encryption key at its start, whichever starts first."""
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    # The scene signs with these keys: the service must read their set, whatever the shell said.
    os.environ["NEXUS_SECURITY_SIGNERS_FILE"] = str(generate(signers_dir(settings)))
    init_hsm(settings)


def init_hsm(settings: Settings) -> None:
    """The dev token and its keys under the data directory (idempotent: what exists is kept); its log beside the
    workers' logs. Raises if the token cannot be made: with sealing on, the services would refuse to start."""
    log_path = settings.data_dir / "run" / "hsm-init.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        done = subprocess.run([sys.executable, "-m", "infra.hsm"], stdout=out, stderr=subprocess.STDOUT,
                              timeout=HSM_INIT_TIMEOUT_S, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"python -m infra.hsm failed ({done.returncode}); see {log_path}")


@dataclass
class Sealing:
    """What the panel shows of sealed personal data: per topic, the records whose personal fields came sealed and
    masked, and those that did not; and the provider simulator's holder payouts, paid to the account the holder's
    rule names (``payouts.rules`` is upstream, plain) though every request carried it sealed and masked."""

    sealed: Counter[str] = field(default_factory=Counter)
    plain: Counter[str] = field(default_factory=Counter)
    key_ids: set[str] = field(default_factory=set)  # the encryption key versions the envelopes name
    accounts: dict[str, str] = field(default_factory=dict)  # rule id -> its payout account
    paid_to_rule_account: int = 0
    paid_to_mask: int = 0

    def seen(self, topic: str, value: bytes) -> None:
        if topic == PAYOUT_RULES.name:
            rule: m.AutoPayoutRule = PAYOUT_RULES.decode(value)
            self.accounts[rule.rule_id] = rule.payout_account
        elif topic == PAYOUT_REQUESTS.name:
            request: m.PayoutRequest = PAYOUT_REQUESTS.decode(value)
            self._count(topic, request.payout_account_sealed, request.payout_account.startswith("****"))
        elif topic == KYC_STATUS.name:
            status: m.KycStatusChanged = KYC_STATUS.decode(value)
            plain = (status.email, status.phone, status.push_token)
            self._count(topic, status.contacts_sealed, all(v is None for v in plain))
        elif topic == NOTIFICATIONS_HOLDERS.name:
            note: m.HolderNotification = NOTIFICATIONS_HOLDERS.decode(value)
            self._count(topic, note.destination_sealed, "***" in note.destination)

    def _count(self, topic: str, envelope: str | None, masked: bool) -> None:
        if envelope is not None and masked:
            self.sealed[topic] += 1
            self.key_ids.add(envelope.split(":")[2])  # enc:v1:<key id>:...
        else:
            self.plain[topic] += 1

    def check_paid(self, payouts: list[dict[str, Any]]) -> None:
        """The simulator's payouts (``/_admin/payouts``): how many went to a rule's own account, how many to a mask."""
        accounts = set(self.accounts.values())
        self.paid_to_rule_account = sum(1 for p in payouts if p.get("counterparty") in accounts)
        self.paid_to_mask = sum(1 for p in payouts if str(p.get("counterparty", "")).startswith("****"))

    def rows(self) -> list[tuple[str, str]]:
        out = []
        for topic, what in ((PAYOUT_REQUESTS, "payout accounts"), (KYC_STATUS, "KYC contacts"),
                            (NOTIFICATIONS_HOLDERS, "destinations")):  # fmt: skip
            sealed, plain = self.sealed[topic.name], self.plain[topic.name]
            out.append((f"sealed {topic.name}", f"{what}: {sealed} of {sealed + plain} sealed and masked"))
        keys = ", ".join(sorted(self.key_ids)) or "none yet"
        out.append(("sealed with", keys))
        out.append(("holder payouts", f"{self.paid_to_rule_account} paid to the rule's own account, "
                                      f"{self.paid_to_mask} to a masked one"))  # fmt: skip
        return out


@dataclass
class Verdict:
    """One run of the verifier: its exit status and what it printed."""

    status: int
    output: str

    @property
    def summary(self) -> str:
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        verdict = next((line for line in lines if line.startswith(("OK", "FAILED"))), "")
        findings = [_cut(line) for line in lines if not line.startswith(("OK", "FAILED", "log "))][:2]
        return " | ".join([verdict, *findings]) or _cut(self.output.strip())


@dataclass
class SecurityDemo(GovernanceScene):
    settings: Settings
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    sent: dict[str, m.GovernanceRequest] = field(default_factory=dict)  # this scene's requests, by id
    requests: dict[str, m.MultisigRequest] = field(default_factory=dict)  # their states on governance.multisig
    pause: m.PauseState | None = None
    keys: dict[str, m.KeyMetadata] = field(default_factory=dict)
    checkpoint: m.AuditCheckpoint | None = None
    checkpoints: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # card payments failed while paused, by reason code
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # "original" / "one byte changed"
    sealing: Sealing = field(default_factory=Sealing)
    sim: Any = None  # the provider simulator (ProviderSimProcess): whom it paid
    pause_after: list[Callable[[], bool]] = field(default_factory=list)  # what the pause waits for (bounded)
    tampered: str = ""  # which byte of the copy was changed
    step: str = "starting"
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._observe, self._scenario):
            thread = threading.Thread(target=target, name=f"security-demo-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def rid(self, what: str) -> str:
        return f"demo-{what}-{self.tag}"

    # ------------------------------------------------------------------ the scene

    def _scenario(self) -> None:
        try:
            self._run_scenario()
        except Stopped:
            return
        except Exception as exc:  # the rest of the demo goes on; the panel says what failed
            log.exception("security scene failed")
            self.step = f"[red]failed: {exc}[/]"

    def _run_scenario(self) -> None:
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "enable.idempotence": True})
        fund = m.Deposit(command_id=f"demo-treasury-fund-{self.tag}", account_id=TREASURY,
                         amount_kaus_units=TREASURY_FUND_KAUS * KAUS, occurred_at=datetime.now(UTC))  # fmt: skip
        produce(producer, LEDGER_COMMANDS, fund)
        transfer = self.rid("transfer")
        self._request(producer, transfer, g.Operation.TREASURY_TRANSFER, TRANSFER_KAUS * KAUS,
                      from_account=TREASURY, to_account=OPS, reason="ops float")  # fmt: skip
        self._sign(producer, transfer, "signer-1", "signer-2", "signer-3")
        self.step = "treasury transfer signed 3/5: waiting in its timelock"
        self._wait(lambda: self._state(transfer) in ("APPROVED", "EXECUTED"), "the transfer's quorum")
        self.step = "waiting for the API's card payments and the payouts before the emergency pause"
        deadline = time.monotonic() + PAUSE_AFTER_WAIT_S
        while not all(done() for done in self.pause_after) and time.monotonic() < deadline:
            self._sleep(0.25)
        self._pause_and_unpause(producer)
        rotate = self.rid("rotate")
        self.step = "key ceremony: rotating the signing key (3/5)"
        signing_before = self._signing_versions()
        self._request(producer, rotate, g.Operation.KEY_CEREMONY, 0, ceremony="ROTATE", purpose="SIGNING",
                      reason="rotate early (demo)")  # fmt: skip
        self._sign(producer, rotate, "signer-2", "signer-4", "signer-5")
        self._wait(lambda: self._signing_versions() > signing_before, "a new signing key version")
        self._wait(lambda: self._signed_by_newest(), "a checkpoint signed by the new key")
        self.step = "the auditor exports the audit log and verifies it"
        self._verify()
        self.step = "verified; the treasury transfer executes when its timelock ends"
        self._wait(lambda: self._state(transfer) == "EXECUTED", "the transfer's execution", DEMO_TIMELOCK_S + WAIT_S)
        self.step = "[green]done[/]: transfer executed, pause lifted, key rotated, log verified (and tampering caught)"

    def _pause_and_unpause(self, producer: Producer) -> None:
        pause, unpause = self.rid("pause"), self.rid("unpause")
        self.step = "emergency pause (2/5): card payments are refused"
        self._request(producer, pause, g.Operation.PAUSE, 0, reason="suspected provider breach (demo)")
        self._sign(producer, pause, "signer-4", "signer-5")
        self._wait(lambda: self.pause is not None and self.pause.request_id == pause, "the pause")
        self._sleep(PAUSE_S)
        self.step = "unpause (3/5)"
        self._request(producer, unpause, g.Operation.UNPAUSE, 0, reason="breach ruled out (demo)")
        self._sign(producer, unpause, "signer-1", "signer-2", "signer-3")
        self._wait(lambda: self.pause is not None and self.pause.request_id == unpause, "the unpause")

    def _request(self, producer: Producer, rid: str, op: g.Operation, amount_units: int, **params: str) -> None:
        now = datetime.now(UTC)
        request = m.GovernanceRequest(
            request_id=rid,
            operation=m.GovernanceOperation(op.value),
            amount_kaus_units=amount_units,
            params=params,
            nonce=uuid.uuid4().int % 2**63,
            expires_at=now + timedelta(days=7),
            requested_by="demo-treasurer",
            created_at=now,
        )
        problem = g.check_request(to_request(request))
        if problem is not None:
            raise RuntimeError(f"{rid}: the platform would refuse it: {problem}")
        produce(producer, GOVERNANCE_REQUESTS, request)
        self.sent[rid] = request

    def _sign(self, producer: Producer, rid: str, *signers: str) -> None:
        sign(producer, self.settings, self.sent[rid], *signers)

    def _signing(self) -> list[m.KeyMetadata]:
        keys = [k for k in self.keys.values() if k.purpose is m.KeyPurpose.SIGNING and k.public_key_pem]
        return sorted(keys, key=lambda k: k.version or 0)

    def _signing_versions(self) -> int:
        return len(self._signing())

    def _signed_by_newest(self) -> bool:
        signing = self._signing()
        return bool(signing) and self.checkpoint is not None and self.checkpoint.key_id == signing[-1].key_id

    # ------------------------------------------------------------------ the auditor

    def _verify(self) -> None:
        """Export, check with every signing version's public key, then check a copy with one byte changed."""
        from streams.security.verify import export  # Kafka read only here

        base = self.settings.data_dir / "security-demo"
        exported, tampered = base / "audit-export", base / "audit-export-one-byte-changed"
        export(self.settings.bootstrap_servers, exported)
        keys = []
        for key in self._signing():
            path = base / f"{key.key_id}.pem"
            path.write_text(key.public_key_pem or "")
            keys.append(path)
        self.verdicts["original"] = _check(exported, keys, self.stop_event)
        shutil.rmtree(tampered, ignore_errors=True)
        shutil.copytree(exported, tampered)
        self.tampered = change_one_byte(tampered / LOG_FILE)
        self.verdicts["one byte changed"] = _check(tampered, keys, self.stop_event)

    # ------------------------------------------------------------------ what came out

    def _observe(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "group.id": f"demo-security-{os.getpid()}-{self.tag}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # governance.keys is compacted: every version from the start
            }
        )
        consumer.subscribe([t.name for t in WATCHED])
        checked_at = 0.0
        try:
            while not self.stop_event.is_set():
                for msg in consumer.consume(500, timeout=0.5):
                    value = msg.value()
                    if msg.error() is None and value is not None:
                        self._seen_valid(msg.topic(), value)
                if self.sim is not None and time.monotonic() - checked_at > PAID_CHECK_EVERY_S:
                    checked_at = time.monotonic()
                    self._check_paid()
        finally:
            consumer.close()

    def _check_paid(self) -> None:
        try:
            self.sealing.check_paid(self.sim.payouts())
        except (OSError, SimError):  # the simulator stopping or busy: the next check
            log.debug("the provider simulator did not answer", exc_info=True)

    def _seen_valid(self, topic: str | None, value: bytes) -> None:
        try:
            self._seen(topic, value)
        except ValueError:  # not the contract's (pydantic's ValidationError is one): the services dead-letter it
            log.debug("skipped an invalid record on %s", topic)

    def _seen(self, topic: str | None, value: bytes) -> None:
        if topic == GOVERNANCE_MULTISIG.name:
            request: m.MultisigRequest = GOVERNANCE_MULTISIG.decode(value)
            if request.request_id.endswith(f"-{self.tag}"):
                self.requests[request.request_id] = request
        elif topic == GOVERNANCE_PAUSE.name:
            self.pause = GOVERNANCE_PAUSE.decode(value)
        elif topic == GOVERNANCE_KEYS.name:
            key: m.KeyMetadata = GOVERNANCE_KEYS.decode(value)
            self.keys[key.key_id] = key
        elif topic == AUDIT_CHECKPOINTS.name:
            self.checkpoint = AUDIT_CHECKPOINTS.decode(value)
            self.checkpoints += 1
        elif topic == BRIDGE_SETTLEMENTS_FAILED.name:
            failed: m.BridgeSettlementFailed = BRIDGE_SETTLEMENTS_FAILED.decode(value)
            if failed.reason_code == "PAUSED":
                self.refused[failed.reason_code] += 1
        elif topic is not None:
            self.sealing.seen(topic, value)

    def render(self) -> Table:
        table = Table(title="Security: multi-sig governance, pause, HSM keys, audit log", show_header=False,
                      expand=True)  # fmt: skip
        table.add_column("what", style="bold")
        table.add_column("seen")
        table.add_row("scene", self.step)
        for rid in sorted(self.requests, key=lambda r: self.requests[r].created_at):
            table.add_row(f"request {self.requests[rid].operation}", f"{state_text(self.requests[rid])} ({rid})")
        table.add_row("money out", self._pause_text())
        table.add_row("HSM keys", self._keys_text() or "the key manager publishes them at start")
        if self.checkpoint is not None:
            c = self.checkpoint
            table.add_row("audit log", f"{c.tree_size:,} records; last checkpoint {c.timestamp:%H:%M:%S} UTC signed "
                          f"by {c.key_id} ({self.checkpoints:,} checkpoints seen)")  # fmt: skip
        else:
            table.add_row("audit log", "no checkpoint yet")
        for what, seen in self.sealing.rows():
            table.add_row(what, seen)
        if self.tampered:
            table.add_row("tampered copy", self.tampered)
        for name, verdict in self.verdicts.items():
            colour = "green" if verdict.status == 0 else "red"
            table.add_row(f"verifier: {name}", f"[{colour}]exit {verdict.status}[/] {verdict.summary}")
        return table

    def _pause_text(self) -> str:
        refused = f"; card payments refused with PAUSED: {self.refused['PAUSED']}"
        if self.pause is None:
            return "never paused" + refused
        if self.pause.paused:
            return f"[red]PAUSED[/] since {self.pause.updated_at:%H:%M:%S} UTC by {self.pause.request_id}{refused}"
        return f"running (unpaused {self.pause.updated_at:%H:%M:%S} UTC by {self.pause.request_id}){refused}"

    def _keys_text(self) -> str:
        by_purpose: dict[str, list[str]] = {}
        ours = [k for k in self.keys.values() if k.purpose is not None and k.version is not None]  # not the incident's
        for key in sorted(ours, key=lambda k: (str(k.purpose), k.version or 0)):
            by_purpose.setdefault(str(key.purpose), []).append(f"v{key.version} {key.state}")
        return "; ".join(f"{purpose} {', '.join(versions)}" for purpose, versions in by_purpose.items())


def _cut(text: str, most: int = 160) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def produce(producer: Producer, topic: Topic, message: Any) -> None:
    producer.produce(topic.name, topic.encode(message), topic.key_of(message))
    if producer.flush(10):
        raise RuntimeError(f"{topic.name}: not acknowledged")


def sign(producer: Producer, settings: Settings, request: m.GovernanceRequest, *signers: str) -> None:
    """Each signer signs the canonical hash computed here (as the signers' CLI does) with their dev key file."""
    digest = g.request_hash(to_request(request), GovernanceSettings().deployment_id)
    for signer in signers:
        key = serialization.load_pem_private_key(key_path(signers_dir(settings), signer).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        approval = m.GovernanceApproval(request_id=request.request_id, signer_id=signer, request_hash=digest,
                                        signature=sign_hash(key, digest), signed_at=datetime.now(UTC))  # fmt: skip
        produce(producer, GOVERNANCE_APPROVALS, approval)


def state_text(r: m.MultisigRequest) -> str:
    amount = f"{kaus_text(r.amount_kaus_units)} K-AUS, " if r.amount_kaus_units else ""
    text = f"{r.state} {r.signatures}/{r.required_signers}"
    if r.state is m.MultisigState.APPROVED and r.timelock_until is not None:
        left_s = max((r.timelock_until - datetime.now(UTC)).total_seconds(), 0)
        text = f"[yellow]{text}[/], in its timelock until {r.timelock_until:%H:%M:%S} UTC ({left_s:.0f} s)"
    elif r.state is m.MultisigState.EXECUTED:
        applied = " (the ledger applied it)" if r.operation is m.GovernanceOperation.TREASURY_TRANSFER else ""
        text = f"[green]{text}[/]{applied}"
    if r.reason_code:
        text += f" [{r.reason_code}]"
    return amount + text


def change_one_byte(path: Path) -> str:
    """Change one byte of the export: a digit of the first entry's leaf (the record's original bytes, base64), the
    K-AUS amount's when it has one. A base64 character at the 4th place of its group encodes only the low 6 bits of
    the group's 3rd byte, and digits differ only there: the file changes by one byte, the leaf by one digit (still
    a well-formed record). Returns what was changed."""
    data = bytearray(path.read_bytes())
    marker = b'"leaf_b64":"'
    start = data.index(marker) + len(marker)
    end = data.index(b'"', start)
    leaf = base64.b64decode(bytes(data[start:end]))
    amount = leaf.find(b'"kausAmount":"')
    candidates = [j for j in range(len(leaf)) if j % 3 == 2 and chr(leaf[j]).isdigit()]
    j = next((j for j in candidates if j > amount >= 0), candidates[0])
    digit = (leaf[j] - ord("0") + 8) % 10  # 1 -> 9: 1000.000000 K-AUS becomes 9000.000000
    data[start + (j // 3) * 4 + 3] = BASE64_ALPHABET[(ord("0") + digit) & 0x3F]
    path.write_bytes(bytes(data))
    return f"byte {start + (j // 3) * 4 + 3} of {path.name}: a digit {chr(leaf[j])} of leaf 0 made {digit}"


def _check(directory: Path, public_keys: list[Path], stop: threading.Event) -> Verdict:
    """The auditor's command, as an outside auditor runs it; killed if the demo stops first."""
    argv = [sys.executable, "-m", "streams.security.verify", "check", "--dir", str(directory)]
    argv += [a for key in public_keys for a in ("--public-key", str(key))]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + VERIFY_TIMEOUT_S
        while proc.poll() is None:
            if stop.is_set() or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise Stopped if stop.is_set() else TimeoutError(f"the verifier ran over {VERIFY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        output = proc.stdout.read() if proc.stdout is not None else ""
    return Verdict(proc.returncode, output)
