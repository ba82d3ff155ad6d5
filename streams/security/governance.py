"""The multi-sig governance service (spec §4.2, docs/governance.md): a plain confluent-kafka loop around the pure
core in ``domain.governance``.

    python -m streams.security.governance     (NEXUS_*, NEXUS_SECURITY_SIGNERS_FILE, NEXUS_SECURITY_GOVERNANCE_*)

Reads ``governance.requests`` and ``governance.approvals`` (validated at ingress; bad records dead-lettered with
their bytes) and the ledger's outcomes of the transfers it ordered (``ledger.outcomes``, keys ``GOV:`` only).
Publishes each request's state on ``governance.multisig`` (the multi-sig-pending alert reads it), executes approved
requests once their timelock has ended — a ``GovernedTransfer`` on ``ledger.commands`` (command id
``GOV:<request_id>``, applied once by the ledger), ``governance.pause``, ``governance.parameters`` (a
PARAMETER_CHANGE's value, keyed by its name), the signer set — and writes a §7.2 audit
record of every request, signature (accepted or refused), execution and pause on ``audit.records``.

**One instance**, assigned every input partition (the nonces and the signer set are global). Its state and the
input positions are one file (``<data_dir>/security/governance.json``, replaced atomically, owner-only) written
after every output so far is acknowledged: a crash replays what was read since, under the same ids (audit ids,
command ids, request ids), so every effect is at least once and idempotent. A file rather than a rebuild from the
topics at each start: a timelock starts on this service's clock when the quorum is reached, which a replay cannot
reproduce (it would restart every timelock). Without the file the service does rebuild from the topics, kept for
ever, re-deciding each request (timelocks then start again: later, never earlier) and re-sending executions, which
the ledger answers with their original outcome.

Signatures are ECDSA P-256 over the 32-byte request hash itself (no second hash), DER, base64; verified here with
``cryptography``. Signers' private keys never reach the platform: they sign with ``streams.security.signer_cli``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, Producer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    GOVERNANCE_APPROVALS,
    GOVERNANCE_MULTISIG,
    GOVERNANCE_PARAMETERS,
    GOVERNANCE_PAUSE,
    GOVERNANCE_REQUESTS,
    LEDGER_COMMANDS,
    LEDGER_OUTCOMES,
    Topic,
)
from domain import governance as g
from domain.money import kaus_to_decimal
from infra import files
from streams.kafka.clients import consume_now, consumer_config, producer_config
from streams.kafka.ingress import Origin, Rejected, dead_letter_outputs, processing_failed, validate
from streams.kafka.service_loop import Outputs, position_of, run_until_stopped
from streams.kafka.topic_admin import ensure_topics
from streams.ops import health, logs
from streams.security.settings import get_security_settings
from streams.settings import get_settings

log = logging.getLogger("nexus.governance")

INPUTS: tuple[Topic, ...] = (GOVERNANCE_REQUESTS, GOVERNANCE_APPROVALS, LEDGER_OUTCOMES)
OUTCOME_PREFIX = b"GOV:"  # the ledger outcomes of this service's transfers (the rest of the topic is skipped)
Output = tuple[Topic, Any]
AUDIT_PREFIX = "AUDIT-GOV:"
USER_AGENT = "NEXUS-X/governance"
DURATION_MS_MAX = 86_400_000  # the audit record's duration field holds at most a day
SIGNERS_FORMAT = "nexus-x.governance-signers/1"
STATE_FORMAT = "nexus-x.governance-service/1"


class GovernanceSettings(BaseSettings):
    """The governance service's own settings (prefix ``NEXUS_SECURITY_GOVERNANCE_``); the signer set's file is
    ``NEXUS_SECURITY_SIGNERS_FILE`` (streams.security.settings)."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_SECURITY_GOVERNANCE_", env_file=".env", extra="ignore")

    # Part of every request's hash (the EIP-712 domain): a signature for one deployment never counts on another.
    deployment_id: str = Field(default="nexus-x-local", min_length=1, max_length=128)
    # Tests and demos only: every timelock is multiplied by this (1 = the spec's 24 h / 48 h). Quorums never change.
    timelock_scale: Decimal = Field(default=Decimal(1), gt=0, le=1)
    tick_every_s: float = Field(default=1.0, gt=0)
    save_every_s: float = Field(default=2.0, gt=0)
    unknown_request_wait_s: float = Field(default=60.0, ge=0)
    resend_after_s: float = Field(default=60.0, gt=0)
    # Final requests are forgotten this long after they ended (their nonces stay used for ever).
    final_retention_days: float = Field(default=90.0, gt=0)

    def core_config(self) -> g.Config:
        return g.Config(
            self.deployment_id,
            self.timelock_scale,
            unknown_request_wait=timedelta(seconds=self.unknown_request_wait_s),
            resend_after=timedelta(seconds=self.resend_after_s),
        )


