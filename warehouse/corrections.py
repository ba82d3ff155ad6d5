"""A ledger break's correction through governance: the LEDGER_CORRECTION request, and reading its outcome.

A ledger break (``domain.variance_rules.LEDGER_BREAKS``: CAPTURE_REFUSED, the payer owes the K-AUS a refused
capture did not move) is corrected only by moving K-AUS in the ledger, which is a multi-sig LEDGER_CORRECTION
(docs/governance.md): ``from_account`` (debited) -> ``to_account`` (credited), the amount in K-AUS base units, the
exception's id as ``exception_id``. The governance service executes it once the signers approved it and its
timelock ended; the ledger applies it once (command ``GOV:<request_id>``).

Defaults, from what the warehouse holds of the exception's settlement:

* ``from_account``: the payer (``mart_capture_refused.payer_account_id``: the bridge settlement's payer; a holder
  for a payout);
* ``to_account``: the account the refused capture would have credited: the credit account of the payment's hold
  (``stg_ledger_transfers``, the PENDING transfer under the settlement's reference with leg HOLD; the bridge's
  settlement account, ``bridge:settlement`` by default);
* the amount: the K-AUS owed (``mart_capture_refused.kaus_owed_units``, the settlement's ``kaus_debited_units``).

Reading the outcome: ``governance.multisig`` is compacted by request id, so its latest record per request is the
request's state. It is read here directly, from the beginning to the end of each partition (bounded by the topic's
live keys and a timeout), not through the snapshot loader: the snapshot lands an event id once (the first copy wins)
and only within a day's window by record timestamp, while a request's state changes under the same id over days
(PENDING, APPROVED, EXECUTED) and its final state is what matters, whenever it came.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from contracts import models as m
from contracts.topics import GOVERNANCE_MULTISIG
from domain.variance_rules import correction_nonce
from streams.kafka.clients import consumer_config, describe, must_exit

REASON_CHARS_MAX = 200  # a governance request's param value
READ_BATCH = 500
POLL_S = 0.5


class CorrectionUnknown(ValueError):
    """What the correction needs and neither the data nor the person gave (which flag to pass)."""


@dataclass(frozen=True, slots=True)
class Correction:
    """What a LEDGER_CORRECTION moves: ``amount_kaus_units`` from ``from_account`` to ``to_account``."""

    from_account: str
    to_account: str
    amount_kaus_units: int

    def __post_init__(self) -> None:
        if self.amount_kaus_units <= 0:
            raise CorrectionUnknown(f"a correction moves a positive K-AUS amount, not {self.amount_kaus_units} units")
        if self.from_account == self.to_account:
            raise CorrectionUnknown(f"from and to are the same account ({self.from_account})")


def default_correction(
    con: duckdb.DuckDBPyConnection,
    exception: dict[str, Any],
    from_account: str | None = None,
    to_account: str | None = None,
    amount_kaus_units: int | None = None,
) -> Correction:
    """The correction of a ledger break: what the person gave, the rest from the warehouse (module docstring)."""
    owed = _rows(
        con,
        "SELECT payer_account_id, kaus_owed_units, bridge_tx_id FROM mart_capture_refused WHERE settlement_id = $s",
        {"s": exception["settlement_id"]},
    )
    payer, units, tx = owed[0] if owed else (None, None, None)
    credit = None
    if to_account is None:
        held = _rows(
            con,
            "SELECT credit_account_id FROM stg_ledger_transfers WHERE kind = 'PENDING' AND leg = 'HOLD'"
            " AND settlement_ref IN ($s, $tx) ORDER BY occurred_at LIMIT 1",
            {"s": exception["settlement_id"], "tx": tx or exception.get("related_id")},
        )
        credit = held[0][0] if held else None
    chosen = (from_account or payer, to_account or credit, units if amount_kaus_units is None else amount_kaus_units)
    flags = ("--from-account", "--to-account", "--amount")
    missing = [flag for flag, value in zip(flags, chosen, strict=True) if value is None]
    if missing:
        raise CorrectionUnknown(
            f"{exception['exception_id']}: the warehouse holds no {', '.join(missing)} for it (its settlement's "
            f"capture_refused record or hold was not snapshotted); pass {' and '.join(missing)}"
        )
    return Correction(str(chosen[0]), str(chosen[1]), int(chosen[2]))  # type: ignore[arg-type]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[Any]:
    """The rows, or none when the models were never built in this warehouse (no snapshot ran yet)."""
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.CatalogException:
        return []


def correction_request(
    request_id: str,
    exception_id: str,
    correction: Correction,
    requested_by: str,
    reason: str,
    created_at: datetime,
    expires_at: datetime,
) -> m.GovernanceRequest:
    """The governance.requests value; the nonce is the request id's hash (``correction_nonce``), so the same
    request built again is the same request (ValidationError when a value breaks the contract, e.g. the actor)."""
    return m.GovernanceRequest(
        request_id=request_id,
        operation=m.GovernanceOperation.LEDGER_CORRECTION,
        amount_kaus_units=correction.amount_kaus_units,
        params={
            "from_account": correction.from_account,
            "to_account": correction.to_account,
            "exception_id": exception_id,
            "reason": reason.strip()[:REASON_CHARS_MAX],
        },
        nonce=correction_nonce(request_id),
        expires_at=expires_at,
        requested_by=requested_by,
        created_at=created_at,
    )


def read_multisig(
    bootstrap: str,
    request_ids: Collection[str],
    timeout_s: float,
    consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
) -> dict[str, m.MultisigRequest]:
    """The latest governance.multisig state of each of ``request_ids`` that has one: every partition read from
    its beginning to its end (the compacted topic holds about one record per request), within ``timeout_s``."""
    wanted = {rid.encode() for rid in request_ids}
    if not wanted:
        return {}
    consumer = consumer_factory(
        consumer_config(
            bootstrap,
            f"nexus-recon-multisig-{uuid.uuid4().hex}",
            enable_partition_eof=True,
            isolation_level="read_committed",
            fetch_wait_max_ms=100,
        )
    )
    found: dict[str, m.MultisigRequest] = {}
    try:
        meta = consumer.list_topics(GOVERNANCE_MULTISIG.name, timeout=timeout_s).topics[GOVERNANCE_MULTISIG.name]
        remaining = set(meta.partitions)
        consumer.assign([TopicPartition(GOVERNANCE_MULTISIG.name, p, OFFSET_BEGINNING) for p in sorted(remaining)])
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                unread = sorted(remaining)
                raise TimeoutError(f"{GOVERNANCE_MULTISIG.name}: {unread} not read to the end in {timeout_s}s")
            for msg in consumer.consume(READ_BATCH, timeout=POLL_S):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    elif must_exit(err):
                        raise RuntimeError(f"reading {GOVERNANCE_MULTISIG.name}: {describe(err)}")
                    continue
                if msg.key() in wanted and msg.value():
                    try:
                        state = GOVERNANCE_MULTISIG.decode(msg.value())
                    except (ValidationError, ValueError):
                        continue  # not ours to judge: the governance service writes it; a bad record changes nothing
                    found[state.request_id] = state  # offsets in order within a partition: the latest wins
    finally:
        consumer.close()
    return found


__all__ = ["Correction", "CorrectionUnknown", "correction_request", "default_correction", "read_multisig"]
