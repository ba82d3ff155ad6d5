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


class Component(StrEnum):
    """Who writes and reads a topic: the platform's processes, and the systems outside it."""

    UPSTREAM = "upstream"
    MATCHING = "matching"
    LEDGER = "ledger"
    BRIDGE = "bridge"
    PAYOUTS = "payouts"
    NOTIFIER = "notifier"
    SECURITY = "security"
    MONITORING = "monitoring"
    DASHBOARD = "dashboard"
    WAREHOUSE = "warehouse"
    OPERATORS = "operators"
    API = "api"
    STATUS = "status"

    @property
    def description(self) -> str:
        return COMPONENT_DESCRIPTIONS[self]


COMPONENT_DESCRIPTIONS: dict[Component, str] = {
    Component.UPSTREAM: "systems outside the platform: trading front ends, FX feeds, treasury, card acquirers, "
    "governance tools; they produce the upstream topics and read the answers",
    Component.MATCHING: "order matching, one order book per market (streams/p2p/matching.py)",
    Component.LEDGER: "the K-AUS ledger and trade settlement, the single writer over ledger.commands "
    "(streams/p2p/ledger.py)",
    Component.BRIDGE: "the High-Speed Bridge: card payments settled to fiat rails (streams/bridge)",
    Component.PAYOUTS: "the auto-payout service: rules, triggers, the KYC gate and its webhook receiver; pays out "
    "through the bridge (streams/payouts)",
    Component.NOTIFIER: "the holder notification sender: e-mail over SMTP, SMS and push through a webhook gateway "
    "(streams/notifications)",
    Component.SECURITY: "the security layer: HSM keys over PKCS#11, the signed audit log, multi-sig governance "
    "(streams/security)",
    Component.MONITORING: "the monitoring agent: metrics and alert rules, alerts sent to Alertmanager "
    "(streams/alerting)",
    Component.DASHBOARD: "the operations dashboard (dashboards/)",
    Component.WAREHOUSE: "the warehouse snapshot loader and daily reconciliation (warehouse/, dags/)",
    Component.OPERATORS: "people running the platform, through the `nexus` CLI (streams/cli.py)",
    Component.API: "the settlement HTTP API of spec §10.B (streams/api; its contract: streams/api/openapi.json)",
    Component.STATUS: "the settlement status read model the API answers from (streams/status)",
}
assert set(COMPONENT_DESCRIPTIONS) == set(Component)


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
    # Who writes the topic and who reads it (the AsyncAPI document's operations; tests/unit/test_contract_registry.py
    # holds them to the modules that name the topic).
    producers: tuple[Component, ...] = ()
    consumers: tuple[Component, ...] = ()
    # The value fields that identify one record for a consumer: delivery is at least once, so a record can repeat
    # after a crash, and a consumer applies each of these at most once. Empty: the key field.
    dedup_key: tuple[str, ...] = ()
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
        schema = tidy_schema(self.value_schema(), open_content=not self.upstream)
        schema["$schema"] = JSON_SCHEMA_DIALECT
        schema["$id"] = f"https://schemas.nexus-x.io/{self.name}.schema.json"
        schema["x-topic"] = {
            "name": self.name,
            "key": self.key_field,
            "partitions": self.partitions,
            "cleanup.policy": str(self.cleanup),
            "retention.ms": self.retention_ms,
            "max.message.bytes": self.max_message_bytes,
            "upstream": self.upstream,
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
    def identity(self) -> tuple[str, ...]:
        """The fields a consumer deduplicates on (see `dedup_key`)."""
        return self.dedup_key or (self.key_field,)

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


# ----------------------------------------------------------------------------- published schema

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def tidy_schema(schema: dict[str, Any], *, open_content: bool = False) -> dict[str, Any]:
    """The schema as the platform really validates: one bound per side, and a union's tag required.

    pydantic writes both `minimum` and `exclusiveMinimum` for a field bounded twice (a positive amount built on a
    non-negative type), and leaves a union member's `type` optional because the member has a default for it; the
    platform's decoder always requires the tag (a message without it is refused, MISSING_FIELD).
    `open_content`: for topics the platform writes, whose consumers must ignore fields they do not know (answers
    gain optional fields in minor versions, contracts/COMPATIBILITY.md), objects do not forbid other properties.
    """
    _one_bound_per_side(schema)
    if open_content:
        _allow_other_properties(schema)
    discriminator = schema.get("discriminator")
    if isinstance(discriminator, dict):
        tag = discriminator["propertyName"]
        for ref in discriminator["mapping"].values():
            member = schema["$defs"][ref.rsplit("/", 1)[-1]]
            member["properties"][tag].pop("default", None)
            member["required"] = [tag, *(name for name in member.get("required", []) if name != tag)]
    return schema


def _allow_other_properties(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _allow_other_properties(item)
    elif isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for value in node.values():
            _allow_other_properties(value)


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a published schema that refuses properties it does not list: what the platform itself writes.

    Answer schemas are open for their readers (minor versions add fields); the platform's own output is held to
    exactly the fields of its version (tests/support/schema_check.py).
    """
    closed = json.loads(json.dumps(schema))
    stack: list[Any] = [closed]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return closed  # type: ignore[no-any-return]


def _one_bound_per_side(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _one_bound_per_side(item)
        return
    if not isinstance(node, dict):
        return
    for inclusive, exclusive, tighter in (("minimum", "exclusiveMinimum", max), ("maximum", "exclusiveMaximum", min)):
        if inclusive in node and exclusive in node:
            # The exclusive bound wins when it is at least as tight (x > 0 beats x >= 0); else the inclusive one.
            keep_exclusive = tighter(node[inclusive], node[exclusive]) == node[exclusive]
            del node[inclusive if keep_exclusive else exclusive]
    for value in node.values():
        _one_bound_per_side(value)


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
    producers=(Component.UPSTREAM,),
    consumers=(Component.MATCHING,),
    dedup_key=("market_id", "order_id"),
)
ENERGY_ORDER_EVENTS = Topic(
    "energy.orders.events",
    m.OrderEvent,
    "market_id",
    "Order lifecycle answers: accepted, rejected (with reason), cancelled, amended, expired, filled.",
    producers=(Component.MATCHING,),
    consumers=(Component.UPSTREAM,),
    dedup_key=("market_id", "sequence", "order_id"),
)
ENERGY_TRADES = Topic(
    "energy.trades",
    m.Trade,
    "market_id",
    "Matched trades, in sequence per market.",
    producers=(Component.MATCHING,),
    consumers=(Component.UPSTREAM, Component.WAREHOUSE),
    dedup_key=("trade_id",),
)
ENERGY_PRICES = compacted(
    "energy.prices",
    m.MarketPrice,
    "market_id",
    "Latest best bid/ask, last price and VWAP per market.",
    producers=(Component.MATCHING,),
    consumers=(Component.UPSTREAM,),
    dedup_key=("market_id", "sequence"),
)
ENERGY_SETTLEMENTS = Topic(
    "energy.settlements",
    m.TradeSettled,
    "trade_id",
    "One settlement result per trade: K-AUS moved, fee, delivery, carbon credits, phase timings.",
    producers=(Component.LEDGER,),
    consumers=(Component.UPSTREAM, Component.MONITORING, Component.DASHBOARD, Component.WAREHOUSE),
)
CARBON_CREDITS_MINTED = Topic(
    "carbon.credits.minted",
    m.CarbonCreditMinted,
    "account_id",
    "Carbon credits minted to renewable sellers.",
    producers=(Component.LEDGER,),
    consumers=(Component.UPSTREAM,),
    dedup_key=("mint_id",),
)
DIVIDENDS_DECLARED = Topic(
    "dividends.declared",
    m.DividendDeclared,
    "account_id",
    "Dividends owed to energy-node and staking holders (the input of their auto-payout rules).",
    producers=(Component.LEDGER,),
    consumers=(Component.UPSTREAM, Component.PAYOUTS),
    dedup_key=("dividend_id",),
)
LEDGER_TRANSFERS = Topic(
    "ledger.transfers",
    m.LedgerTransfer,
    "transfer_id",
    "Every double-entry movement the ledger applied (including holds): K-AUS, or carbon milli-credits for the "
    "carbon mint; `asset` names the unit of `amount_units`. Each names its business transaction in `reference` "
    "(settlement kind, id, leg): the link finance reconciles on.",
    retention_ms=30 * DAY_MS,
    producers=(Component.LEDGER,),
    consumers=(Component.UPSTREAM, Component.PAYOUTS, Component.WAREHOUSE),
)
LEDGER_COMMANDS = Topic(
    "ledger.commands",
    m.LedgerCommand,
    "command_id",
    "The ledger's ordered input (deposits, trades to settle, holds, stakes; the ledger's own epoch timer appends "
    "each epoch's DECLARE_DIVIDENDS). One partition: the ledger is a single "
    "writer, like TigerBeetle's, so every balance check sees every earlier movement. Kept forever: the "
    "ledger's balances are a fold over it, rebuilt by replay (from a local snapshot where there is one). "
    "The broker timestamps each record (LogAppendTime), which bounds the command's own time.",
    partitions=1,
    fixed_partitions=True,
    upstream=True,
    retention_ms=KEEP_FOREVER,
    broker_timestamps=True,
    producers=(Component.UPSTREAM, Component.MATCHING, Component.LEDGER, Component.BRIDGE, Component.SECURITY),
    consumers=(Component.LEDGER,),
    dedup_key=("command_id",),
)
LEDGER_OUTCOMES = Topic(
    "ledger.outcomes",
    m.LedgerOutcome,
    "command_id",
    "The ledger's answer to each hold, post, void and reward command; requesters await it by command_id "
    "(a re-sent command is answered again with its original outcome).",
    retention_ms=DAY_MS,
    producers=(Component.LEDGER,),
    consumers=(Component.BRIDGE, Component.SECURITY),
)
FX_RATES = Topic(
    "fx.rates",
    m.FxRate,
    "quote",
    "FX quotes from NEXUS_INTERNAL, BLOOMBERG and REUTERS; keyed by quote currency.",
    upstream=True,
    retention_ms=3 * DAY_MS,  # the 01:00 reconciliation of day D reads back to D-1 23:55: keep D's quotes past D+1
    producers=(Component.UPSTREAM,),
    consumers=(Component.BRIDGE, Component.PAYOUTS, Component.MONITORING, Component.WAREHOUSE),
    dedup_key=("quote_id",),
)
BRIDGE_REQUESTS = Topic(
    "bridge.requests",
    m.BridgeRequest,
    "payer_account_id",
    "Card payments to settle over the High-Speed Bridge, and holders' auto-payouts (with `payout`, from the "
    "auto-payout service); keyed by payer so each payer's order holds.",
    upstream=True,
    producers=(Component.UPSTREAM, Component.PAYOUTS, Component.API),
    consumers=(Component.BRIDGE, Component.STATUS),
    dedup_key=("request_id",),
)
BRIDGE_SETTLEMENTS_COMPLETED = Topic(
    "bridge.settlements.completed",
    m.BridgeSettlementCompleted,
    "request_id",
    "Settled card payments with rail, amounts and per-phase durations (a holder's auto-payout carries its "
    "`payout_id`).",
    retention_ms=30 * DAY_MS,
    producers=(Component.BRIDGE,),
    consumers=(
        Component.UPSTREAM,
        Component.PAYOUTS,
        Component.MONITORING,
        Component.DASHBOARD,
        Component.WAREHOUSE,
        Component.API,
        Component.STATUS,
    ),
)
BRIDGE_SETTLEMENTS_FAILED = Topic(
    "bridge.settlements.failed",
    m.BridgeSettlementFailed,
    "request_id",
    "Card payments that failed, with the phase and a reason; their hold is voided (a holder's auto-payout carries "
    "its `payout_id`).",
    retention_ms=30 * DAY_MS,
    producers=(Component.BRIDGE,),
    consumers=(
        Component.UPSTREAM,
        Component.PAYOUTS,
        Component.MONITORING,
        Component.DASHBOARD,
        Component.WAREHOUSE,
        Component.API,
        Component.STATUS,
    ),
)
BRIDGE_PAYOUTS_JOURNAL = compacted(
    "bridge.payouts.journal",
    m.BridgeJournalEntry,
    "bridge_tx_id",
    "The bridge's intent-before-payout journal, compacted: the last entry per transaction is its open payout "
    "intent or its result. Written to the partition number of the transaction's bridge.requests record, so "
    "whichever worker owns that partition recovers its open payouts and answers its duplicates.",
    copartitioned_with="bridge.requests",
    producers=(Component.BRIDGE,),
    consumers=(Component.BRIDGE, Component.STATUS),
)
PAYOUT_RULES = compacted(
    "payouts.rules",
    m.AutoPayoutRule,
    "rule_id",
    "Auto-payout rules (spec §2.3), compacted by rule_id: a newer record replaces the rule, `isActive` false "
    "stops it, a tombstone (null value) deletes it. A rule that cannot work is dead-lettered with its reason.",
    upstream=True,
    producers=(Component.UPSTREAM, Component.API),
    consumers=(Component.PAYOUTS, Component.API),
)
PAYOUT_REQUESTS = Topic(
    "payouts.requests",
    m.PayoutRequest,
    "payout_id",
    "Payouts the auto-payout service decided, one per payout_id (deterministic, so a re-decision after a crash "
    "has the same id; the service reads its own requests back, so it also has the same amount); each is executed "
    "as a bridge request with the same id.",
    producers=(Component.PAYOUTS,),
    consumers=(Component.PAYOUTS, Component.UPSTREAM, Component.WAREHOUSE, Component.STATUS),
)
PAYOUT_RESULTS = Topic(
    "payouts.results",
    m.PayoutResult,
    "payout_id",
    "Payout outcomes, one per payout_id: PAID, or FAILED (nothing paid, its hold voided).",
    producers=(Component.PAYOUTS,),
    consumers=(Component.UPSTREAM, Component.DASHBOARD, Component.WAREHOUSE, Component.STATUS),
)
PAYOUT_WAITING = Topic(
    "payouts.waiting",
    m.PayoutWaiting,
    "payout_id",
    "Payouts due but held back, with the reason (the holder's KYC is not verified); each is paid under the same "
    "payout_id once the reason clears, and then has its payouts.results record.",
    producers=(Component.PAYOUTS,),
    consumers=(Component.UPSTREAM, Component.DASHBOARD, Component.STATUS),
    dedup_key=("payout_id", "reason_code"),
)
KYC_STATUS = compacted(
    "kyc.status",
    m.KycStatusChanged,
    "account_id",
    "Holders' KYC status, the latest per account, from the platform's KYC webhook receiver (Sumsub / Jumio "
    "style, signature checked). Holds contact data (personal): readable by the payout services only.",
    producers=(Component.PAYOUTS,),
    consumers=(Component.PAYOUTS,),
)
NOTIFICATIONS_HOLDERS = Topic(
    "notifications.holders",
    m.HolderNotification,
    "account_id",
    "Messages to holders about their payouts (e-mail, SMS, push), one per payout, event and channel; sent once "
    "by the notifier (not on-call alerts: those go through Alertmanager).",
    producers=(Component.PAYOUTS,),
    consumers=(Component.NOTIFIER,),
    dedup_key=("notification_id",),
)
NOTIFICATIONS_DELIVERIES = compacted(
    "notifications.deliveries",
    m.NotificationDelivery,
    "notification_id",
    "What became of each holder notification: DELIVERED, or UNDELIVERED after the last retry (then also "
    "dead-lettered with its bytes). The notifier's memory of what it sent.",
    producers=(Component.NOTIFIER,),
    consumers=(Component.NOTIFIER, Component.DASHBOARD),
)
GOVERNANCE_KEYS = compacted(
    "governance.keys",
    m.KeyMetadata,
    "key_id",
    "The HSM's keys, one record per key version, published by the platform's key manager: purpose, version, "
    "state (ACTIVE / RETIRED / DESTROYED), expiry (feeds the HSM-key-expiry alert) and, for signing keys, the "
    "public key auditors verify the audit log with.",
    upstream=True,  # an outside HSM inventory or governance tool may publish too (1.x producers)
    producers=(Component.UPSTREAM, Component.SECURITY),
    consumers=(Component.UPSTREAM, Component.MONITORING),
)
GOVERNANCE_MULTISIG = compacted(
    "governance.multisig",
    m.MultisigRequest,
    "request_id",
    "Multi-sig requests as the governance service sees them (spec §4.2): PENDING with the signatures counted, "
    "APPROVED with the end of its timelock, EXECUTED, REJECTED or EXPIRED with a reason (feeds the "
    "multi-sig-pending alert).",
    upstream=True,  # an outside HSM inventory or governance tool may publish too (1.x producers)
    producers=(Component.UPSTREAM, Component.SECURITY),
    # payouts: its PAYOUT_APPROVAL requests; warehouse: its LEDGER_CORRECTION requests
    consumers=(Component.UPSTREAM, Component.MONITORING, Component.PAYOUTS, Component.WAREHOUSE),
)
GOVERNANCE_REQUESTS = Topic(
    "governance.requests",
    m.GovernanceRequest,
    "request_id",
    "Requests for the signers: movements outside the automatic flows, parameter and signer changes, key "
    "ceremonies, emergency pause and unpause (docs/governance.md).",
    upstream=True,
    # the payouts service asks for PAYOUT_APPROVAL, reconciliation for LEDGER_CORRECTION
    producers=(Component.UPSTREAM, Component.PAYOUTS, Component.WAREHOUSE),
    consumers=(Component.SECURITY,),
    retention_ms=KEEP_FOREVER,
)
GOVERNANCE_APPROVALS = Topic(
    "governance.approvals",
    m.GovernanceApproval,
    "request_id",
    "Signers' signatures over a request's canonical hash (the signer CLI sends them).",
    upstream=True,
    producers=(Component.UPSTREAM,),
    consumers=(Component.SECURITY,),
    retention_ms=KEEP_FOREVER,
    dedup_key=("request_id", "signer_id"),
)
GOVERNANCE_PAUSE = compacted(
    "governance.pause",
    m.PauseState,
    "scope",
    "Whether money out is paused (an executed emergency PAUSE, until an executed UNPAUSE): the bridge refuses "
    "payments and payouts before calling a provider and voids their holds; auto-payouts wait.",
    producers=(Component.SECURITY,),
    consumers=(Component.BRIDGE, Component.PAYOUTS),
)
GOVERNANCE_PARAMETERS = compacted(
    "governance.parameters",
    m.ParameterSetting,
    "name",
    "Platform parameters (cashback rates, slippage limit, payout auto-approval limit) as set by executed "
    "PARAMETER_CHANGE requests; the bridge and the payouts service apply the latest value to every later "
    "decision (docs/governance.md lists the names and ranges).",
    producers=(Component.SECURITY,),
    consumers=(Component.BRIDGE, Component.PAYOUTS),
)
AUDIT_LOG = Topic(
    "audit.log",
    m.AuditLogEntry,
    "log_id",
    "The append-only, tamper-evident audit log: every audit.records record as a leaf of a Merkle tree (RFC "
    "6962), in leaf order (one partition), each with the signed checkpoint that covers it (docs/audit-log.md).",
    partitions=1,
    fixed_partitions=True,
    retention_ms=KEEP_FOREVER,
    producers=(Component.SECURITY,),
    consumers=(Component.UPSTREAM,),
    dedup_key=("log_id", "leaf_index"),
)
AUDIT_CHECKPOINTS = Topic(
    "audit.checkpoints",
    m.AuditCheckpoint,
    "log_id",
    "Signed tree heads of the audit log, signed in the HSM: an auditor with the public key checks any record's "
    "inclusion and that a newer checkpoint extends an older one (nothing removed or rewritten).",
    partitions=1,
    fixed_partitions=True,
    retention_ms=KEEP_FOREVER,
    producers=(Component.SECURITY,),
    consumers=(Component.UPSTREAM,),
    dedup_key=("log_id", "tree_size"),
)
MONITORING_ALERTS = Topic(
    "monitoring.alerts",
    m.Alert,
    "fingerprint",
    "Alerts fired and resolved, as sent to Alertmanager.",
    producers=(Component.MONITORING,),
    consumers=(Component.DASHBOARD,),
    dedup_key=("fingerprint", "state", "starts_at"),
)
AUDIT_RECORDS = Topic(
    "audit.records",
    m.AuditRecord,
    "transaction_id",
    "Audit trail, spec §7.2 shape. The ledger writes one record per trade settled or rejected and per fee, "
    "dividend pool accrual, carbon mint and dividend declared; the bridge one per card payment's outcome "
    "(BRIDGE_SETTLEMENT_COMPLETED or BRIDGE_SETTLEMENT_FAILED, transactionId the settlement's bridge_tx_id, auditId "
    "AUDIT:<bridge_tx_id>:completed or :failed; PAYOUT_COMPLETED / PAYOUT_FAILED for a holder's payout), sent with its "
    "first answer (none with a repeat), and one per "
    "capture refused after payout (BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT); the governance service one per request, "
    "signature (accepted or refused), execution and pause (GOVERNANCE_*, docs/governance.md); the key manager one "
    "per key operation (KEY_*, docs/audit-log.md); reconciliation one per exception review action "
    "(RECON_EXCEPTION_*, docs/reconciliation.md); the payouts service one per payout held for approval. A record "
    "may be written again after a "
    "crash under the same auditId: deduplicate by it. Unsigned here (signature null): the security layer appends "
    "each to the signed audit.log, where it carries its checkpoint.",
    retention_ms=365 * DAY_MS,
    producers=(Component.LEDGER, Component.BRIDGE, Component.SECURITY, Component.PAYOUTS, Component.WAREHOUSE),
    consumers=(Component.SECURITY, Component.WAREHOUSE),
    dedup_key=("auditId",),
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
    producers=(
        Component.MATCHING,
        Component.LEDGER,
        Component.BRIDGE,
        Component.PAYOUTS,
        Component.NOTIFIER,
        Component.SECURITY,
        Component.MONITORING,
    ),
    consumers=(Component.UPSTREAM, Component.MONITORING, Component.OPERATORS),
    dedup_key=("source_topic", "source_partition", "source_offset"),
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
    max_message_bytes=960 * 1024,  # under librdkafka's default message.max.bytes (1,000,000), which producers keep,
    producers=(
        Component.MATCHING,
        Component.LEDGER,
        Component.BRIDGE,
        Component.PAYOUTS,
        Component.NOTIFIER,
        Component.SECURITY,
        Component.MONITORING,
    ),
    consumers=(Component.OPERATORS,),
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
        PAYOUT_WAITING,
        KYC_STATUS,
        NOTIFICATIONS_HOLDERS,
        NOTIFICATIONS_DELIVERIES,
        GOVERNANCE_KEYS,
        GOVERNANCE_MULTISIG,
        GOVERNANCE_REQUESTS,
        GOVERNANCE_APPROVALS,
        GOVERNANCE_PAUSE,
        GOVERNANCE_PARAMETERS,
        MONITORING_ALERTS,
        AUDIT_RECORDS,
        AUDIT_LOG,
        AUDIT_CHECKPOINTS,
        PLATFORM_DEADLETTERS,
        PLATFORM_DEADLETTER_PAYLOADS,
    )
}


def _check_registry() -> None:
    """A co-partitioned pair is declared with one count, and neither side is fixed alone; a topic is upstream
    exactly when systems outside the platform produce it."""
    for t in TOPICS.values():
        if t.copartitioned_with is not None:
            lead = TOPICS[t.copartitioned_with]
            assert t.partitions == lead.partitions and t.fixed_partitions == lead.fixed_partitions, t.name
        assert t.upstream == (Component.UPSTREAM in t.producers), t.name


_check_registry()


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