# --------------------------------------------------------------------------- signatures (ECDSA P-256)


def verify_signature(public_key_pem: str, digest: bytes, signature_der: bytes) -> bool:
    """ECDSA P-256 over ``digest`` (the 32-byte request hash, not hashed again), DER-encoded."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            return False
        key.verify(signature_der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def key_valid(public_key_pem: str) -> bool:
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
    except (ValueError, TypeError):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def sign_hash(private_key: ec.EllipticCurvePrivateKey, request_hash: str) -> str:
    """A signer's signature over a request hash (``0x`` + 64 hex): base64 of the DER ECDSA signature."""
    digest = bytes.fromhex(request_hash.removeprefix("0x"))
    return base64.b64encode(private_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))).decode()


def public_key_pem(private_key: ec.EllipticCurvePrivateKey) -> str:
    spki = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki.decode()


def load_signers(path: Path) -> dict[str, str]:
    """The signer set: ``{"format": ..., "signers": [{"signer_id", "public_key_pem"}]}`` (devtools/signers.py)."""
    if not path.exists():
        raise FileNotFoundError(
            f"no signer set at {path}: set NEXUS_SECURITY_SIGNERS_FILE, or for development run "
            "`python -m devtools.signers` to generate five dev signers there"
        )
    data = json.loads(path.read_text())
    if data.get("format") != SIGNERS_FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {SIGNERS_FORMAT!r}")
    signers = {s["signer_id"]: s["public_key_pem"] for s in data["signers"]}
    bad = sorted(sid for sid, pem in signers.items() if not key_valid(pem))
    if bad:
        raise ValueError(f"{path}: not ECDSA P-256 public keys: {', '.join(bad)}")
    if len(signers) < g.SIGNER_SET_MIN:
        raise ValueError(f"{path}: {len(signers)} signers; the matrix needs at least {g.SIGNER_SET_MIN}")
    return signers


# --------------------------------------------------------------------------- contract <-> core


def to_request(message: m.GovernanceRequest) -> g.Request:
    return g.Request(
        message.request_id,
        g.Operation(message.operation.value),
        message.amount_kaus_units,
        dict(message.params),
        message.nonce,
        message.expires_at,
        message.requested_by,
        message.created_at,
    )


def to_approval(message: m.GovernanceApproval) -> g.Approval:
    return g.Approval(message.request_id, message.signer_id, message.request_hash, message.signature,
                      message.signed_at)  # fmt: skip


def multisig_of(event: g.Published) -> m.MultisigRequest:
    t = event.tracked
    code = event.reason_code if event.reason_code is not None else t.reason_code
    reason = event.reason if event.reason_code is not None else t.reason
    return m.MultisigRequest(
        request_id=t.request.request_id,
        amount_kaus_units=t.request.amount_units,
        required_signers=t.policy.required_signers,
        signatures=len(t.signatures),
        state=m.MultisigState(t.state.value),
        created_at=t.request.created_at,
        updated_at=event.at,
        operation=m.GovernanceOperation(t.request.operation.value),
        request_hash=t.request_hash,
        timelock_until=t.timelock_until,
        expires_at=t.request.expires_at,
        reason_code=None if code is None else str(code),
        reason=None if reason is None else reason[:500],
    )


