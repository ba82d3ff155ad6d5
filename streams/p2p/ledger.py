"""Service layer for the K-AUS ledger: `ledger.commands` in, domain settlement, contracts out.

The ledger is a single writer over one ordered input (see docs/state-and-recovery.md).
`LedgerPartition.apply` is deterministic except for measured phase durations, which
are reported, never used for decisions or ids.
"""

from __future__ import annotations

import time
from dataclasses import InitVar, dataclass, field
from typing import Any

from contracts import models as m
from contracts.construct import Encoded, constructor, dump_json, utc_text
from contracts.topics import (
    AUDIT_RECORDS,
    CARBON_CREDITS_MINTED,
    DIVIDENDS_DECLARED,
    ENERGY_SETTLEMENTS,
    LEDGER_OUTCOMES,
    LEDGER_TRANSFERS,
)
from domain import ledger as lg
from domain import order_book as ob
from domain import trade_settlement as ts
from domain.dividends import DEFAULT_SOURCE_SHARES_BPS, EpochSchedule, EpochScheduler
from domain.ledger import MAX_CLOCK_SKEW_MS, Ledger, Leg, PendingState, SettlementKind, TransferResult, TransferStatus
from domain.ledger import Transfer as LedgerTransferCommand
from domain.money import kaus_to_decimal
from domain.staking import RELEASE_CODE, STAKE_CODE, StakingConfig, StakingOutcome, StakingVault
from domain.timeconv import from_ms, to_ms
from streams.p2p.matching import Output

DEPOSIT_CODE = "deposit"
HOLD_EXPIRED = "hold expired"
_TRANSFER_KIND = {
    "PLACE_HOLD": m.TransferKind.PENDING,
    "POST_HOLD": m.TransferKind.POST_PENDING,
    "VOID_HOLD": m.TransferKind.VOID_PENDING,
    "GRANT_REWARD": m.TransferKind.POSTED,
}
_NOT_PENDING_CODE = {
    PendingState.POSTED: str(lg.LedgerCode.PENDING_ALREADY_POSTED),
    PendingState.VOIDED: str(lg.LedgerCode.PENDING_ALREADY_VOIDED),
    PendingState.EXPIRED: str(lg.LedgerCode.PENDING_EXPIRED),
}
HoldCommand = m.PlaceHold | m.PostHold | m.VoidHold | m.GrantReward
_LedgerTransfer = constructor(m.LedgerTransfer)
_Reference = constructor(m.LedgerReference)
_LedgerOutcome = constructor(m.LedgerOutcome)
PHASE_NAMES = {"validate_and_build_legs": "validation", "ledger_batch": "transfer_and_mint", "records": "records"}


def to_domain_trade(trade: m.Trade, executed_at_ms: int | None = None) -> ob.Trade:
    return ob.Trade(
        trade.trade_id,
        trade.market_id,
        trade.sequence,
        to_ms(trade.executed_at) if executed_at_ms is None else executed_at_ms,
        trade.buy_order_id,
        trade.sell_order_id,
        trade.buyer_account_id,
        trade.seller_account_id,
        trade.price_units_per_kwh,
        trade.quantity_wh,
        trade.notional_kaus_units,
        trade.aggressor_side,  # the contract's Side is the domain's
    )


# The settlement's records are encoded straight from the domain's results (contracts.construct.Encoded): no
# model is built. Each dict lists its contract's fields in declaration order (AuditRecord's by their camelCase
# aliases), as pydantic writes them; tests/unit/test_output_bytes.py holds every record to the bytes of its
# validated model.
_decode_transfer = LEDGER_TRANSFERS.decode
_decode_audit = AUDIT_RECORDS.decode
_decode_settlement = ENERGY_SETTLEMENTS.decode
_decode_carbon = CARBON_CREDITS_MINTED.decode
_POSTED = TransferStatus.POSTED
_TRADE = SettlementKind.TRADE
# What a hold's resolution is, for its reference: a capture moves the K-AUS, a void or expiry releases it.
_RESOLUTION_LEG = {"POST_HOLD": Leg.CAPTURE, "VOID_HOLD": Leg.RELEASE}
Reference = dict[str, str]  # a LedgerReference as its JSON object: kind, id, leg


