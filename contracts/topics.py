"""The topic registry: every topic declared once — name, key, partitions, retention, value model.

Agents, producers, the schema generator, the warehouse loader and the docs all read
this module; nothing else spells a topic name.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from functools import cached_property
from typing import Any

from pydantic import AwareDatetime, BaseModel, TypeAdapter

from contracts import models as m
from contracts import payload_codec
from contracts.construct import Encoded

try:  # the stream workers' environment has orjson; the Airflow one need not (encode then uses pydantic only)
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

DAY_MS = 86_400_000
KEEP_FOREVER = -1  # retention.ms / retention.bytes of a topic some state is a fold over: never deleted


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True)
class Topic:
    name: str
    value_type: Any
    key_field: str
    description: str
    partitions: int = 4
    # The count is part of the topic's meaning (the ledger is one writer over one ordered log): a deployment's
    # partition override does not apply to it, and an existing topic with another count is refused at start.
    fixed_partitions: bool = False
    # Written by another topic's partition numbers (the bridge journal by bridge.requests'): same count, always.
    copartitioned_with: str | None = None
    cleanup: Cleanup = Cleanup.DELETE
    retention_ms: int | None = 7 * DAY_MS
    upstream: bool = False  # produced by systems outside this platform: validated at ingress
    # The broker stamps each record when it appends it (LogAppendTime), so a consumer has a time no producer
    # chose: the ledger bounds every command's own time by it (a clock far ahead would expire every hold).
    broker_timestamps: bool = False
    max_message_bytes: int = 64 * 1024
    example: dict[str, Any] = field(default_factory=dict, compare=False)

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.value_type)

    def decode(self, raw: bytes | str) -> Any:
        """Validate wire bytes into the typed message (raises pydantic.ValidationError)."""
        return self.adapter.validator.validate_json(raw)  # TypeAdapter.validate_json, minus its Python layer

    def encode(self, value: Any) -> bytes:
        if type(value) is Encoded:  # written by the service itself (contracts.construct)
            return value.value
        if _plain_json(type(value)):
            try:
                return orjson.dumps(value.__dict__, default=_plain_fields, option=orjson.OPT_UTC_Z)
            except TypeError:  # e.g. an int beyond 64 bits: let pydantic say what it says
                pass
        if isinstance(value, BaseModel):  # the model's own serializer: no union dispatch on the hot path
            return value.__pydantic_serializer__.to_json(value, by_alias=True)
        return self.adapter.dump_json(value, by_alias=True)

    def key_of(self, value: Any) -> bytes:
        if type(value) is Encoded:
            return value.key
        key = getattr(value, self.key_field)
        assert isinstance(key, str) and key, f"{self.name}: empty key field {self.key_field}"
        return key.encode()

    def value_schema(self) -> dict[str, Any]:
        return self.adapter.json_schema(by_alias=True)

    def json_schema(self) -> dict[str, Any]:
        schema = self.value_schema()
        schema["$id"] = f"https://schemas.nexus-x.io/{self.name}.schema.json"
        schema["x-topic"] = {
            "name": self.name,
            "key": self.key_field,
            "partitions": self.partitions,
            "cleanup.policy": str(self.cleanup),
            "retention.ms": self.retention_ms,
            "max.message.bytes": self.max_message_bytes,
        }
        if self.fixed_partitions:
            schema["x-topic"]["partitions.fixed"] = True
        if self.copartitioned_with:
            schema["x-topic"]["partitions.same.as"] = self.copartitioned_with
        if self.broker_timestamps:
            schema["x-topic"]["message.timestamp.type"] = "LogAppendTime"
        schema.setdefault("description", self.description)
        return schema

    def topic_config(self) -> dict[str, str]:
        # The per-record limit is enforced at ingress (max_message_bytes); the broker limit applies to a
        # whole producer batch, so it stays at least Kafka's 1 MiB default.
        config = {"cleanup.policy": str(self.cleanup), "max.message.bytes": str(max(1_048_588, self.max_message_bytes))}
        if self.retention_ms is not None and self.cleanup is Cleanup.DELETE:
            config["retention.ms"] = str(self.retention_ms)
        if self.kept_forever:  # neither age nor size may delete it (a broker's log.retention.bytes would)
            config["retention.bytes"] = str(KEEP_FOREVER)
        if self.broker_timestamps:
            config["message.timestamp.type"] = "LogAppendTime"
        return config

    def partitions_with(self, override: int | None) -> int:
        """Partitions to create under a deployment's override (``NEXUS_TOPIC_PARTITIONS_OVERRIDE``)."""
        return self.partitions if self.fixed_partitions or override is None else override

    @property
    def kept_forever(self) -> bool:
        return self.retention_ms == KEEP_FOREVER and self.cleanup is Cleanup.DELETE


