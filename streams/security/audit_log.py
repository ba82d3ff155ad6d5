"""The tamper-evident audit log: every audit.records record becomes a leaf of an append-only Merkle tree (RFC 6962),
and signed checkpoints (tree heads) commit to it (docs/audit-log.md).

    python -m streams.security.audit_log     (settings from NEXUS_* and NEXUS_AUDIT_LOG_*)

**One instance**, a plain confluent-kafka loop over every partition of ``audit.records``: the log has one order.
Each record not yet in the log (by auditId: a record written again after a producer's crash has the same auditId)
becomes the next leaf; its leaf data are the record's exact value bytes. Every ``checkpoint_every_s`` seconds or
``checkpoint_every_records`` leaves, the root of the current size is signed (the HSM's signing key: a signature per
checkpoint, none per record) and one Kafka transaction writes the checkpoint to ``audit.checkpoints``, the new leaves
to ``audit.log`` (each with its leaf index, the checkpoint's signature and ``blockchainRef``), any dead letters, and
the ``audit.records`` positions they cover. All of it is visible to a read-committed reader, or none of it.

**The log topic is the truth.** A start first fences and aborts whatever transaction a killed predecessor left open,
then rebuilds the tree and the set of logged auditIds from ``audit.log`` (only this ``log_id``'s entries) and
checks the result against the last checkpoint; it refuses to append to a log that does not match. Records read
after the last committed position are read again: those already logged are skipped by auditId, the others are
appended now. Nothing is appended twice and nothing is lost, whatever the moment of a crash.
"""

from __future__ import annotations

import base64
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.models import AuditCheckpoint, AuditLogEntry, AuditRecord
from contracts.topics import AUDIT_CHECKPOINTS, AUDIT_LOG, AUDIT_RECORDS, Topic
from domain.keys import KeyAction
from domain.merkle import CompactTree
from streams.kafka import ingress
from streams.kafka.clients import consume_now, consumer_config, describe, must_exit, produce_bounded, producer_config
from streams.kafka.service_loop import position_of, run_until_stopped
from streams.kafka.topic_admin import ensure_topics
from streams.ops import health, logs
from streams.security.signing import CheckpointSigner, SoftwareSigner, sign_checkpoint
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.audit_log")
# A key manager's record of these: the signing key in force may have changed, so the signer is asked again before
# the next checkpoint instead of up to signer_refresh_s later (a rotation's own record is signed by the new key).
SIGNING_KEY_CHANGES = frozenset({KeyAction.ROTATED, KeyAction.ROTATED_EARLY, KeyAction.RESTORED, KeyAction.DESTROYED})

# AuditLogEntry.leaf_b64 holds at most 32,768 base64 characters: a record above this many bytes cannot be a leaf
# and is dead-lettered (the producers' records are well under 1 KiB).
LEAF_BYTES_MAX = 32_768 // 4 * 3
BATCH_MAX = 500
POLL_S = 0.1
METADATA_TIMEOUT_S = 30.0
TXN_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 120.0


class AuditLogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_AUDIT_LOG_", env_file=".env", extra="ignore")

    # Which log this instance appends to: its entries and checkpoints carry it, and a restart rebuilds from them.
    log_id: str = Field(default="nexus-audit", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$", max_length=64)
    # A checkpoint is signed this often while leaves wait, or at once when this many wait (bounds a transaction).
    checkpoint_every_s: float = Field(default=5.0, gt=0)
    checkpoint_every_records: int = Field(default=1000, ge=1, le=10_000)
    # "hsm": the HSM's ACTIVE signing key over PKCS#11 (streams.security.hsm). "software": a key file under the
    # data directory, for development only: anyone who reads the file can sign checkpoints.
    signer: Literal["hsm", "software"] = "hsm"
    software_key_path: Path | None = None  # default <data_dir>/audit/dev-checkpoint-key.pem
    software_key_id: str = "dev-software-signing-v1"
    # The signer is obtained again this often, so a rotated signing key signs from then on.
    signer_refresh_s: float = Field(default=60.0, gt=0)
    # A failed transaction is retried (the same batch, the same checkpoint) this many times, then the process exits
    # and its restart rebuilds from the log.
    transaction_attempts: int = Field(default=3, ge=1, le=10)


class LogBroken(RuntimeError):
    """The log on the topic does not verify against itself: refuse to append to it."""


# --------------------------------------------------------------------------- the log (no Kafka)


@dataclass(frozen=True, slots=True)
class Leaf:
    index: int
    value: bytes
    record: AuditRecord


@dataclass(frozen=True, slots=True)
class Batch:
    """What one transaction writes: a checkpoint (None when no leaf was added) and its new leaves' entries."""

    checkpoint: AuditCheckpoint | None
    entries: list[AuditLogEntry]


class AuditLog:
    """The append-only log's state: the compact tree, the auditIds logged, the leaves waiting for a checkpoint."""

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id
        self.tree = CompactTree()
        self.logged: set[str] = set()
        self.pending: list[Leaf] = []
        self.last_checkpoint: AuditCheckpoint | None = None

    @property
    def size(self) -> int:
        return self.tree.size

    # ------------------------------------------------------------------ rebuild

    def restore(self, entry: AuditLogEntry) -> None:
        """Re-append one entry read back from audit.log, in order."""
        if entry.leaf_index != self.tree.size:
            raise LogBroken(f"{self.log_id}: audit.log holds leaf {entry.leaf_index} where leaf {self.size} belongs")
        if entry.record.audit_id in self.logged:
            raise LogBroken(f"{self.log_id}: leaf {entry.leaf_index} repeats auditId {entry.record.audit_id}")
        self.tree.append(base64.b64decode(entry.leaf_b64))
        self.logged.add(entry.record.audit_id)

    def restored(self, checkpoints: list[AuditCheckpoint]) -> None:
        """Check the rebuilt tree against the last checkpoint (a transaction writes both, so they agree)."""
        if not checkpoints:
            if self.size:
                raise LogBroken(f"{self.log_id}: {self.size} leaves in audit.log and no checkpoint")
            return
        last = max(checkpoints, key=lambda c: c.tree_size)
        if last.tree_size != self.size:
            raise LogBroken(f"{self.log_id}: audit.log holds {self.size} leaves, the last checkpoint {last.tree_size}")
        if last.root_hash != self.tree.root().hex():
            raise LogBroken(f"{self.log_id}: the leaves in audit.log do not hash to the last checkpoint's root")
        self.last_checkpoint = last

    # ------------------------------------------------------------------ appending

    def offer(self, key: bytes | None, value: bytes | None, origin: ingress.Origin) -> Leaf | ingress.Rejected | None:
        """The record as the next leaf, a rejection (dead letter), or None when its auditId is already logged."""
        message = ingress.validate(AUDIT_RECORDS, key, value, max_bytes=LEAF_BYTES_MAX)
        if isinstance(message, ingress.Rejected):
            return message
        assert isinstance(message, AuditRecord) and value is not None
        if message.audit_id in self.logged:
            return None
        leaf = Leaf(self.tree.append(value), value, message)
        self.logged.add(message.audit_id)
        self.pending.append(leaf)
        return leaf

    def batch(self, signer: CheckpointSigner, now: datetime) -> Batch:
        """The checkpoint of the current size and the entries of the leaves it is the first to cover. Pure apart
        from the signature: a failed transaction writes the same batch again."""
        if not self.pending:
            return Batch(None, [])
        checkpoint = sign_checkpoint(signer, self.log_id, self.size, self.tree.root(), now)
        return Batch(checkpoint, [self.entry(leaf, checkpoint) for leaf in self.pending])

    def entry(self, leaf: Leaf, checkpoint: AuditCheckpoint) -> AuditLogEntry:
        record = leaf.record.model_copy(
            update={"signature": checkpoint.signature, "blockchain_ref": blockchain_ref(self.log_id, checkpoint, leaf)}
        )
        return AuditLogEntry(
            log_id=self.log_id,
            leaf_index=leaf.index,
            leaf_b64=base64.b64encode(leaf.value).decode(),
            checkpoint_tree_size=checkpoint.tree_size,
            record=record,
        )

    def committed(self, batch: Batch) -> None:
        """The batch's transaction is committed: its leaves are in the log."""
        if batch.checkpoint is not None:
            self.pending = self.pending[len(batch.entries) :]
            self.last_checkpoint = batch.checkpoint


def blockchain_ref(log_id: str, checkpoint: AuditCheckpoint, leaf: Leaf) -> str:
    """``<log_id>/<tree_size>/<leaf_index>``: the checkpoint that first covers the leaf, and the leaf."""
    return f"{log_id}/{checkpoint.tree_size}/{leaf.index}"


# --------------------------------------------------------------------------- reading a topic back


def read_to_end(bootstrap: str, topic: Topic, timeout_s: float = READ_TIMEOUT_S) -> Iterator[Message]:
    """Every committed record of `topic`, partition by partition, up to the end (read_committed stops at the last
    stable offset, so a transaction still open is not read)."""
    consumer = Consumer(
        consumer_config(
            bootstrap,
            f"nexus-audit-reader-{uuid.uuid4().hex}",
            enable_partition_eof=True,
            isolation_level="read_committed",
            fetch_wait_max_ms=100,
        )
    )
    try:
        meta = consumer.list_topics(topic.name, timeout=METADATA_TIMEOUT_S).topics[topic.name]
        for p in sorted(meta.partitions):
            consumer.assign([TopicPartition(topic.name, p, OFFSET_BEGINNING)])
            yield from _read_partition(consumer, topic.name, p, time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _read_partition(consumer: Consumer, name: str, partition: int, deadline: float) -> Iterator[Message]:
    while time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            err = msg.error()
            if err is None:
                yield msg
            elif err.code() == KafkaError._PARTITION_EOF:
                return
            elif must_exit(err):
                raise RuntimeError(f"reading {name}: {describe(err)}")
    raise TimeoutError(f"reading {name}[{partition}]: no end reached in time")


def rebuild(bootstrap: str, log_id: str) -> AuditLog:
    """The log as audit.log holds it, checked against audit.checkpoints (LogBroken if they disagree)."""
    audit = AuditLog(log_id)
    wanted = log_id.encode()
    for msg in read_to_end(bootstrap, AUDIT_LOG):
        if msg.key() == wanted:
            entry = AUDIT_LOG.decode(msg.value() or b"")
            if entry.log_id == log_id:
                audit.restore(entry)
    checkpoints = [
        AUDIT_CHECKPOINTS.decode(msg.value() or b"")
        for msg in read_to_end(bootstrap, AUDIT_CHECKPOINTS)
        if msg.key() == wanted
    ]
    audit.restored([c for c in checkpoints if c.log_id == log_id])
    return audit


# --------------------------------------------------------------------------- the loop


SignerFactory = Callable[[], CheckpointSigner]


class AuditLogLoop:
    def __init__(self, settings: Settings, audit_settings: AuditLogSettings, signer_factory: SignerFactory) -> None:
        self.settings = settings
        self.audit_settings = audit_settings
        self.signer_factory = signer_factory
        self.signer = signer_factory()
        self.signer_at = time.monotonic()
        bootstrap = settings.bootstrap_servers
        log_id = audit_settings.log_id
        self.producer = Producer(
            producer_config(
                bootstrap,
                transactional_id=f"{settings.app_id}-audit-log-{log_id}",
                transaction_timeout_ms=int(TXN_TIMEOUT_S * 2000),
            )
        )
        # Fences a predecessor and aborts its open transaction, so the log read next is complete and stable.
        self.producer.init_transactions(TXN_TIMEOUT_S)
        self.audit = rebuild(bootstrap, log_id)
        log.info("log %s rebuilt from %s: %d leaves", log_id, AUDIT_LOG.name, self.audit.size)
        self.consumer = Consumer(
            consumer_config(bootstrap, f"{settings.app_id}-audit-log-{log_id}", isolation_level="read_committed")
        )
        self.positions: dict[tuple[str, int], int] = {}  # next offset to read, per audit.records partition
        self.unsaved = False  # positions moved past records that produced no leaf (duplicates, dead letters)
        self.dead_letters: list[tuple[Topic, Any]] = []
        self.first_pending_at: float | None = None
        self.last_commit_at = time.monotonic()
        self.stopping = False

    def assign(self) -> int:
        """Every audit.records partition, from its committed position (the beginning without one)."""
        name = AUDIT_RECORDS.name
        meta = self.consumer.list_topics(name, timeout=METADATA_TIMEOUT_S).topics[name]
        wanted = [TopicPartition(name, p) for p in sorted(meta.partitions)]
        committed = self.consumer.committed(wanted, timeout=METADATA_TIMEOUT_S)
        assignment = [
            TopicPartition(name, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING) for tp in committed
        ]
        self.consumer.assign(assignment)
        return len(assignment)

    def handle(self, msg: Message) -> None:
        where = position_of(msg)
        if where is None:
            return
        topic, partition, offset = where
        self.positions[(topic, partition)] = offset + 1
        origin = ingress.Origin(topic, partition, offset)
        outcome = self.audit.offer(msg.key(), msg.value(), origin)
        if isinstance(outcome, ingress.Rejected):
            log.warning("dead letter %s:%d@%d: %s", topic, partition, offset, outcome.reason)
            self.dead_letters.extend(ingress.dead_letter_outputs(origin, msg.key(), msg.value(), outcome))
        if isinstance(outcome, Leaf):
            if self.first_pending_at is None:
                self.first_pending_at = time.monotonic()
            if outcome.record.action in SIGNING_KEY_CHANGES:
                self.signer_at = float("-inf")  # the checkpoint covering it is signed by the key in force now
        else:
            self.unsaved = True

    def due(self, now: float) -> bool:
        """A checkpoint is due (leaves waited long enough, or too many wait), or positions to save."""
        every_s = self.audit_settings.checkpoint_every_s
        if len(self.audit.pending) >= self.audit_settings.checkpoint_every_records:
            return True
        if len(self.dead_letters) >= BATCH_MAX:
            return True
        if self.first_pending_at is not None and now - self.first_pending_at >= every_s:
            return True
        return self.unsaved and now - self.last_commit_at >= every_s

    def _signer(self) -> CheckpointSigner:
        now = time.monotonic()
        if now - self.signer_at >= self.audit_settings.signer_refresh_s:
            self.signer = self.signer_factory()
            self.signer_at = now
        return self.signer

    def commit(self) -> None:
        """Checkpoint, entries, dead letters and positions in one transaction; the same batch again on failure."""
        batch = self.audit.batch(self._signer(), datetime.now(UTC))
        attempts = self.audit_settings.transaction_attempts
        for attempt in range(1, attempts + 1):
            try:
                self._transaction(batch)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or attempt == attempts:
                    raise
                log.warning("transaction failed (attempt %d of %d), retried: %s", attempt, attempts, describe(error))
                if error.txn_requires_abort():
                    self.producer.abort_transaction(TXN_TIMEOUT_S)
        self.audit.committed(batch)
        self.dead_letters = []
        self.first_pending_at = None
        self.unsaved = False
        self.last_commit_at = time.monotonic()
        if batch.checkpoint is not None:
            log.info(
                "checkpoint %s size %d signed by %s",
                self.audit.log_id,
                batch.checkpoint.tree_size,
                batch.checkpoint.key_id,
            )

    def _transaction(self, batch: Batch) -> None:
        self.producer.begin_transaction()
        if batch.checkpoint is not None:
            self._produce(AUDIT_CHECKPOINTS, batch.checkpoint)
        for entry in batch.entries:
            self._produce(AUDIT_LOG, entry)
        for topic, value in self.dead_letters:
            self._produce(topic, value)
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self.positions.items())]
        if offsets:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), TXN_TIMEOUT_S)
        self.producer.commit_transaction(TXN_TIMEOUT_S)

    def _produce(self, topic: Topic, value: Any) -> None:
        produce_bounded(self.producer, topic.name, topic.encode(value), topic.key_of(value))

    def run(self) -> None:
        partitions = self.assign()
        log.info(
            "Worker ready (audit log %s: %d leaves, %d audit.records partitions, one instance)",
            self.audit.log_id,
            self.audit.size,
            partitions,
        )
        while not self.stopping:
            for msg in consume_now(self.consumer, POLL_S, BATCH_MAX):
                self.handle(msg)
                if len(self.audit.pending) >= self.audit_settings.checkpoint_every_records:
                    self.commit()
            if self.due(time.monotonic()):
                self.commit()

    def close(self) -> None:
        try:
            if self.audit.pending or self.unsaved:
                self.commit()
        finally:
            self.consumer.close()
            log.info("stopped: log %s at %d leaves", self.audit.log_id, self.audit.size)


