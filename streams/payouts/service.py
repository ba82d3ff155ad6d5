"""The auto-payout service's record processor: decode each input record, call the core, return the outputs.

No Kafka client here (``streams.payouts.loop`` consumes and produces); unit tests drive it with records.

Inputs and what each does (docs/payouts.md, "The service"):

* ``payouts.rules``: validated at ingress (a contract error is dead-lettered), then ``AutoPayouts.put_rule`` with
  the record's offset as the version and its time as the moment the rule became active; a rule the core refuses
  is dead-lettered with its rule code and the original bytes; a tombstone deletes the rule. An accepted rule is
  evaluated at once (a balance may already be above its threshold).
* ``kyc.status``: the holder's status (``set_kyc``, the offset as version) and contacts (kept for notifications
  only; never logged). With a sealer (``streams.security.envelope``) the contacts are kept sealed one by one with
  their masked forms, and each rule's payout account is kept sealed while the rule book holds it masked: requests
  and notifications then carry the sealed value and a masked copy (docs/security.md, "Encryption at rest").
* ``ledger.transfers``: the balance mirror (``domain.balances``); every movement of an account with rules
  re-evaluates it.
* ``dividends.declared``: ``on_dividend``, once the mirror has the dividend's credit.
* ``bridge.settlements.completed`` / ``.failed`` carrying a ``payout_id``: one ``payouts.results`` record per payout
  and the holder's notifications, then ``on_result`` once the mirror has the capture or release of the payout's
  hold: deciding again on a balance from before the payout could pay the same K-AUS twice. The wait is bounded
  (``mirror_wait_ms``); past it the result is applied anyway and logged.
* the timer (:meth:`PayoutService.tick`): schedules, ends of back-off, payouts waiting for a fresh FX rate, and
  results or dividends whose wait ran out.

A PAY decision becomes a ``payouts.requests`` record and a ``bridge.requests`` record (request id = payout id, the
exact K-AUS in ``payout``, the live rate and the fiat estimate at it); without a fresh rate it waits for the next
tick. A WAIT decision becomes one ``payouts.waiting`` record per payout id and reason, and one notification.

**Emergency pause** (``paused``: ``governance.pause`` through ``streams.bridge.pause_listener``): followed before each
record and each tick. While paused the core WAITs due payouts with PAUSED instead of paying them, and a payout decided
before the pause whose bridge request is not out yet waits too (PAUSED, once); the unpause evaluates every account with
rules and requests those, each under its payout id. A payout the bridge refused because of the pause (it was requested
just before) is reported FAILED with PAUSED and delays nothing: the rule pays at its next evaluation.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any, NamedTuple, cast

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    DIVIDENDS_DECLARED,
    GOVERNANCE_MULTISIG,
    GOVERNANCE_REQUESTS,
    KYC_STATUS,
    LEDGER_TRANSFERS,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
    Topic,
)
from domain import parameters
from domain.balances import BalanceMirror, Movement, MovementKind
from domain.bridge import bridge_tx_id_for, kaus_to_minor_floor
from domain.cashback import PayerTier
from domain.fx import FxBook, FxPolicy, StaleRate
from domain.money import Currency, kaus_to_decimal
from domain.payouts import (
    Action,
    AutoPayouts,
    Decision,
    KycStatus,
    PayoutConfig,
    PayoutFailCode,
    Rule,
    RuleDividendSource,
    RuleStatus,
    ScheduleType,
    Trigger,
    WaitCode,
    approval_request_id,
    payout_of_approval,
)
from domain.rails import Provider, payout_region
from domain.timeconv import from_ms
from streams.kafka import ingress
from streams.payouts import messages
from streams.payouts.settings import PayoutSettings
from streams.security.envelope import Sealer, mask, mask_account, open_json, seal_text

log = logging.getLogger("nexus.payouts")

Output = tuple[Topic, Any]
INPUTS: tuple[Topic, ...] = (
    PAYOUT_RULES,
    KYC_STATUS,
    LEDGER_TRANSFERS,
    DIVIDENDS_DECLARED,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    GOVERNANCE_MULTISIG,
    PAYOUT_REQUESTS,  # its own decisions read back: one made before a crash keeps its amount
)
APPROVAL_KEY_PREFIX = b"PAYOUT:"  # governance.multisig keys of this service's PAYOUT_APPROVAL requests
REQUESTED_BY = "nexus-payouts"
USER_AGENT = "NEXUS-X/payouts"
FINAL_STATES = {m.MultisigState.EXECUTED, m.MultisigState.REJECTED, m.MultisigState.EXPIRED}
SNAPSHOT_FORMAT = "nexus-x.payouts-service-state/1"
LOWEST_TIER = next(iter(PayerTier))  # a payout earns no cashback; the field is required


class Record(NamedTuple):
    """One input record and where it came from; ``wall_ms`` is when it is handled."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    record_ms: int
    wall_ms: int