def reference_of(ref: m.LedgerReference | None) -> Reference | None:
    return None if ref is None else {"kind": ref.kind, "id": ref.id, "leg": ref.leg}


def transfer_record(result: TransferResult, reason: str, asset: lg.Asset, reference: Reference | None) -> Encoded:
    """The `ledger.transfers` record of a posted transfer of `asset` (its accounts'), part of `reference`."""
    transfer_id = result.transfer_id
    value = dump_json(
        {
            "transfer_id": transfer_id,
            "kind": "POSTED",
            "debit_account_id": result.debit_account_id,
            "credit_account_id": result.credit_account_id,
            "asset": asset,
            "amount_units": result.amount_units,
            "pending_id": None,
            "expires_at": None,
            "reason": reason,
            "reference": reference,
            "occurred_at": utc_text(result.at_ms),
        }
    )
    return Encoded(transfer_id.encode(), value, _decode_transfer)


def kaus_text(units: int) -> str:
    """`str(kaus_to_decimal(units))` (scale 6, e.g. "1.500000") without Decimal arithmetic."""
    if 0 <= units < 10**21:  # every audited amount
        return f"{units // 1_000_000}.{units % 1_000_000:06d}"
    if abs(units) >= 10**21:  # beyond any ledger amount: keep Decimal's own behaviour
        return str(kaus_to_decimal(units))
    whole, frac = divmod(-units, 1_000_000)
    return f"-{whole}.{frac:06d}"


def audit_record(fact: ts.AuditFact) -> Encoded:
    """The spec §7.2 `audit.records` record of an audit fact (camelCase on the wire)."""
    transaction_id, action = fact.transaction_id, str(fact.action)
    value = dump_json(
        {
            "auditId": f"AUDIT:{transaction_id}:{action}",
            "timestamp": utc_text(fact.at_ms),
            "transactionId": transaction_id,
            "action": action,
            "actor": {"userId": fact.actor_account_id, "ip": None, "userAgent": "NEXUS-X/2.0"},
            "details": {
                "kausAmount": kaus_text(fact.kaus_amount_units),
                "fiatAmount": None,
                "currency": None,
                "exchangeRate": None,
                "settlementRail": None,
                "duration": None,
            },
            "signature": None,
            "blockchainRef": None,
        }
    )
    return Encoded(transaction_id.encode(), value, _decode_audit)


def ledger_outcome(
    command: Any, code: object | None, reason: str, amount_units: int, at_ms: int, *, duplicate: bool
) -> m.LedgerOutcome:
    """The `ledger.outcomes` answer to a command: APPLIED (``code`` None; ``duplicate`` when applied earlier) or
    REJECTED with its code and reason."""
    applied = code is None
    return _LedgerOutcome(
        command_id=command.command_id,
        command_type=command.type,
        status=m.LedgerOutcomeStatus.APPLIED if applied else m.LedgerOutcomeStatus.REJECTED,
        duplicate=duplicate and applied,
        reason_code=None if applied else str(code),
        reason=None if applied else reason,
        amount_kaus_units=amount_units,
        occurred_at=from_ms(at_ms),
    )


def outcome_of(command: Any, result: TransferResult, *, duplicate: bool) -> m.LedgerOutcome:
    """The answer to a command the ledger applied as one transfer (its result)."""
    code = None if result.status is not TransferStatus.REJECTED else result.code
    return ledger_outcome(command, code, result.reason, result.amount_units, result.at_ms, duplicate=duplicate)