# --------------------------------------------------------------------------- wiring


def default_signer_factory(settings: Settings, audit_settings: AuditLogSettings) -> SignerFactory:
    """The HSM's signer, or the development key file when NEXUS_AUDIT_LOG_SIGNER=software."""
    if audit_settings.signer == "software":
        path = audit_settings.software_key_path or settings.data_dir / "audit" / "dev-checkpoint-key.pem"
        log.warning("checkpoints signed by a SOFTWARE key (%s): development only, not an HSM", path)
        signer = SoftwareSigner.load_or_create(path, audit_settings.software_key_id)
        return lambda: signer
    return _hsm_signer_factory()


def _hsm_signer_factory() -> SignerFactory:
    """The key manager's signer of the ACTIVE signing version (streams.security.keys), over one HSM session kept for
    the process's life; asked again every ``signer_refresh_s``, so a rotation takes effect without a restart."""
    from streams.security.keys import KeyManager, open_hsm  # PKCS#11 only where the HSM signs
    from streams.security.settings import get_security_settings

    security = get_security_settings()
    manager = KeyManager(open_hsm(security), security)
    signer = manager.signer()  # fails now, with its reason, when no signing key is ACTIVE
    log.info("checkpoints signed in the HSM (token %s) by %s", security.token_label, signer.key_id)
    return manager.signer


def main() -> int:
    settings = get_settings()
    logs.setup(settings)
    audit_settings = AuditLogSettings()
    ensure_topics(settings)
    loop = AuditLogLoop(settings, audit_settings, default_signer_factory(settings, audit_settings))

    group = f"{settings.app_id}-audit-log-{audit_settings.log_id}"
    return run_until_stopped(loop, health.start(settings, "audit-log", [group]))


if __name__ == "__main__":
    sys.exit(main())