@dataclass(frozen=True)
class PayloadTopic(Topic):
    """A topic of raw bytes, not JSON: each value is a `contracts.payload_codec` gzip member of a `Payload`.

    Outputs arrive already encoded (`Encoded`: the producer of a dead letter compresses once, to know whether the
    payload fits); `encode` of a `Payload` is for tests and docs."""

    def decode(self, raw: bytes | str) -> payload_codec.Payload:
        return payload_codec.decode(raw.encode() if isinstance(raw, str) else raw)

    def encode(self, value: Any) -> bytes:
        if type(value) is Encoded:
            return value.value
        wire = payload_codec.encode(value, self.max_message_bytes)
        assert wire is not None, f"{self.name}: {value.ref} does not fit in {self.max_message_bytes} bytes"
        return wire

    def key_of(self, value: Any) -> bytes:
        return value.key if type(value) is Encoded else str(value.ref).encode()

    def value_schema(self) -> dict[str, Any]:
        return {
            "title": "Payload",
            "description": "Not JSON: a gzip member (RFC 1952) of the original bytes; its header's file name "
            "(FNAME) is the record key. `gunzip` restores the bytes.",
            "contentMediaType": "application/gzip",
        }


# ----------------------------------------------------------------------------- fast JSON for plain models
# A model whose fields are only str, int, bool, None, UTC datetimes, enums, literals, str-keyed dicts and
# other such models, with no aliases, exclusions or custom serializers, serialises to the same bytes with
# orjson over its __dict__ (fields in declaration order) as with pydantic's to_json, about 3x faster.
# tests/unit/test_topics_encode.py holds the two to the same bytes.

_PLAIN: dict[type, bool] = {}
_LEAVES = (str, int, bool, type(None), datetime, AwareDatetime)