@dataclass
class LedgerPartition:
    """The whole ledger: balances, holds, settlement carries. One instance per worker.

    ``hold_references``: the transaction (kind, id) of each open hold that named one, by hold id, so that its
    capture, void or expiry record carries it too (the commands resolving a hold do not repeat it).
    """

    partition: int = 0
    settler: ts.TradeSettler = field(default_factory=lambda: ts.TradeSettler(Ledger()))
    next_offset: int = 0
    hold_references: dict[str, tuple[SettlementKind, str]] = field(default_factory=dict)
    staking: StakingConfig = field(default_factory=StakingConfig)
    schedule: EpochSchedule = field(default_factory=EpochSchedule)
    vault: StakingVault | None = None  # None: a new vault over this ledger
    epochs: EpochScheduler | None = None  # None: a new scheduler on `schedule`
    _record_ms: int | None = field(default=None, repr=False, compare=False)  # the command being applied
    _assets: dict[str, lg.Asset] = field(default_factory=dict, repr=False, compare=False)  # by account id
    # Where a new ledger keeps its applied ids and its settled trades (streams.p2p.id_store and settled_store on
    # disk; None: in memory). A given `settler` has its stores already.
    ids: InitVar[lg.IdStore | None] = None
    settled: InitVar[ts.SettledStore | None] = None

    @property
    def ledger(self) -> Ledger:
        return self.settler.ledger

    def __post_init__(self, ids: lg.IdStore | None, settled: ts.SettledStore | None) -> None:
        if ids is not None or settled is not None:
            assert self.ledger.id_seq == 0, "a ledger with applied ids was given together with a store"
            self.settler = ts.TradeSettler(Ledger(ids=ids), settled=settled)
        # Issuance accounts rewards are paid from: they may run negative (finance funds them).
        for account in m.RewardAccount:
            self.ledger.open_account(account.value, allow_negative=True)
        if self.vault is None:
            self.vault = StakingVault(self.ledger, self.staking)
        if self.epochs is None:
            self.epochs = EpochScheduler(self.schedule)

    def _time(self, stamped_ms: int) -> int:
        """The time a command counts at: its own, but never more than MAX_CLOCK_SKEW_MS past its record's."""
        record_ms = self._record_ms
        return stamped_ms if record_ms is None else min(stamped_ms, record_ms + MAX_CLOCK_SKEW_MS)

    def _asset(self, account_id: str) -> lg.Asset:
        """What a transfer from (or to) this account moves: the ledger refuses a transfer between two assets."""
        asset = self._assets.get(account_id)
        if asset is None:  # an account's asset never changes: looked up once (an AccountView per leg costs)
            view = self.ledger.account(account_id)
            assert view is not None, account_id
            asset = self._assets[account_id] = view.asset
        return asset

    def _open(self, *accounts: str) -> None:
        """Open user accounts on first sight; an account already open keeps its settings."""
        ledger = self.ledger
        for account in accounts:
            if not ledger.has_account(account):
                ledger.open_account(account)

    def apply(self, offset: int, message: Any | None, record_ms: int | None = None) -> list[Output]:
        """Apply the command at ``offset``; ``record_ms``: its record's broker timestamp (bounds its time)."""
        assert offset >= self.next_offset, f"ledger: offset {offset} already applied (next {self.next_offset})"
        self.next_offset = offset + 1
        self._record_ms = record_ms
        if message is None:
            return []
        if type(message) is Encoded:  # a record handed over in-process (tests, benches), not through Kafka
            message = message.model
        if isinstance(message, m.SettleTrade):  # nearly every command
            return self._settle(message)
        if isinstance(message, m.Deposit):
            return self._deposit(message)
        if isinstance(message, m.RegisterDividendHolder):
            self.settler.set_dividend_weight(message.account_id, message.source, message.weight)
            return []
        if isinstance(message, m.DeclareDividends):
            return self._declare(message)
        if isinstance(message, m.Stake | m.Unstake):
            return self._staking(message)
        if isinstance(message, m.GovernedTransfer):
            return self._governed(message)
        return self._hold_command(message)

    def _governed(self, command: m.GovernedTransfer) -> list[Output]:
        """A movement a multi-sig request approved (the governance service sends it once the timelock ended)."""
        now = self._time(to_ms(command.occurred_at))
        out = self._release_stakes(now)
        self._open(command.credit_account_id)
        duplicate = self.ledger.result(command.command_id) is not None
        transfer = LedgerTransferCommand(
            command.command_id,
            command.debit_account_id,
            command.credit_account_id,
            command.amount_kaus_units,
            command.reason or "governed transfer",
        )
        result = self.ledger.apply(transfer, now)
        applied = result.status is not TransferStatus.REJECTED
        if applied and not duplicate:
            reference = {"kind": SettlementKind.GOVERNANCE, "id": command.request_id, "leg": Leg.TRANSFER}
            record = transfer_record(result, transfer.code, self._asset(result.debit_account_id), reference)
            out.append((LEDGER_TRANSFERS, record))
        out.append((LEDGER_OUTCOMES, outcome_of(command, result, duplicate=duplicate)))
        return out

    # ------------------------------------------------------------------ the staking vault (spec §1)

    def _staking(self, command: m.Stake | m.Unstake) -> list[Output]:
        now = self._time(to_ms(command.occurred_at))
        vault = self.vault
        assert vault is not None
        out = self._release_stakes(now)
        if isinstance(command, m.Stake):
            self._open(command.account_id)
            outcome = vault.stake(command.command_id, command.account_id, command.amount_kaus_units, now)
        else:
            outcome = vault.unstake(command.position_id, command.account_id, now)
        transfer = outcome.transfer
        if outcome.ok and not outcome.replayed and transfer is not None:
            out.append((LEDGER_TRANSFERS, self._staking_record(transfer, Leg.STAKE, command.command_id)))
        amount = 0 if not outcome.ok or outcome.position is None else outcome.position.amount_units
        at_ms = max(now, self.ledger.clock_ms)
        answer = ledger_outcome(command, outcome.code, outcome.reason, amount, at_ms, duplicate=outcome.replayed)
        out.append((LEDGER_OUTCOMES, answer))
        return out

    def _staking_record(self, transfer: TransferResult, leg: Leg, position_id: str) -> Encoded:
        reason = STAKE_CODE if leg is Leg.STAKE else RELEASE_CODE
        reference = {"kind": SettlementKind.STAKING, "id": position_id, "leg": leg}
        return transfer_record(transfer, reason, lg.Asset.KAUS, reference)

    def _release_stakes(self, now_ms: int) -> list[Output]:
        """Positions whose unbonding ended go back to their holders, at the first command after that moment."""
        vault = self.vault
        assert vault is not None
        if not vault.release_due_by(now_ms):
            return []
        released: list[StakingOutcome] = vault.release_due(now_ms)
        return [
            (LEDGER_TRANSFERS, self._staking_record(o.transfer, Leg.UNSTAKE, o.position_id))
            for o in released
            if o.transfer is not None
        ]

    # ------------------------------------------------------------------ two-phase holds and rewards

    def _hold_command(self, command: HoldCommand) -> list[Output]:
        now = self._time(to_ms(command.occurred_at))
        out = self._expire_holds(now)  # an expired hold frees its K-AUS before this command is checked
        out += self._release_stakes(now)
        if isinstance(command, m.PlaceHold):
            self._open(command.credit_account_id)
            hold = lg.PendingTransfer(
                command.command_id,
                command.debit_account_id,
                command.credit_account_id,
                command.amount_kaus_units,
                command.reason or "hold",
                to_ms(command.expires_at),
            )
            prior = self.ledger.command(command.command_id)
            if isinstance(prior, lg.PendingTransfer) and prior._replace(expires_at_ms=0) == hold._replace(
                expires_at_ms=0
            ):
                # A restarted requester re-sends its hold with a freshly computed expiry: same hold.
                return [*out, (LEDGER_OUTCOMES, self._hold_replay(command, now))]
            domain_command: lg.LedgerCommand = hold
        elif isinstance(command, m.PostHold):
            domain_command = lg.PostPending(command.command_id, command.hold_id, command.amount_kaus_units)
            if command.rewards:
                return self._post_with_rewards(command, domain_command, now, out)
        elif isinstance(command, m.VoidHold):
            domain_command = lg.VoidPending(command.command_id, command.hold_id)
        else:
            self._open(command.account_id)
            domain_command = lg.Transfer(
                command.command_id,
                command.from_account_id.value,
                command.account_id,
                command.amount_kaus_units,
                command.reason or "reward",
            )
        duplicate = self.ledger.result(command.command_id) is not None
        result = self.ledger.apply(domain_command, now)
        applied = result.status is not TransferStatus.REJECTED
        if applied and not duplicate:
            out.append((LEDGER_TRANSFERS, self._transfer_of(command, result)))
        out.append((LEDGER_OUTCOMES, outcome_of(command, result, duplicate=duplicate)))
        return out

    def _post_with_rewards(
        self, command: m.PostHold, post: lg.PostPending, now: int, out: list[Output]
    ) -> list[Output]:
        """A capture and its rewards as one atomic ledger batch: the rewards apply only if the capture does.

        Every command of the batch is deduplicated by its own id, so a re-sent capture (a bridge restart)
        applies those of its rewards not applied yet and none twice; a `ledger.transfers` record is written
        for each newly applied one. One outcome answers the whole command, with the capture's amount.
        """
        ledger = self.ledger
        rewards = command.rewards
        self._open(*(r.account_id for r in rewards))
        grants = [
            lg.Transfer(r.transfer_id, r.from_account_id.value, r.account_id, r.amount_kaus_units, r.reason or "reward")
            for r in rewards
        ]
        duplicate = ledger.result(command.command_id) is not None
        new = [ledger.result(r.transfer_id) is None for r in rewards]
        batch = ledger.apply_batch([post, *grants], now)
        result = batch.results[0]
        code: str | None = None
        reason: str | None = None
        if batch.ok:
            if not duplicate:
                out.append((LEDGER_TRANSFERS, self._transfer_of(command, result)))
            out.extend(
                (
                    LEDGER_TRANSFERS,
                    transfer_record(r, reward.reason, self._asset(r.debit_account_id), reference_of(reward.reference)),
                )
                for r, reward, fresh in zip(batch.results[1:], rewards, new, strict=True)
                if fresh
            )
        else:
            # The failing command's code; "LINKED_EVENT_FAILED" names the others. A reward's is prefixed with its id.
            failed = next((r for r in batch.results if r.code is not lg.LedgerCode.LINKED_EVENT_FAILED), result)
            code = str(failed.code)
            reason = failed.reason if failed is result else f"reward {failed.transfer_id!r}: {failed.reason}"
        out.append(
            (
                LEDGER_OUTCOMES,
                _LedgerOutcome(
                    command_id=command.command_id,
                    command_type=command.type,
                    status=m.LedgerOutcomeStatus.APPLIED if batch.ok else m.LedgerOutcomeStatus.REJECTED,
                    duplicate=duplicate and batch.ok,
                    reason_code=code,
                    reason=reason,
                    amount_kaus_units=result.amount_units,
                    occurred_at=from_ms(result.at_ms),
                ),
            )
        )
        return out

    def _hold_replay(self, command: m.PlaceHold, now: int) -> m.LedgerOutcome:
        view = self.ledger.pending(command.command_id)
        assert view is not None
        pending = view.state is PendingState.PENDING
        return _LedgerOutcome(
            command_id=command.command_id,
            command_type=command.type,
            status=m.LedgerOutcomeStatus.APPLIED if pending else m.LedgerOutcomeStatus.REJECTED,
            duplicate=pending,
            # Not pending any more: the requester must not go on as if it held the K-AUS.
            reason_code=None if pending else _NOT_PENDING_CODE[view.state],
            reason=None if pending else f"hold {command.command_id!r} is {view.state}",
            amount_kaus_units=view.amount_units if pending else 0,
            occurred_at=from_ms(max(now, self.ledger.clock_ms)),
        )

    def _reference(self, command: HoldCommand) -> m.LedgerReference | None:
        """The reference of the movement a hold command just applied: a new hold's transaction is remembered
        until its capture or void, which carries it (and forgets it)."""
        if isinstance(command, m.GrantReward):
            return command.reference
        if isinstance(command, m.PlaceHold):
            ref = command.reference
            if ref is None:
                return None
            self.hold_references[command.command_id] = (ref.kind, ref.id)
            return ref if ref.leg is Leg.HOLD else _Reference(kind=ref.kind, id=ref.id, leg=Leg.HOLD)
        held = self.hold_references.pop(command.hold_id, None)
        return None if held is None else _Reference(kind=held[0], id=held[1], leg=_RESOLUTION_LEG[command.type])

    def _transfer_of(self, command: HoldCommand, result: TransferResult) -> m.LedgerTransfer:
        """The record of a hold command's movement, applied just now (not a duplicate)."""
        hold_id = command.hold_id if isinstance(command, m.PostHold | m.VoidHold) else None
        expires = command.expires_at if isinstance(command, m.PlaceHold) else None
        reason = command.reason if isinstance(command, m.PlaceHold | m.GrantReward) else ""
        return _LedgerTransfer(
            transfer_id=result.transfer_id,
            kind=_TRANSFER_KIND[command.type],
            debit_account_id=result.debit_account_id,
            credit_account_id=result.credit_account_id,
            asset=self._asset(result.debit_account_id),
            amount_units=result.amount_units,
            pending_id=hold_id,
            expires_at=expires,
            reason=reason,
            reference=self._reference(command),
            occurred_at=from_ms(result.at_ms),
        )

    def _expire_holds(self, now_ms: int) -> list[Output]:
        out: list[Output] = []
        for e in self.ledger.expire(now_ms):
            held = self.hold_references.pop(e.pending_id, None)
            record = _LedgerTransfer(
                transfer_id=f"{e.pending_id}:expired",
                kind=m.TransferKind.VOID_PENDING,
                debit_account_id=e.debit_account_id,
                credit_account_id=e.credit_account_id,
                asset=self._asset(e.debit_account_id),
                amount_units=e.amount_units,
                pending_id=e.pending_id,
                expires_at=None,
                reason=HOLD_EXPIRED,
                reference=None if held is None else _Reference(kind=held[0], id=held[1], leg=Leg.RELEASE),
                occurred_at=from_ms(e.expired_at_ms),
            )
            out.append((LEDGER_TRANSFERS, record))
        return out

    def _deposit(self, deposit: m.Deposit) -> list[Output]:
        self._open(deposit.account_id)
        now = self._time(to_ms(deposit.occurred_at))
        out = self._release_stakes(now)
        previous = self.ledger.result(deposit.command_id)
        result = self.ledger.apply(
            LedgerTransferCommand(
                deposit.command_id, ts.SYS_MINT, deposit.account_id, deposit.amount_kaus_units, DEPOSIT_CODE
            ),
            now,
        )
        if previous is not None or result.status is not TransferStatus.POSTED:
            return out  # a re-sent deposit: applied once already
        reference = {"kind": SettlementKind.DEPOSIT, "id": deposit.command_id, "leg": Leg.DEPOSIT}
        out.append((LEDGER_TRANSFERS, transfer_record(result, DEPOSIT_CODE, self._asset(ts.SYS_MINT), reference)))
        return out

    def _settle(self, command: m.SettleTrade) -> list[Output]:
        trade = command.trade
        trade_id, buyer, seller = trade.trade_id, trade.buyer_account_id, trade.seller_account_id
        settler = self.settler
        ledger = settler.ledger
        self._open(buyer, seller)
        if command.seller_energy_source is not None:
            settler.register_seller_source(seller, command.seller_energy_source)
        executed_ms = to_ms(trade.executed_at)
        # The trade keeps its executed_at (its content: a re-emitted copy must compare equal); the clock is bounded.
        now_ms = self._time(executed_ms)
        outcome = settler.settle(to_domain_trade(trade, executed_ms), now_ms, clock=time.perf_counter_ns)
        if outcome.replayed:
            return []  # the same trade re-emitted after a matching-agent restart: settled once already
        # Spec §2.1 phases; the carbon mint is a leg of the same atomic ledger batch as the transfer.
        matching_us = trade.matching_duration_us
        phases = {} if matching_us is None else {"matching": matching_us}
        for name, ns in outcome.phase_ns:
            phases[PHASE_NAMES.get(name, name)] = ns // 1000
        settled_at = utc_text(max(now_ms, ledger.clock_ms))
        out: list[Output] = []
        settled = outcome.status is ts.SettlementStatus.SETTLED
        if settled:
            reason = f"trade:{trade_id}"
            asset, leg = self._asset, ts.trade_leg
            for result in outcome.transfers:  # K-AUS legs, and the carbon mint (CARBON_MILLICREDIT)
                if result.status is _POSTED:
                    reference = {"kind": _TRADE, "id": trade_id, "leg": leg(result.transfer_id)}
                    record = transfer_record(result, reason, asset(result.debit_account_id), reference)
                    out.append((LEDGER_TRANSFERS, record))
            if outcome.carbon_millicredits:
                carbon = {
                    "mint_id": f"{trade_id}/carbon",
                    "account_id": seller,
                    "trade_id": trade_id,
                    "credits_milli": outcome.carbon_millicredits,
                    "minted_at": settled_at,
                }
                out.append((CARBON_CREDITS_MINTED, Encoded(seller.encode(), dump_json(carbon), _decode_carbon)))
        settlement = {
            "trade_id": trade_id,
            "status": "SETTLED" if settled else "REJECTED",
            "reason_code": str(outcome.code) if outcome.code else None,
            "reason": outcome.reason or None,
            "market_id": trade.market_id,
            "buyer_account_id": buyer,
            "seller_account_id": seller,
            "notional_kaus_units": outcome.notional_units,
            "fee_kaus_units": outcome.fee_units,
            "seller_net_kaus_units": outcome.seller_net_units,
            "delivered_wh": trade.quantity_wh,
            "carbon_credits_minted_milli": outcome.carbon_millicredits,
            "phase_durations_us": phases,
            "settled_at": settled_at,
        }
        out.append((ENERGY_SETTLEMENTS, Encoded(trade_id.encode(), dump_json(settlement), _decode_settlement)))
        for fact in outcome.audit:
            out.append((AUDIT_RECORDS, audit_record(fact)))
        return out

    def _declaration(self, command: m.DeclareDividends, now: int) -> ts.DividendDeclaration | None:
        """An epoch's declaration (the epoch timer's id for the epochs due now: STAKING weights from the vault
        over their span, the pool split by source), a manual one (any other id: the registered weights), or
        None for an epoch id that is not due (already covered by a later declaration, or not closed yet)."""
        epochs, vault, settler = self.epochs, self.vault, self.settler
        assert epochs is not None and vault is not None
        declaration_id = command.command_id
        due = epochs.due(now)
        if due is not None and due.declaration_id == declaration_id:
            declaration = settler.declare_dividends(
                declaration_id,
                now,
                staking_weights=vault.weights(due.start_ms, due.end_ms),
                source_shares_bps=DEFAULT_SOURCE_SHARES_BPS,
            )
            if declaration.status is not ts.SettlementStatus.REJECTED:
                epochs.mark_declared(due)
            return declaration
        if declaration_id.startswith("div-") and not settler.is_declared(declaration_id):
            return None
        return settler.declare_dividends(declaration_id, now)

    def _declare(self, command: m.DeclareDividends) -> list[Output]:
        now = self._time(to_ms(command.occurred_at))
        out: list[Output] = self._release_stakes(now)
        declaration = self._declaration(command, now)
        if declaration is None or declaration.replayed:
            return out
        reference = {"kind": SettlementKind.DIVIDEND, "id": command.command_id, "leg": Leg.DIVIDEND}
        out += [
            (LEDGER_TRANSFERS, transfer_record(r, "dividend", self._asset(r.debit_account_id), reference))
            for r in declaration.transfers
            if r.status is TransferStatus.POSTED
        ]
        out.extend(
            (
                DIVIDENDS_DECLARED,
                m.DividendDeclared(
                    dividend_id=d.transfer_id,
                    account_id=d.account_id,
                    source=d.source,
                    amount_kaus_units=d.amount_units,
                    declared_at=from_ms(d.declared_at_ms),
                ),
            )
            for d in declaration.dividends
            if d.amount_units > 0
        )
        out.extend((AUDIT_RECORDS, audit_record(fact)) for fact in declaration.audit)
        return out

    def balances(self) -> dict[str, int]:
        return {a.account_id: a.balance_units for a in self.ledger.accounts()}