def audit_id(key: str) -> str:
    """Deterministic (a re-write after a crash carries the same id); a digest when the id would be too long."""
    text = AUDIT_PREFIX + key
    return text if len(text) <= 128 else AUDIT_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def audit_of(event: g.Audited) -> m.AuditRecord:
    duration = event.duration_ms if event.duration_ms is not None and event.duration_ms <= DURATION_MS_MAX else None
    return m.AuditRecord(
        audit_id=audit_id(event.audit_key),
        timestamp=event.at,
        transaction_id=event.request_id,
        action=event.action,
        actor=m.AuditActor(user_id=event.actor, user_agent=USER_AGENT),
        details=m.AuditDetails(
            kaus_amount=None if event.amount_units is None else str(kaus_to_decimal(event.amount_units)),
            duration=duration,
        ),
    )


def transfer_of(event: g.TransferOrdered) -> m.GovernedTransfer:
    return m.GovernedTransfer(
        command_id=event.command_id,
        request_id=event.request_id,
        debit_account_id=event.debit_account_id,
        credit_account_id=event.credit_account_id,
        amount_kaus_units=event.amount_units,
        reason=event.reason,
        occurred_at=event.at,
    )


def parameter_of(event: g.ParameterSet) -> m.ParameterSetting:
    return m.ParameterSetting(name=event.name, value=str(event.value), request_id=event.request_id,
                              updated_at=event.at)  # fmt: skip


def pause_of(event: g.PauseSet) -> m.PauseState:
    return m.PauseState(scope="PLATFORM", paused=event.paused, request_id=event.request_id, reason=event.reason[:200],
                        updated_at=event.at)  # fmt: skip


# --------------------------------------------------------------------------- key ceremonies


def run_ceremony(event: g.CeremonyOrdered) -> object:
    """The key manager's ceremony (streams.security.keys), once per request id: its ``ceremony_id`` makes a
    repeat after a crash change the keys once. Imported here, not at the top: the service starts and runs without
    the PKCS#11 module until a ceremony is approved."""
    from streams.security import keys

    params, rid = event.params, event.request_id
    if event.ceremony is g.Ceremony.ROTATE:
        return keys.rotate_now(params["purpose"], rid)
    if event.ceremony is g.Ceremony.DESTROY:
        return keys.destroy(params["key_id"], rid)
    return keys.restore(Path(params["backup"]), None, rid)