def _plain_type(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str | int | bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return all(_plain_type(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _plain_type(typing.get_args(annotation)[0])
    if origin is dict:
        key, item = typing.get_args(annotation)
        return key is str and _plain_type(item)
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return issubclass(annotation, str | int)
        if issubclass(annotation, BaseModel):
            return _plain_json(annotation)
        return annotation in _LEAVES
    return False


def _plain_json(cls: type) -> bool:
    plain = _PLAIN.get(cls)
    if plain is None:
        _PLAIN[cls] = False  # while deciding (a model that refers to itself is not plain)
        plain = (
            orjson is not None
            and issubclass(cls, BaseModel)
            and cls.model_config.get("extra") != "allow"
            and cls.model_config.get("alias_generator") is None
            and not cls.__private_attributes__
            and not cls.__pydantic_root_model__
            and not cls.__pydantic_decorators__.field_serializers
            and not cls.__pydantic_decorators__.model_serializers
            and not cls.__pydantic_decorators__.computed_fields
            and all(
                f.alias is None and f.serialization_alias is None and not f.exclude and _plain_type(f.annotation)
                for f in cls.__pydantic_fields__.values()
            )
        )
        _PLAIN[cls] = plain
    return plain


def _plain_fields(value: Any) -> dict[str, Any]:
    if _plain_json(type(value)):
        return value.__dict__  # type: ignore[no-any-return]
    raise TypeError(f"not a plain model: {type(value).__name__}")


# ----------------------------------------------------------------------------- the registry


def compacted(name: str, value_type: Any, key_field: str, description: str, **options: Any) -> Topic:
    """A topic the broker compacts and keeps for ever: the last record per key is the current state."""
    return Topic(name, value_type, key_field, description, cleanup=Cleanup.COMPACT, retention_ms=None, **options)


ENERGY_ORDERS = Topic(
    "energy.orders",
    m.OrderCommand,
    "market_id",
    "Order commands (SUBMIT / CANCEL / AMEND) from trading front ends; keyed by market so one "
    "partition owns one order book.",
    upstream=True,
)
ENERGY_ORDER_EVENTS = Topic(
    "energy.orders.events",
    m.OrderEvent,
    "market_id",
    "Order lifecycle answers: accepted, rejected (with reason), cancelled, amended, expired, filled.",
)
ENERGY_TRADES = Topic("energy.trades", m.Trade, "market_id", "Matched trades, in sequence per market.")
ENERGY_PRICES = compacted(
    "energy.prices", m.MarketPrice, "market_id", "Latest best bid/ask, last price and VWAP per market."
)
ENERGY_SETTLEMENTS = Topic(
    "energy.settlements",
    m.TradeSettled,
    "trade_id",
    "One settlement result per trade: K-AUS moved, fee, delivery, carbon credits, phase timings.",
)
CARBON_CREDITS_MINTED = Topic(
    "carbon.credits.minted", m.CarbonCreditMinted, "account_id", "Carbon credits minted to renewable sellers."
)
DIVIDENDS_DECLARED = Topic(
    "dividends.declared",
    m.DividendDeclared,
    "account_id",
    "Dividends owed to energy-node and staking holders; auto-payout consumes them.",
)
LEDGER_TRANSFERS = Topic(
    "ledger.transfers",
    m.LedgerTransfer,
    "transfer_id",
    "Every K-AUS double-entry movement applied by the ledger (including holds).",
    retention_ms=30 * DAY_MS,
)
LEDGER_COMMANDS = Topic(
    "ledger.commands",
    m.LedgerCommand,
    "command_id",
    "The ledger's ordered input (deposits, trades to settle). One partition: the ledger is a single "
    "writer, like TigerBeetle's, so every balance check sees every earlier movement. Kept forever: the "
    "ledger's balances are a fold over it, rebuilt by replay (from a local snapshot where there is one). "
    "The broker timestamps each record; a command's occurred_at counts for at most one minute past it.",
    partitions=1,
    fixed_partitions=True,
    upstream=True,
    retention_ms=KEEP_FOREVER,
    broker_timestamps=True,
)
LEDGER_OUTCOMES = Topic(
    "ledger.outcomes",
    m.LedgerOutcome,
    "command_id",
    "The ledger's answer to each hold, post, void and reward command; requesters await it by command_id "
    "(a re-sent command is answered again with its original outcome).",
    retention_ms=DAY_MS,
)
FX_RATES = Topic(
    "fx.rates",
    m.FxRate,
    "quote",
    "FX quotes from NEXUS_INTERNAL, BLOOMBERG and REUTERS; keyed by quote currency.",
    upstream=True,
    retention_ms=DAY_MS,
)
BRIDGE_REQUESTS = Topic(
    "bridge.requests",
    m.BridgeRequest,
    "payer_account_id",
    "Card payments to settle over the High-Speed Bridge; keyed by payer so each payer's order holds.",
    upstream=True,
)
BRIDGE_SETTLEMENTS_COMPLETED = Topic(
    "bridge.settlements.completed",
    m.BridgeSettlementCompleted,
    "request_id",
    "Settled card payments with rail, amounts and per-phase durations.",
    retention_ms=30 * DAY_MS,
)
BRIDGE_SETTLEMENTS_FAILED = Topic(
    "bridge.settlements.failed",
    m.BridgeSettlementFailed,
    "request_id",
    "Card payments that failed, with the phase and a reason; their hold is voided.",
    retention_ms=30 * DAY_MS,
)
BRIDGE_PAYOUTS_JOURNAL = compacted(
    "bridge.payouts.journal",
    m.BridgeJournalEntry,
    "bridge_tx_id",
    "The bridge's intent-before-payout journal, compacted: the last entry per transaction is its open payout "
    "intent or its result. Written to the partition number of the transaction's bridge.requests record, so "
    "whichever worker owns that partition recovers its open payouts and answers its duplicates.",
    copartitioned_with="bridge.requests",
)
PAYOUT_RULES = compacted("payouts.rules", m.AutoPayoutRule, "rule_id", "Auto-payout rules (spec §2.3).", upstream=True)
PAYOUT_REQUESTS = Topic("payouts.requests", m.PayoutRequest, "payout_id", "Payouts to execute.")
PAYOUT_RESULTS = Topic("payouts.results", m.PayoutResult, "payout_id", "Executed or failed payouts.")
GOVERNANCE_KEYS = compacted(
    "governance.keys", m.KeyMetadata, "key_id", "HSM key metadata (expiry feeds alerting).", upstream=True
)
GOVERNANCE_MULTISIG = compacted(
    "governance.multisig", m.MultisigRequest, "request_id", "Multi-sig approval lifecycle.", upstream=True
)
MONITORING_ALERTS = Topic(
    "monitoring.alerts", m.Alert, "fingerprint", "Alerts fired and resolved, as sent to Alertmanager."
)
AUDIT_RECORDS = Topic(
    "audit.records", m.AuditRecord, "transaction_id", "Audit trail, spec §7.2 shape.", retention_ms=365 * DAY_MS
)
PLATFORM_DEADLETTERS = Topic(
    "platform.deadletters",
    m.DeadLetter,
    "source_topic",
    "Messages rejected at ingress, with origin, a reason and the original bytes: whole up to 16 KiB (key 1 KiB), "
    "else a prefix with the size, SHA-256 and a reference to the whole bytes on platform.deadletters.payloads. "
    "New dead letters stay under 64 KiB; the limit below also admits older, larger ones.",
    retention_ms=30 * DAY_MS,
    max_message_bytes=1024 * 1024,
)
PLATFORM_DEADLETTER_PAYLOADS = PayloadTopic(
    "platform.deadletters.payloads",
    payload_codec.Payload,
    "ref",
    "The whole original key or value of a dead letter that could keep only a prefix, kept as long as the dead "
    "letters (30 days) for replay: `nexus deadletters fetch`. Key: the dead letter's `value_ref` / `key_ref` "
    "(<source topic>:<partition>:<offset>:<key|value>); value: the bytes, gzip-compressed (not JSON). A payload "
    "whose compressed record exceeds the limit below is not stored, and its dead letter has no reference.",
    retention_ms=30 * DAY_MS,
    max_message_bytes=960 * 1024,  # under librdkafka's default message.max.bytes (1,000,000), which producers keep
)

TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        ENERGY_ORDERS,
        ENERGY_ORDER_EVENTS,
        ENERGY_TRADES,
        ENERGY_PRICES,
        ENERGY_SETTLEMENTS,
        CARBON_CREDITS_MINTED,
        DIVIDENDS_DECLARED,
        LEDGER_COMMANDS,
        LEDGER_TRANSFERS,
        LEDGER_OUTCOMES,
        FX_RATES,
        BRIDGE_REQUESTS,
        BRIDGE_SETTLEMENTS_COMPLETED,
        BRIDGE_SETTLEMENTS_FAILED,
        BRIDGE_PAYOUTS_JOURNAL,
        PAYOUT_RULES,
        PAYOUT_REQUESTS,
        PAYOUT_RESULTS,
        GOVERNANCE_KEYS,
        GOVERNANCE_MULTISIG,
        MONITORING_ALERTS,
        AUDIT_RECORDS,
        PLATFORM_DEADLETTERS,
        PLATFORM_DEADLETTER_PAYLOADS,
    )
}


def _check_copartitioned() -> None:
    """A co-partitioned pair is declared with one count, and neither side is fixed alone."""
    for t in TOPICS.values():
        if t.copartitioned_with is not None:
            lead = TOPICS[t.copartitioned_with]
            assert t.partitions == lead.partitions and t.fixed_partitions == lead.fixed_partitions, t.name


_check_copartitioned()


def topic(name: str) -> Topic:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; declared topics: {', '.join(sorted(TOPICS))}") from None


def schema_documents() -> dict[str, str]:
    """File name -> JSON Schema text, deterministic (sorted keys, trailing newline)."""
    return {
        f"{t.name}.schema.json": json.dumps(t.json_schema(), indent=2, sort_keys=True) + "\n" for t in TOPICS.values()
    }


KeyFn = Callable[[BaseModel], bytes]