@dataclass(frozen=True, slots=True)
class Contacts:
    """A holder's notification addresses (personal data: used for notifications, never logged).

    Sealing on: each address is its own Sealed envelope (what a notification's ``destination_sealed`` carries) and
    ``masked`` holds its masked form by channel (its ``destination``); nothing plain in memory or in the state."""

    email: str | None = None
    phone: str | None = None
    push_token: str | None = None
    masked: dict[str, str] | None = None

    def channels(self) -> list[tuple[m.NotificationChannel, str]]:
        pairs = (
            (m.NotificationChannel.EMAIL, self.email),
            (m.NotificationChannel.SMS, self.phone),
            (m.NotificationChannel.PUSH, self.push_token),
        )
        return [(channel, to) for channel, to in pairs if to]


@dataclass(slots=True)
class Sent:
    """A PAY decision the service acts on, until its result is reported."""

    payout_id: str
    rule_id: str
    account_id: str
    trigger: str
    trigger_id: str
    provider: str
    currency: str
    amount_units: int
    payout_account: str  # masked when sealing is on (the rule book holds it masked)
    requested: bool = False  # its bridge request was emitted (False: waiting for a fresh FX rate)
    stale_logged: bool = False
    payout_account_sealed: str | None = None
    approval_request_id: str | None = None  # the signers approved it (above the auto-approval limit)

    @classmethod
    def of(cls, d: Decision, sealed: str | None = None) -> Sent:
        return cls(
            d.payout_id,
            d.rule_id,
            d.account_id,
            d.trigger.value,
            d.trigger_id,
            d.provider.value,
            d.currency.value,
            d.amount_units,
            d.payout_account,
            payout_account_sealed=sealed,
            approval_request_id=approval_request_id(d.payout_id) if d.approved else None,
        )


@dataclass(slots=True)
class Pending:
    """A result or dividend waiting for the balance mirror to have the movement it implies."""

    kind: str  # "result" or "dividend"
    id: str  # the payout id or the dividend id
    account_id: str
    deadline_ms: int
    paid: bool = False
    source: str = ""
    amount_units: int = 0
    failure_code: str = ""  # a failed payout's bridge reason code: how long it holds the account (the core decides)


def _pending_from_dict(row: dict[str, Any]) -> Pending:
    """A state written before failure codes were kept says only whether a failure backed off (False: paused)."""
    row = dict(row)
    if "back_off" in row:
        row.setdefault("failure_code", "" if row.pop("back_off") else "PAUSED")
    return Pending(**row)


def to_rule(rule: m.AutoPayoutRule) -> Rule:
    """The wire rule in the core's types (same field names)."""
    return Rule(
        rule_id=rule.rule_id,
        account_id=rule.account_id,
        trigger_type=Trigger(rule.trigger_type.value),
        payout_provider=rule.payout_provider,
        payout_currency=rule.payout_currency,
        payout_account=rule.payout_account,
        max_payout_per_tx_kaus_units=rule.max_payout_per_tx_kaus_units,
        keep_minimum_kaus_units=rule.keep_minimum_kaus_units,
        threshold_kaus_units=rule.threshold_kaus_units,
        schedule_type=None if rule.schedule_type is None else ScheduleType(rule.schedule_type),
        schedule_day=rule.schedule_day,
        schedule_time_utc=rule.schedule_time_utc,
        dividend_source=None if rule.dividend_source is None else RuleDividendSource(rule.dividend_source),
        dividend_min_kaus_units=rule.dividend_min_kaus_units,
        is_active=rule.is_active,
    )


def hold_id_of(payout_id: str) -> str:
    """The ledger hold the bridge places for this payout (domain.bridge.begin: ``{bridge_tx_id}:hold``)."""
    return f"{bridge_tx_id_for(payout_id)}:hold"