# --------------------------------------------------------------------------- the service (no Kafka)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class GovernanceService:
    """Records in, messages out: the core plus decoding, dead letters and the input positions."""

    def __init__(
        self,
        config: g.Config,
        signers: Mapping[str, str],
        max_bytes: int | None = None,
        ceremonies: Callable[[g.CeremonyOrdered], object] | None = None,
    ) -> None:
        self.core = g.Governance(config, signers, verify_signature, key_valid)
        self.ceremonies = ceremonies or run_ceremony
        self.offsets: dict[str, int] = {}  # "<topic>:<partition>" -> next offset to read
        self.max_bytes = max_bytes
        self.changes = 0

    def handle(self, record: Record, now: datetime) -> list[Output]:
        self.offsets[f"{record.topic}:{record.partition}"] = record.offset + 1
        self.changes += 1
        if record.topic == LEDGER_OUTCOMES.name and not (record.key or b"").startswith(OUTCOME_PREFIX):
            return []
        topic = {t.name: t for t in INPUTS}[record.topic]
        message = validate(topic, record.key, record.value, self.max_bytes)
        origin = Origin(record.topic, record.partition, record.offset)
        if isinstance(message, Rejected):
            log.warning("dead letter %s:%d@%d: %s", record.topic, record.partition, record.offset, message.reason)
            return dead_letter_outputs(origin, record.key, record.value, message)
        try:
            return self.outputs(self._decide(message, now), now)
        except Exception as exc:  # a bug or an input nobody foresaw: dead-lettered, never silently dropped
            log.exception("processing failed at %s:%d@%d", record.topic, record.partition, record.offset)
            return dead_letter_outputs(origin, record.key, record.value, processing_failed(record.topic, exc))

    def _decide(self, message: Any, now: datetime) -> list[g.Event]:
        if isinstance(message, m.GovernanceRequest):
            return self.core.submit(to_request(message), now)
        if isinstance(message, m.GovernanceApproval):
            return self.core.approve(to_approval(message), now)
        if isinstance(message, m.LedgerOutcome) and message.command_type == "GOVERNED_TRANSFER":
            applied = message.status is m.LedgerOutcomeStatus.APPLIED
            reason = None if applied else f"the ledger refused the transfer: {message.reason_code}: {message.reason}"
            return self.core.finished(message.command_id.removeprefix("GOV:"), applied, reason, now)
        return []

    def tick(self, now: datetime, retention: timedelta | None = None) -> list[Output]:
        events = self.core.tick(now)
        if retention is not None and self.core.prune(now - retention):
            self.changes += 1
        if events:
            self.changes += 1
        return self.outputs(events, now)

    def outputs(self, events: list[g.Event], now: datetime) -> list[Output]:
        out: list[Output] = []
        for event in events:
            if isinstance(event, g.Published):
                out.append((GOVERNANCE_MULTISIG, multisig_of(event)))
            elif isinstance(event, g.Audited):
                out.append((AUDIT_RECORDS, audit_of(event)))
            elif isinstance(event, g.TransferOrdered):
                log.info("executing %s: %s", event.request_id, event.command_id)
                out.append((LEDGER_COMMANDS, transfer_of(event)))
            elif isinstance(event, g.PauseSet):
                log.warning("money out %s by %s", "PAUSED" if event.paused else "UNPAUSED", event.request_id)
                out.append((GOVERNANCE_PAUSE, pause_of(event)))
            elif isinstance(event, g.ParameterSet):
                log.warning("parameter %s set to %d by %s", event.name, event.value, event.request_id)
                out.append((GOVERNANCE_PARAMETERS, parameter_of(event)))
            elif isinstance(event, g.Refused):
                log.warning("refused %s (signer %s): %s: %s", event.request_id, event.signer_id, event.code,
                            event.reason)  # fmt: skip
            elif isinstance(event, g.SignersChanged):
                log.warning("signer set changed by %s: %s", event.request_id, ", ".join(sorted(event.signers)))
            elif isinstance(event, g.CeremonyOrdered):
                out.extend(self.outputs(self._ceremony(event, now), now))
        return out

    def _ceremony(self, event: g.CeremonyOrdered, now: datetime) -> list[g.Event]:
        """A key ceremony the signers approved, carried out by the key manager; a failure (the HSM refuses, a
        backup is missing) ends the request EXECUTION_FAILED with the error, and the signers request it again."""
        try:
            self.ceremonies(event)
        except Exception as exc:  # the key manager's refusals and HSM errors alike: said, not raised
            log.exception("key ceremony %s of %s failed", event.ceremony, event.request_id)
            return self.core.finished(event.request_id, False, f"{type(exc).__name__}: {exc}", now)
        log.warning("key ceremony %s done (request %s)", event.ceremony, event.request_id)
        return self.core.finished(event.request_id, True, None, now)

    def to_dict(self) -> dict[str, Any]:
        return {"core": self.core.to_dict(), "offsets": dict(sorted(self.offsets.items()))}

    def load(self, data: Mapping[str, Any]) -> None:
        self.core.load(data["core"])
        self.offsets = dict(data["offsets"])


# --------------------------------------------------------------------------- the state file


def state_path(data_dir: Path) -> Path:
    return data_dir / "security" / "governance.json"


def save_state(path: Path, state: Mapping[str, Any]) -> int:
    """Replace the file atomically; owner-only."""
    return files.save_state(path, STATE_FORMAT, state)


def load_state(path: Path) -> dict[str, Any] | None:
    return files.load_state(path, STATE_FORMAT)


# --------------------------------------------------------------------------- the loop

BATCH_MAX = 500
POLL_S = 0.1
FLUSH_TIMEOUT_S = 30.0
METADATA_TIMEOUT_S = 30.0


class GovernanceLoop:
    def __init__(self, settings: GovernanceSettings, signers_path: Path, state_file: Path) -> None:
        base = get_settings()
        self.settings = settings
        self.path = state_file
        genesis = load_signers(signers_path)
        self.service = GovernanceService(settings.core_config(), genesis, base.max_ingress_message_bytes)
        saved = load_state(state_file)
        if saved is not None:
            self.service.load(saved)
            if self.service.core.signers != genesis:
                log.info("signer set from the state (changed by executed SIGNER_CHANGE requests), not %s", signers_path)
        log.info("state %s", f"loaded from {state_file}" if saved else "new: every input read from its beginning")
        self.consumer = Consumer(consumer_config(base.bootstrap_servers, f"{base.app_id}-governance"))
        self.producer = Producer(producer_config(base.bootstrap_servers))
        self.outputs = Outputs(self.producer)
        self.stopping = False
        self.saved_changes = -1

    def assign(self) -> int:
        """Every partition of every input at its saved position; with none, ledger outcomes from their end (only
        outcomes of transfers sent from now on matter; a re-sent transfer is answered again)."""
        assignment: list[TopicPartition] = []
        for topic in INPUTS:
            meta = self.consumer.list_topics(topic.name, timeout=METADATA_TIMEOUT_S).topics[topic.name]
            first = OFFSET_END if topic is LEDGER_OUTCOMES else OFFSET_BEGINNING
            for p in sorted(meta.partitions):
                assignment.append(TopicPartition(topic.name, p, self.service.offsets.get(f"{topic.name}:{p}", first)))
        self.consumer.assign(assignment)
        return len(assignment)

    def handle(self, msg: Message) -> None:
        where = position_of(msg)
        if where is None:
            return
        topic, partition, offset = where
        record = Record(topic, partition, offset, msg.key(), msg.value())
        self.outputs.emit(self.service.handle(record, datetime.now(UTC)))

    def save(self) -> None:
        """Outputs acknowledged first, then state and positions in one write, then positions to the group."""
        self.outputs.acknowledged(FLUSH_TIMEOUT_S)
        if self.service.changes == self.saved_changes:
            return
        save_state(self.path, self.service.to_dict())
        self.saved_changes = self.service.changes
        positions = [TopicPartition(k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]), o)
                     for k, o in self.service.offsets.items()]  # fmt: skip
        if positions:
            self.consumer.commit(offsets=positions, asynchronous=True)

    def run(self) -> None:
        partitions = self.assign()
        core = self.service.core
        log.info("Worker ready (governance: %d input partitions, %d signers, deployment %s, timelock scale %s)",
                 partitions, len(core.signers), core.config.deployment_id, core.config.timelock_scale)  # fmt: skip
        if core.config.timelock_scale != 1:
            log.warning("timelocks scaled by %s: for tests and demos only", core.config.timelock_scale)
        retention = timedelta(days=self.settings.final_retention_days)
        next_tick = next_save = time.monotonic()
        while not self.stopping:
            for msg in consume_now(self.consumer, POLL_S, BATCH_MAX):
                self.handle(msg)
            now = time.monotonic()
            if now >= next_tick:
                self.outputs.emit(self.service.tick(datetime.now(UTC), retention))
                next_tick = now + self.settings.tick_every_s
            if now >= next_save:
                self.save()
                next_save = now + self.settings.save_every_s

    def close(self) -> None:
        try:
            self.save()
        finally:
            self.consumer.close()
            log.info("stopped; state at %s", self.path)


def main() -> int:
    base = get_settings()
    logs.setup(base)
    ensure_topics(base)
    loop = GovernanceLoop(GovernanceSettings(), get_security_settings().signers_path, state_path(base.data_dir))

    return run_until_stopped(loop, health.start(base, "governance", [f"{base.app_id}-governance"]))


if __name__ == "__main__":
    sys.exit(main())