def approval_nonce(payout_id: str) -> int:
    """The PAYOUT_APPROVAL request's nonce: 63 bits of the payout id's SHA-256 (a replay asks with the same one)."""
    digest = hashlib.sha256(approval_request_id(payout_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def approval_audit_id(payout_id: str) -> str:
    """``AUDIT-PAYOUT:<payout_id>:approval-requested``, a SHA-256 hex of the payout id past 128 characters."""
    text = f"AUDIT-PAYOUT:{payout_id}:approval-requested"
    return text if len(text) <= 128 else f"AUDIT-PAYOUT:{hashlib.sha256(payout_id.encode()).hexdigest()}"


def _remember(memory: OrderedDict[str, None], key: str, limit: int) -> None:
    memory[key] = None
    while len(memory) > limit:
        memory.popitem(last=False)


class PayoutService:
    """Folds the inputs into the core and the mirror; returns each record's outputs (see the module doc)."""

    def __init__(
        self,
        settings: PayoutSettings,
        rates: Callable[[], FxBook],
        snapshot: dict[str, Any] | None = None,
        max_bytes: int = 64 * 1024,
        paused: Callable[[], bool] | None = None,
        sealer: Sealer | None = None,
        parameters: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.settings = settings
        # Set: personal data is kept sealed (contacts, payout accounts) and sent sealed with a masked copy.
        self.sealer = sealer
        self._rates = rates
        self._paused = paused or (lambda: False)  # governance.pause (streams.bridge.pause_listener)
        self._parameters = parameters or dict  # governance.parameters (streams.bridge.parameter_listener)
        self._parameters_seen: Mapping[str, int] | None = None
        self._policy = FxPolicy(max_age_ms=settings.fx_max_age_ms)
        self._max_bytes = max_bytes
        # While True (the loop is catching the mirror up at a start) nothing is decided; caught_up() decides.
        self.replaying = False
        self._dirty: set[str] = set()
        self.book = AutoPayouts(
            PayoutConfig(
                retry_after_failure_ms=settings.retry_after_failure_ms,
                max_rules_per_account=settings.max_rules_per_account,
                retry_after_refusal_ms=settings.retry_after_refusal_ms,
                approval_outcomes_max=settings.remembered_ids_max,
                retry_after_transient_ms=settings.retry_after_transient_ms,
            )
        )
        self.mirror = BalanceMirror(settings.mirror_window)
        self.contacts: dict[str, Contacts] = {}
        self.sealed_accounts: dict[str, str] = {}  # rule id -> its payout account sealed (the book holds it masked)
        self.sent: dict[str, Sent] = {}
        self.pending: list[Pending] = []
        self.reported: OrderedDict[str, None] = OrderedDict()
        self.waits: OrderedDict[str, None] = OrderedDict()
        # payouts.requests read back (read from the last save on, so: decisions the state may not know yet)
        self.recorded: OrderedDict[str, m.PayoutRequest] = OrderedDict()
        self.offsets: dict[str, int] = {}  # "topic:partition" -> the next offset to read
        self.changes = 0  # counts state changes: an unchanged state is not saved again
        if snapshot is not None:
            self._restore(snapshot)
        self._handlers: dict[str, Callable[[Any, Record], list[Output]]] = {
            PAYOUT_RULES.name: self._on_rule,
            KYC_STATUS.name: self._on_kyc,
            LEDGER_TRANSFERS.name: self._on_transfer,
            DIVIDENDS_DECLARED.name: self._on_dividend,
            BRIDGE_SETTLEMENTS_COMPLETED.name: self._on_completed,
            BRIDGE_SETTLEMENTS_FAILED.name: self._on_failed,
            GOVERNANCE_MULTISIG.name: self._on_multisig,
            PAYOUT_REQUESTS.name: self._on_own_request,
        }
        self._topics = {t.name: t for t in INPUTS}

    def rules_now(self, wall_ms: int) -> int:
        return wall_ms + self.settings.clock_offset_ms

    # ------------------------------------------------------------------ records

    def handle(self, rec: Record) -> list[Output]:
        """The outputs of one input record (its position is noted: the state is then past it)."""
        self.offsets[f"{rec.topic}:{rec.partition}"] = rec.offset + 1
        self.changes += 1
        self._follow_parameters()
        out = self._follow_pause(rec.wall_ms)  # before anything is decided on this record
        return out + self._handle(rec)

    def _handle(self, rec: Record) -> list[Output]:
        topic = self._topics[rec.topic]
        if topic is PAYOUT_RULES and rec.value is None and rec.key:
            return self._tombstone(rec)
        if topic is GOVERNANCE_MULTISIG and not (rec.key or b"").startswith(APPROVAL_KEY_PREFIX):
            return []  # another request's state (the topic is everybody's): not decoded
        try:
            decoded = ingress.validate(topic, rec.key, rec.value, self._max_bytes)
            if isinstance(decoded, ingress.Rejected):
                return self._dead_letter(rec, decoded)
            return self._handlers[rec.topic](decoded, rec)
        except Exception as exc:  # a bug or an input nobody foresaw: this record only, and loudly
            log.exception("%s[%d]@%d raised while handled; dead-lettered", rec.topic, rec.partition, rec.offset)
            return self._dead_letter(rec, ingress.processing_failed(rec.topic, exc))

    def _dead_letter(self, rec: Record, rejected: ingress.Rejected) -> list[Output]:
        log.warning("dead-lettered %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, rejected.reason)
        origin = ingress.Origin(rec.topic, rec.partition, rec.offset)
        return ingress.dead_letter_outputs(origin, rec.key, rec.value, rejected)

    def _tombstone(self, rec: Record) -> list[Output]:
        assert rec.key is not None
        rule_id = rec.key.decode(errors="replace")
        outcome = self.book.delete_rule(rule_id, rec.offset)
        if outcome.status is RuleStatus.DELETED:
            self.sealed_accounts.pop(rule_id, None)
        log.info("rule %s: %s (%s)", rule_id, outcome.status, outcome.reason)
        return []

    def _on_rule(self, rule: m.AutoPayoutRule, rec: Record) -> list[Output]:
        # The rule is active from when it was written (its record time), not from when it is read: a replay
        # after a restart gives it the same start. Never later than the rules' clock.
        since = min(rec.record_ms, self.rules_now(rec.wall_ms))
        core, sealed = self._sealed_rule(to_rule(rule))
        outcome = self.book.put_rule(core, rec.offset, since)
        if outcome.status is RuleStatus.ACCEPTED and sealed is not None:
            self.sealed_accounts[rule.rule_id] = sealed
        elif outcome.status is not RuleStatus.STALE:
            self.sealed_accounts.pop(rule.rule_id, None)
        if outcome.status is RuleStatus.REJECTED:
            assert outcome.code is not None
            reason = f"{PAYOUT_RULES.name}: rule {rule.rule_id}: {outcome.reason}"
            return self._dead_letter(rec, ingress.Rejected(str(outcome.code), reason, []))
        log.info("rule %s of %s: %s (%s)", rule.rule_id, rule.account_id, outcome.status, outcome.reason)
        if outcome.status is RuleStatus.ACCEPTED:
            return self._evaluate(rule.account_id, rec.wall_ms)
        return []

    def _sealed_rule(self, rule: Rule) -> tuple[Rule, str | None]:
        """Sealing on: the rule with its payout account masked (what the book, decisions and the state keep) and the
        account sealed. The rule arrives plain on payouts.rules (an upstream topic): it stays there as written."""
        if self.sealer is None or not rule.payout_account.strip():
            return rule, None
        sealed = seal_text(self.sealer, rule.payout_account)
        return replace(rule, payout_account=mask_account(rule.payout_account)), sealed

    def _contacts_of(self, status: m.KycStatusChanged) -> Contacts:
        """The holder's contacts from a KYC record (sealed or plain), kept sealed when sealing is on. A sealed record
        that cannot be opened here raises SealError: the record is dead-lettered with its bytes."""
        if status.contacts_sealed is not None:
            values = open_json(self.sealer, status.contacts_sealed)
            plain = Contacts(values.get("email"), values.get("phone"), values.get("push_token"))
        else:
            plain = Contacts(status.email, status.phone, status.push_token)
        return self._sealed_contacts(plain)

    def _sealed_contacts(self, plain: Contacts) -> Contacts:
        if self.sealer is None or plain.masked is not None:
            return plain
        sealer = self.sealer
        masked = {channel.value: mask(to) for channel, to in plain.channels()}
        email, phone, push = (
            seal_text(sealer, to) if to else None for to in (plain.email, plain.phone, plain.push_token)
        )
        return Contacts(email, phone, push, masked=masked)

    def _on_kyc(self, status: m.KycStatusChanged, rec: Record) -> list[Output]:
        account = status.account_id
        contacts = self._contacts_of(status)
        if contacts.channels():
            self.contacts[account] = contacts
        else:
            self.contacts.pop(account, None)
        available = self.mirror.available(account)
        decisions = self.book.set_kyc(
            account, KycStatus(status.status), rec.offset, available, self.rules_now(rec.wall_ms)
        )
        return self._act(decisions, rec.wall_ms)

    def _on_transfer(self, transfer: m.LedgerTransfer, rec: Record) -> list[Output]:
        movement = Movement(
            transfer.transfer_id,
            MovementKind(transfer.kind.value),
            transfer.debit_account_id,
            transfer.credit_account_id,
            transfer.asset.value,
            transfer.amount_units,
            transfer.pending_id,
            None if transfer.reference is None else transfer.reference.id,
        )
        out: list[Output] = []
        for account in dict.fromkeys(self.mirror.apply(rec.partition, movement)):
            if self.book.rules(account):
                out += self._evaluate(account, rec.wall_ms)
        return out + self._release(rec.wall_ms)

    def _on_dividend(self, dividend: m.DividendDeclared, rec: Record) -> list[Output]:
        # The dividend is paid out of the balance it credited: wait for that credit (its transfer id is the
        # dividend id: streams/p2p/ledger.py) before the rule reads the balance.
        wait = Pending(
            "dividend",
            dividend.dividend_id,
            dividend.account_id,
            rec.wall_ms + self.settings.mirror_wait_ms,
            source=dividend.source.value,
            amount_units=dividend.amount_kaus_units,
        )
        self.pending.append(wait)
        return self._release(rec.wall_ms)

    def _on_completed(self, result: m.BridgeSettlementCompleted, rec: Record) -> list[Output]:
        return self._on_result(result, True, rec.wall_ms)

    def _on_failed(self, result: m.BridgeSettlementFailed, rec: Record) -> list[Output]:
        return self._on_result(result, False, rec.wall_ms)

    def _on_result(
        self, result: m.BridgeSettlementCompleted | m.BridgeSettlementFailed, paid: bool, wall_ms: int
    ) -> list[Output]:
        """One PayoutResult per payout id; then, once the mirror has the hold's capture or release, on_result.

        A repeat is the bridge's original answer re-published: it counts only for a payout still in flight here
        (decided again after a restart whose first answer was read before the decision), never reported twice. A
        first answer for a payout the service has no record of (its state was lost) is reported if the payout id
        names one of the holder's rules, else left: were it decided again, the bridge's repeat would report it.
        """
        payout_id = result.payout_id
        if payout_id is None:
            return []  # a card payment
        flight = self.book.in_flight(result.payer_account_id)
        in_flight = flight is not None and flight.payout_id == payout_id
        if not in_flight and (result.repeat or payout_id in self.reported):
            return []
        out: list[Output] = []
        if payout_id not in self.reported:
            out += self._report(result, flight if in_flight else None, wall_ms)
            if out:  # else a payout of no rule known here: reported if it is decided again (then in flight)
                _remember(self.reported, payout_id, self.settings.remembered_ids_max)
        self.sent.pop(payout_id, None)
        if in_flight and not any(p.kind == "result" and p.id == payout_id for p in self.pending):
            deadline = wall_ms + self.settings.mirror_wait_ms
            code = result.reason_code if isinstance(result, m.BridgeSettlementFailed) else ""
            self.pending.append(
                Pending("result", payout_id, result.payer_account_id, deadline, paid=paid, failure_code=code)
            )
        return out + self._release(wall_ms)

    # ------------------------------------------------------------------ the approval gate

    def _on_multisig(self, state: m.MultisigRequest, rec: Record) -> list[Output]:
        """A PAYOUT_APPROVAL request of this service reached a final state: the core pays or fails the payout. A record
        whose content is not the request this service made (another operation or amount) is logged and ignored."""
        payout_id = payout_of_approval(state.request_id)
        if payout_id is None or state.state not in FINAL_STATES:
            return []
        gated = self.book.gated(payout_id)
        mismatch = state.operation is not m.GovernanceOperation.PAYOUT_APPROVAL or (
            gated is not None and state.amount_kaus_units != gated.amount_units
        )
        if mismatch:
            log.error("%s: %s %s of %d K-AUS units is not the approval this service asked for; ignored",
                      state.request_id, state.operation, state.state, state.amount_kaus_units)  # fmt: skip
            return []
        executed = state.state is m.MultisigState.EXECUTED
        log.info("payout %s: approval %s (%s)", payout_id, state.state, state.reason or "")
        now = self.rules_now(rec.wall_ms)
        return self._act(self.book.on_approval(payout_id, executed, self.mirror.available, now), rec.wall_ms)

    def _follow_parameters(self) -> None:
        """The governed auto-approval limit in force (``governance.parameters``), for every decision from now on."""
        values = self._parameters()
        if values is self._parameters_seen:
            return
        self._parameters_seen = values
        limit = parameters.value_of(values, parameters.AUTO_APPROVAL_LIMIT)
        if limit != self.book.approval_limit:
            log.warning("auto-approval limit: %d K-AUS units (payouts above it wait for the signers)", limit)
            self.book.set_approval_limit(limit)

    def _ask_approval(self, d: Decision, wall_ms: int) -> list[Output]:
        """A payout above the limit: its PAYOUT_APPROVAL request, its wait (APPROVAL_PENDING) and its audit record.
        Ids come from the payout id: a replay writes the same request id (the governance service keeps the first
        request of an id), the same wait and the same audit id."""
        rid = approval_request_id(d.payout_id)
        created = from_ms(d.at_ms)
        limit = self.book.approval_limit
        request = m.GovernanceRequest(
            request_id=rid,
            operation=m.GovernanceOperation.PAYOUT_APPROVAL,
            amount_kaus_units=d.amount_units,
            params={
                "payout_id": d.payout_id,
                "account_id": d.account_id,
                "reason": f"auto-payout of rule {d.rule_id} ({d.trigger}) above the auto-approval limit of "
                f"{kaus_to_decimal(limit)} K-AUS"[:200],
            },
            nonce=approval_nonce(d.payout_id),
            expires_at=created + timedelta(days=self.settings.approval_window_days),
            requested_by=REQUESTED_BY,
            created_at=created,
        )
        log.warning("payout %s: %d K-AUS units above the limit %d: approval %s requested", d.payout_id,
                    d.amount_units, limit, rid)  # fmt: skip
        audit = m.AuditRecord(
            audit_id=approval_audit_id(d.payout_id),
            timestamp=created,
            transaction_id=d.payout_id,
            action="PAYOUT_APPROVAL_REQUESTED",
            actor=m.AuditActor(user_id=REQUESTED_BY, user_agent=USER_AGENT),
            details=m.AuditDetails(kaus_amount=str(kaus_to_decimal(d.amount_units))),
        )
        return [(GOVERNANCE_REQUESTS, request), (AUDIT_RECORDS, audit), *self._wait(d, wall_ms)]

    def _ended_unpaid(self, d: Decision, wall_ms: int) -> list[Output]:
        """A gated payout that ends without a payment: FAILED with its code and request id, the holder told; no hold
        was taken, so nothing waits for the mirror."""
        if d.payout_id in self.reported:
            return []
        _remember(self.reported, d.payout_id, self.settings.remembered_ids_max)
        log.warning("payout %s FAILED: %s (%s)", d.payout_id, d.code, d.reason)
        result = m.PayoutResult(
            payout_id=d.payout_id,
            status=m.PayoutStatus.FAILED,
            provider=d.provider,
            currency=d.currency,
            amount_minor=0,
            fee_minor=0,
            reason=d.reason,
            completed_at=from_ms(wall_ms),
            account_id=d.account_id,
            rule_id=d.rule_id,
            reason_code=str(d.code),
            approval_request_id=approval_request_id(d.payout_id),
        )
        why = "the signers did not approve it" if d.code is PayoutFailCode.APPROVAL_REFUSED else d.reason
        subject, text = messages.failed(d.amount_units, d.provider.value, d.payout_account, why)
        return [(PAYOUT_RESULTS, result), *self._notify(d.account_id, d.payout_id, "PAYOUT_FAILED", subject, text,
                                                        wall_ms)]  # fmt: skip

    # ------------------------------------------------------------------ the emergency pause

    def _follow_pause(self, wall_ms: int) -> list[Output]:
        """Bring the rule book to the pause state (``governance.pause``); an unpause evaluates every account."""
        paused = self._paused()
        if paused == self.book.paused:
            return []
        accounts = self.book.set_paused(paused)
        self.changes += 1
        if paused:
            log.warning("money out paused: due payouts wait (PAUSED) until the unpause")
            return []
        log.warning("money out unpaused: %d accounts with rules evaluated again", len(accounts))
        out: list[Output] = []
        for account in accounts:
            out += self._evaluate(account, wall_ms)
        return out

    def _paused_wait(self, sent: Sent, wall_ms: int) -> list[Output]:
        """A payout decided before the pause whose bridge request is not out yet: it waits (PAUSED) and is requested
        after the unpause, under its payout id."""
        decision = Decision(
            Action.WAIT,
            sent.payout_id,
            sent.rule_id,
            sent.account_id,
            Trigger(sent.trigger),
            sent.trigger_id,
            sent.amount_units,
            Provider(sent.provider),
            Currency(sent.currency),
            sent.payout_account,
            WaitCode.PAUSED,
            "money out is paused by governance: requested once unpaused",
            wall_ms,
        )
        return self._wait(decision, wall_ms)

    # ------------------------------------------------------------------ the mirror-lag guard

    def _ready(self, p: Pending) -> bool:
        mirror = self.mirror
        if p.kind == "dividend":
            return mirror.seen(p.id)
        hold = hold_id_of(p.id)
        if p.paid:  # the capture (or, for a capture refused after payout, the release) is in the mirror
            return mirror.resolution(hold) is not None or mirror.resolution(p.id) is not None
        return not mirror.hold_open(hold)  # never held, or released: either way nothing of it is held

    def _release(self, wall_ms: int) -> list[Output]:
        """Apply the results and dividends the mirror has caught up with, or whose wait ran out."""
        if self.replaying or not self.pending:
            return []
        due = [p for p in self.pending if self._ready(p) or wall_ms >= p.deadline_ms]
        if not due:
            return []
        self.pending = [p for p in self.pending if not any(p is d for d in due)]
        out: list[Output] = []
        now = self.rules_now(wall_ms)
        for p in due:
            if not self._ready(p):
                log.warning(
                    "%s %s applied without its ledger movement in the balance mirror after %d ms (mirror lagging)",
                    p.kind,
                    p.id,
                    self.settings.mirror_wait_ms,
                )
            available = self.mirror.available(p.account_id)
            if p.kind == "dividend":
                decisions = self.book.on_dividend(p.id, p.account_id, p.source, p.amount_units, available, now)
            else:
                decisions = self.book.on_result(p.id, p.paid, available, now, p.failure_code)
            out += self._act(decisions, wall_ms)
        return out

    # ------------------------------------------------------------------ deciding and acting

    def _evaluate(self, account_id: str, wall_ms: int) -> list[Output]:
        if self.replaying:
            self._dirty.add(account_id)
            return []
        available = self.mirror.available(account_id)
        return self._act(self.book.evaluate(account_id, available, self.rules_now(wall_ms)), wall_ms)

    def tick(self, wall_ms: int) -> list[Output]:
        """The timer: payouts waiting for a rate, due schedules and back-offs, waits for the mirror that ran out."""
        if self.replaying:
            return []
        self._follow_parameters()
        out = self._follow_pause(wall_ms)
        for sent in list(self.sent.values()):
            if not sent.requested:
                out += self._request(sent, wall_ms)
        decisions = self.book.tick(self.rules_now(wall_ms), self.mirror.available)
        out += self._act(decisions, wall_ms)
        pending = len(self.pending)
        out += self._release(wall_ms)
        if out or decisions or pending != len(self.pending):
            self.changes += 1
        return out

    def caught_up(self, wall_ms: int) -> list[Output]:
        """The mirror has read the ledger up to where it was at the start: decide on what changed meanwhile."""
        self.replaying = False
        out = self._follow_pause(wall_ms)
        for account in sorted(self._dirty):
            out += self._evaluate(account, wall_ms)
        self._dirty.clear()
        return out + self.tick(wall_ms)

    def _on_own_request(self, request: m.PayoutRequest, rec: Record) -> list[Output]:
        self.recorded[request.payout_id] = request
        self.recorded.move_to_end(request.payout_id)
        while len(self.recorded) > self.settings.remembered_ids_max:
            self.recorded.popitem(last=False)
        return []

    def _as_recorded(self, d: Decision) -> Decision:
        """A payout decided before a crash (its request is on payouts.requests, the state saved before it) keeps
        the amount it was sent with: the bridge pays that one, and the record must say what was paid."""
        request = self.recorded.get(d.payout_id)
        if request is None or request.amount_kaus_units == d.amount_units:
            return d
        log.warning(
            "payout %s was decided before a restart for %d K-AUS units; keeping that amount (now: %d)",
            d.payout_id,
            request.amount_kaus_units,
            d.amount_units,
        )
        return d._replace(amount_units=request.amount_kaus_units)

    def _act(self, decisions: list[Decision], wall_ms: int) -> list[Output]:
        out: list[Output] = []
        for d in decisions:
            if d.action is Action.PAY:
                d = self._as_recorded(d)
                sent = self.sent[d.payout_id] = Sent.of(d, self.sealed_accounts.get(d.rule_id))
                log.info(
                    "payout %s: %s pays %d K-AUS units of %s through %s in %s",
                    d.payout_id,
                    d.trigger,
                    d.amount_units,
                    d.account_id,
                    d.provider,
                    d.currency,
                )
                out += self._request(sent, wall_ms)
            elif d.action is Action.WAIT:
                out += self._wait(d, wall_ms)
            elif d.action is Action.APPROVE:
                out += self._ask_approval(d, wall_ms)
            elif d.action is Action.FAIL:
                out += self._ended_unpaid(d, wall_ms)
            else:
                log.info("payout %s skipped: %s (%s)", d.payout_id, d.code, d.reason)
        return out

    def _request(self, sent: Sent, wall_ms: int) -> list[Output]:
        """The payout request and its bridge request, priced at the live rate; [] while no rate is fresh, and while
        money out is paused (the last check before the bridge hears of it)."""
        if self._paused():
            return self._paused_wait(sent, wall_ms)
        currency, provider = Currency(sent.currency), Provider(sent.provider)
        try:
            rate = self._rates().combined_rate(currency, wall_ms, policy=self._policy).rate
        except StaleRate as stale:
            if not sent.stale_logged:
                log.warning("payout %s waits for a fresh %s rate: %s", sent.payout_id, currency, stale.reason)
                sent.stale_logged = True
            return []
        region = payout_region(provider, currency)
        assert region is not None, (provider, currency)  # the rule was validated: some rail of it pays it
        sent.requested = True
        at = from_ms(wall_ms)
        request = m.PayoutRequest(
            payout_id=sent.payout_id,
            rule_id=sent.rule_id,
            account_id=sent.account_id,
            provider=provider,
            currency=currency,
            amount_kaus_units=sent.amount_units,
            payout_account=sent.payout_account,
            requested_at=at,
            trigger_type=m.PayoutTrigger(sent.trigger),
            trigger_id=sent.trigger_id,
            payout_account_sealed=sent.payout_account_sealed,
        )
        bridge = m.BridgeRequest(
            request_id=sent.payout_id,
            payer_account_id=sent.account_id,
            merchant_id=sent.account_id,
            amount_minor=max(
                1, kaus_to_minor_floor(sent.amount_units, rate, currency)
            ),  # an estimate: the bridge converts
            currency=currency,
            region=region,
            payer_tier=LOWEST_TIER,
            quoted_rate=rate,
            requested_at=at,
            payout=m.HolderPayout(
                rule_id=sent.rule_id,
                provider=cast(Any, provider.value),
                payout_account=sent.payout_account,
                amount_kaus_units=sent.amount_units,
                payout_account_sealed=sent.payout_account_sealed,
            ),
        )
        return [(PAYOUT_REQUESTS, request), (BRIDGE_REQUESTS, bridge)]

    def _wait(self, d: Decision, wall_ms: int) -> list[Output]:
        """One payouts.waiting record per payout id and reason; one notification per payout id."""
        key = f"{d.payout_id}|{d.code}"
        if key in self.waits:
            return []
        limit = self.settings.remembered_ids_max
        _remember(self.waits, key, limit)
        log.info("payout %s waits: %s", d.payout_id, d.code)
        waiting = m.PayoutWaiting(
            payout_id=d.payout_id,
            account_id=d.account_id,
            rule_id=d.rule_id,
            amount_kaus_units=d.amount_units,
            reason_code=str(d.code),
            reason=d.reason,
            waiting_since=from_ms(wall_ms),
        )
        out: list[Output] = [(PAYOUT_WAITING, waiting)]
        notified = f"{d.payout_id}|notified"
        if notified not in self.waits:
            _remember(self.waits, notified, limit)
            kyc = self.book.kyc(d.account_id)
            if d.code is WaitCode.PAUSED:
                subject, text = messages.paused(d.amount_units, d.provider.value, d.payout_account)
            elif d.code is WaitCode.APPROVAL_PENDING:
                subject, text = messages.approval_pending(d.amount_units, d.provider.value, d.payout_account)
            else:
                kyc_text = "not started" if kyc is None else kyc.lower()
                subject, text = messages.waiting(d.amount_units, d.provider.value, d.payout_account, kyc_text)
            out += self._notify(d.account_id, d.payout_id, "PAYOUT_WAITING", subject, text, wall_ms)
        return out

    # ------------------------------------------------------------------ results and notifications

    def _report(
        self,
        result: m.BridgeSettlementCompleted | m.BridgeSettlementFailed,
        decision: Decision | None,
        wall_ms: int,
    ) -> list[Output]:
        payout_id, account = result.payout_id, result.payer_account_id
        assert payout_id is not None
        sent = self.sent.get(payout_id) or (
            None if decision is None else Sent.of(decision, self.sealed_accounts.get(decision.rule_id))
        )
        if sent is None:
            sent = self._sent_from_rules(payout_id, account)
        if sent is None:
            log.warning("payout %s: a result for no rule known here; not reported", payout_id)
            return []
        provider = Provider(sent.provider)
        if isinstance(result, m.BridgeSettlementCompleted):
            record = self._paid(result, sent, provider)
            event = "PAYOUT_COMPLETED"
            subject, text = messages.completed(
                result.kaus_debited_units, result.amount_minor, result.currency, provider.value, sent.payout_account
            )
        else:
            record = self._failed(result, sent, provider)
            event = "PAYOUT_FAILED"
            subject, text = messages.failed(
                sent.amount_units or None, provider.value, sent.payout_account, result.reason
            )
        log.info("payout %s %s", payout_id, record.status)
        return [(PAYOUT_RESULTS, record), *self._notify(account, payout_id, event, subject, text, wall_ms)]

    @staticmethod
    def _paid(result: m.BridgeSettlementCompleted, sent: Sent, provider: Provider) -> m.PayoutResult:
        assert result.payout_id is not None
        return m.PayoutResult(
            payout_id=result.payout_id,
            status=m.PayoutStatus.PAID,
            provider=provider,
            provider_reference=result.provider_reference,
            currency=result.currency,
            amount_minor=result.amount_minor,
            fee_minor=result.provider_fee_minor,
            rate=result.rate,
            completed_at=result.completed_at,
            account_id=result.payer_account_id,
            rule_id=sent.rule_id,
            bridge_tx_id=result.bridge_tx_id,
            kaus_debited_units=result.kaus_debited_units,
            rail=result.rail,
            approval_request_id=sent.approval_request_id,
        )

    @staticmethod
    def _failed(result: m.BridgeSettlementFailed, sent: Sent, provider: Provider) -> m.PayoutResult:
        assert result.payout_id is not None
        return m.PayoutResult(
            payout_id=result.payout_id,
            status=m.PayoutStatus.FAILED,
            provider=provider,
            currency=result.currency,
            amount_minor=result.amount_minor,
            fee_minor=0,
            reason=result.reason,
            completed_at=result.failed_at,
            account_id=result.payer_account_id,
            rule_id=sent.rule_id,
            bridge_tx_id=result.bridge_tx_id,
            reason_code=result.reason_code,
            failed_phase=result.failed_phase,
            rail=result.rail,
            approval_request_id=sent.approval_request_id,
        )

    def _sent_from_rules(self, payout_id: str, account_id: str) -> Sent | None:
        """A payout this service has no record of (its state was lost), from the rule its id names."""
        for rule in sorted(self.book.rules(account_id), key=lambda r: -len(r.rule_id)):
            if payout_id.startswith(f"{rule.rule_id}:"):
                return Sent(
                    payout_id,
                    rule.rule_id,
                    account_id,
                    rule.trigger_type.value,
                    payout_id.removeprefix(f"{rule.rule_id}:"),
                    rule.payout_provider.value,
                    rule.payout_currency.value,
                    0,
                    rule.payout_account,
                    payout_account_sealed=self.sealed_accounts.get(rule.rule_id),
                )
        return None

    def _notify(
        self, account_id: str, payout_id: str, event: str, subject: str, text: str, wall_ms: int
    ) -> list[Output]:
        contacts = self.contacts.get(account_id)
        if contacts is None:
            return []
        return [
            (
                NOTIFICATIONS_HOLDERS,
                m.HolderNotification(
                    notification_id=f"{payout_id}:{event}:{channel.value}",
                    account_id=account_id,
                    payout_id=payout_id,
                    event=cast(Any, event),
                    channel=channel,
                    destination=destination if contacts.masked is None else contacts.masked[channel.value],
                    subject=subject,
                    text=text,
                    created_at=from_ms(wall_ms),
                    destination_sealed=None if contacts.masked is None else destination,
                ),
            )
            for channel, destination in contacts.channels()
        ]

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": SNAPSHOT_FORMAT,
            "book": self.book.to_dict(),
            "mirror": self.mirror.to_dict(),
            "contacts": {a: asdict(c) for a, c in sorted(self.contacts.items())},
            "sealed_accounts": dict(sorted(self.sealed_accounts.items())),
            "sent": [asdict(s) for s in self.sent.values()],
            "pending": [asdict(p) for p in self.pending],
            "reported": list(self.reported),
            "waits": list(self.waits),
            "offsets": dict(sorted(self.offsets.items())),
        }

    def _restore(self, data: dict[str, Any]) -> None:
        assert data["service"] == SNAPSHOT_FORMAT, data.get("service")
        self.book = AutoPayouts.from_dict(data["book"])
        self.mirror = BalanceMirror.from_dict(data["mirror"])
        # A state written before sealing was turned on: its contacts are sealed now (the rules' accounts in the book
        # stay as they were until each rule is written again: docs/security.md).
        self.contacts = {a: self._sealed_contacts(Contacts(**c)) for a, c in data["contacts"].items()}
        self.sealed_accounts = dict(data.get("sealed_accounts", {}))
        self.sent = {s["payout_id"]: Sent(**s) for s in data["sent"]}
        self.pending = [_pending_from_dict(p) for p in data["pending"]]
        self.reported = OrderedDict.fromkeys(data["reported"])
        self.waits = OrderedDict.fromkeys(data["waits"])
        self.offsets = {k: int(v) for k, v in data["offsets"].items()}


__all__ = ["INPUTS", "Contacts", "PayoutService", "Record", "to_rule"]
