"""domain/bridge.py: the pure four-phase state machine, driven synchronously with a fake ledger and providers.

Covers the acceptance points the core can prove on its own: each phase's failure voids the hold, slippage
at/just under 0.3%, a stale rate, the breaker opening at exactly the 3rd consecutive failure and
recovering, failover, duplicates, recovery of persisted intents → exactly one payout, exact amounts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import bridge as b
from domain.bridge import (
    BridgeConfig,
    CardPayment,
    Done,
    Duplicate,
    FlagForReconciliation,
    InFlight,
    Instant,
    LedgerRejected,
    New,
    ParkForRecovery,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    Phase,
    PlaceHold,
    PostHold,
    RailOutcome,
    ReasonCode,
    Rejected,
    ResolvePayout,
    Reward,
    Settled,
    Step,
    VoidHold,
)
from domain.cashback import PayerTier
from domain.fx import FxBook, FxPolicy, FxSource, Quote
from domain.ledger import Leg, Reference, SettlementKind
from domain.money import Currency
from domain.rails import (
    DEFAULT_BREAKER,
    RAILS,
    BreakerState,
    CircuitBreaker,
    Provider,
    Rail,
    RailSubstitution,
    Region,
    new_breakers,
)

T0 = 1_790_000_000_000
K = 1_000_000
PAYER = "acct-payer-1"


# --------------------------------------------------------------------------- fakes


@dataclass
class Hold:
    debit: str
    credit: str
    amount: int
    expires_at_ms: int
    state: str = "PENDING"


@dataclass
class FakeLedger:
    """Just enough of a two-phase ledger for the bridge: holds reduce the available balance."""

    balances: dict[str, int] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    refuse_hold: str | None = None
    refuse_post: str | None = None
    unanswered_posts: int = 0  # captures that get no answer in time (applied or not: applied_unanswered)
    applied_unanswered: bool = False

    def available_units(self, account_id: str) -> int:
        held = sum(h.amount for h in self.holds.values() if h.state == "PENDING" and h.debit == account_id)
        return self.balances.get(account_id, 0) - held

    def apply_hold(self, hold: PlaceHold) -> None:
        """The core's PlaceHold effect, as the shell hands it to the ledger."""
        self.place_hold(
            transfer_id=hold.transfer_id,
            debit_account_id=hold.debit_account_id,
            credit_account_id=hold.credit_account_id,
            amount_units=hold.amount_units,
            expires_at_ms=hold.expires_at_ms,
        )

    def place_hold(
        self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int, expires_at_ms: int
    ) -> None:
        if transfer_id in self.applied:
            return
        if self.refuse_hold:
            raise LedgerRejected("REFUSED", self.refuse_hold)
        if self.available_units(debit_account_id) < amount_units:
            raise LedgerRejected("INSUFFICIENT_FUNDS", "not enough")
        self.holds[transfer_id] = Hold(debit_account_id, credit_account_id, amount_units, expires_at_ms)
        self.applied.add(transfer_id)

    def post_hold(self, *, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[Reward] = ()) -> None:
        if self.unanswered_posts:
            self.unanswered_posts -= 1
            if self.applied_unanswered:  # the ledger applied it; only the answer is late
                late, self.unanswered_posts = self.unanswered_posts, 0
                self.post_hold(transfer_id=transfer_id, hold_id=hold_id, amount_units=amount_units, rewards=rewards)
                self.unanswered_posts = late
            raise LedgerRejected(b.LEDGER_TIMEOUT, "no answer in time")
        if transfer_id not in self.applied:
            if self.refuse_post:
                raise LedgerRejected("REFUSED", self.refuse_post)
            h = self.holds[hold_id]
            assert h.state == "PENDING" and amount_units <= h.amount
            h.state = "POSTED"
            self.balances[h.debit] = self.balances.get(h.debit, 0) - amount_units
            self.balances[h.credit] = self.balances.get(h.credit, 0) + amount_units
            self.applied.add(transfer_id)
        for r in rewards:  # only once the capture applied (or had applied); each once
            self.transfer(
                transfer_id=r.transfer_id,
                debit_account_id=r.debit_account_id,
                credit_account_id=r.credit_account_id,
                amount_units=r.amount_units,
            )

    def void_hold(self, *, transfer_id: str, hold_id: str) -> None:
        if transfer_id in self.applied:
            return
        h = self.holds[hold_id]
        assert h.state == "PENDING", h.state
        h.state = "VOIDED"
        self.applied.add(transfer_id)

    def transfer(self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int) -> None:
        if transfer_id in self.applied:
            return
        self.balances[debit_account_id] = self.balances.get(debit_account_id, 0) - amount_units
        self.balances[credit_account_id] = self.balances.get(credit_account_id, 0) + amount_units
        self.applied.add(transfer_id)

    def pending(self) -> list[Hold]:
        return [h for h in self.holds.values() if h.state == "PENDING"]


# Behaviours a provider call can have.
OK, DOWN, DECLINE, LOST_RESPONSE, LOST_REQUEST = "ok", "down", "decline", "lost-response", "lost-request"


@dataclass
class FakeProviders:
    """Providers with real idempotency: one payout per (provider, key), whatever happens on the wire."""

    script: dict[Rail, deque[str]] = field(default_factory=dict)
    lookup_script: deque[str] = field(default_factory=deque)
    payouts: dict[tuple[Provider, str], PayoutIntent] = field(default_factory=dict)
    calls: list[tuple[str, Rail]] = field(default_factory=list)

    def on(self, rail: Rail, *behaviours: str) -> FakeProviders:
        self.script.setdefault(rail, deque()).extend(behaviours)
        return self

    def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        self.calls.append(("payout", intent.rail))
        behaviour = self.script.get(intent.rail, deque()).popleft() if self.script.get(intent.rail) else OK
        key = (intent.provider, intent.idempotency_key)
        if behaviour == DOWN:
            return PayoutOutcome(PayoutStatus.UNAVAILABLE, http_status=503, error_code="service_unavailable")
        if behaviour == DECLINE:
            return PayoutOutcome(
                PayoutStatus.DECLINED,
                http_status=400,
                error_code="account_closed",
                error_message="The bank account has been closed",
            )
        if behaviour == LOST_REQUEST:
            return PayoutOutcome(PayoutStatus.TIMEOUT)
        self.payouts.setdefault(key, intent)
        if behaviour == LOST_RESPONSE:
            return PayoutOutcome(PayoutStatus.TIMEOUT)
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"ref-{intent.provider}-{intent.bridge_tx_id}")

    def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        self.calls.append(("lookup", intent.rail))
        if self.lookup_script and self.lookup_script.popleft() == DOWN:
            return PayoutOutcome(PayoutStatus.TIMEOUT)
        if (intent.provider, intent.idempotency_key) in self.payouts:
            return PayoutOutcome(
                PayoutStatus.PAID, provider_reference=f"ref-{intent.provider}-{intent.bridge_tx_id}", replayed=True
            )
        return PayoutOutcome(PayoutStatus.NOT_FOUND, http_status=404)

    def count(self, bridge_tx_id: str) -> int:
        return sum(1 for (_, key) in self.payouts if key == bridge_tx_id)


@dataclass
class Clock:
    wall_ms: int = T0
    mono_us: int = 0

    def now(self) -> Instant:
        return Instant(self.wall_ms, self.mono_us)

    def advance(self, ms: int) -> None:
        self.wall_ms += ms
        self.mono_us += ms * 1_000


def fx_book(rate: str = "0.15", ccy: Currency = Currency.USD, at_ms: int = T0) -> FxBook:
    r = D(rate)
    return FxBook(FxPolicy()).with_quotes(
        [
            Quote(FxSource.NEXUS_INTERNAL.value, "KAUS", ccy, r, at_ms),
            Quote(FxSource.BLOOMBERG.value, "KAUS", ccy, r + D("0.0001") * (1 if r < 100 else 100), at_ms),
            Quote(FxSource.REUTERS.value, "KAUS", ccy, r - D("0.0001") * (1 if r < 100 else 100), at_ms),
        ]
    )


def payment(
    request_id: str = "card-1",
    amount_minor: int = 15_000,
    ccy: Currency = Currency.USD,
    region: Region = Region.US,
    tier: PayerTier = PayerTier.GOLD,
    program: str | None = None,
    quoted: str = "0.15",
    payer: str = PAYER,
    origin: str | None = None,
) -> CardPayment:
    return CardPayment(
        request_id, payer, "merchant-cafe-9", program, amount_minor, ccy, region, tier, D(quoted), T0, origin
    )


@dataclass
class Harness:
    ledger: FakeLedger
    providers: FakeProviders
    book: FxBook
    cfg: BridgeConfig = field(default_factory=BridgeConfig)
    breakers: dict[Rail, CircuitBreaker] = field(default_factory=new_breakers)
    clock: Clock = field(default_factory=Clock)
    effects: list[object] = field(default_factory=list)
    # test hooks: called with the intent before the provider sees it (e.g. to move the clock)
    before_call: Callable[[PayoutIntent], None] | None = None

    def run(self, p: CardPayment) -> Step:
        step = b.begin(p, self.ledger.available_units(p.payer_account_id), self.clock.now(), self.cfg)
        return self.drive(step)

    def drive(self, step: Step) -> Step:
        cfg = self.cfg
        while True:
            self.effects.extend(step.effects)
            for e in step.effects:  # the shell's breaker bookkeeping, as streams/bridge/runner.py does it
                if isinstance(e, RailOutcome):
                    breaker = self.breakers.get(e.rail, DEFAULT_BREAKER)
                    self.breakers[e.rail] = breaker.on_success(e.at_ms) if e.ok else breaker.on_failure(e.at_ms)
            tx = step.tx
            nxt: Step | None = None
            for e in step.effects:
                if isinstance(e, PlaceHold):
                    try:
                        self.ledger.apply_hold(e)
                        nxt = b.on_hold(tx, True, "", self.clock.now())
                    except LedgerRejected as exc:
                        nxt = b.on_hold(tx, False, exc.reason, self.clock.now())
                elif isinstance(e, VoidHold):
                    self.ledger.void_hold(transfer_id=e.transfer_id, hold_id=e.hold_id)
                elif isinstance(e, PostHold):
                    try:
                        self.ledger.post_hold(
                            transfer_id=e.transfer_id, hold_id=e.hold_id, amount_units=e.amount_units, rewards=e.rewards
                        )
                        nxt = b.on_posted(tx, True, "", self.clock.now(), cfg)
                    except LedgerRejected as exc:
                        if exc.code == b.LEDGER_TIMEOUT:
                            nxt = b.on_capture_unanswered(tx, exc.reason, self.clock.now(), cfg)
                        else:
                            nxt = b.on_posted(tx, False, exc.reason, self.clock.now(), cfg)
                elif isinstance(e, PayoutIntent):
                    self.breakers[e.rail] = self.breakers[e.rail].on_call(self.clock.now().wall_ms)
                    if self.before_call:
                        self.before_call(e)
                    self.clock.advance(1)
                    nxt = b.on_payout(tx, self.providers.payout(e), self.breakers, self.clock.now(), cfg)
                elif isinstance(e, ResolvePayout):
                    nxt = b.on_resolved(tx, self.providers.lookup(e.intent), self.breakers, self.clock.now(), cfg)
                elif isinstance(e, Done | ParkForRecovery):
                    return step
            if nxt is None:
                if tx.stage is b.Stage.HOLD_PLACED:
                    nxt = b.convert(tx, self.book, self.clock.now(), cfg)
                elif tx.stage is b.Stage.RATE_LOCKED:
                    nxt = b.route(tx, self.breakers, self.clock.now(), cfg)
                else:
                    raise AssertionError(f"stuck in {tx.stage} with effects {step.effects}")
            step = nxt


def harness(balance: int = 10_000 * K, book: FxBook | None = None, **kw: object) -> Harness:
    ledger = FakeLedger(balances={PAYER: balance})
    return Harness(ledger, FakeProviders(), book or fx_book(), **kw)  # type: ignore[arg-type]


def result_of(step: Step) -> b.Result:
    assert step.tx.result is not None, step.tx.stage
    return step.tx.result


def voids(h: Harness) -> list[VoidHold]:
    return [e for e in h.effects if isinstance(e, VoidHold)]


# --------------------------------------------------------------------------- happy path & exact amounts


def test_spec_example_settles_with_exact_amounts_and_phase_durations() -> None:
    h = harness()
    r = result_of(h.run(payment(program="AURA_SYDNEY")))
    assert isinstance(r, Settled)
    assert r.kaus_debited_units == 1_000 * K  # 150.00 USD at the median 0.15
    assert r.rate == D("0.15") and r.rail is Rail.STRIPE_INSTANT and r.provider is Provider.STRIPE
    assert (r.primary_rail, r.rail_substitution) == (Rail.STRIPE_INSTANT, None)  # the region's own rail paid
    assert r.provider_fee_minor == 63  # 0.25% of 150.00 = 37.5¢ → 38¢, + 25¢
    assert (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units) == (30 * K, 3 * K)
    assert r.bridge_tx_id == "BRIDGE-card-1"
    assert [p for p, _ in r.phase_durations_us] == list(Phase)
    assert sum(us for _, us in r.phase_durations_us) <= r.total_duration_us
    # the ledger: exact debit, rewards credited, nothing left on hold
    assert h.ledger.balances[PAYER] == 10_000 * K - 1_000 * K + 33 * K
    assert h.ledger.balances["bridge:settlement"] == 1_000 * K
    assert h.ledger.balances["bridge:rewards"] == -30 * K and h.ledger.balances["bridge:ecosystem"] == -3 * K
    assert h.ledger.pending() == []
    assert h.providers.count("BRIDGE-card-1") == 1


def test_the_rewards_ride_on_the_capture_and_confirmation_emits_no_transfer() -> None:
    h = harness()
    r = result_of(h.run(payment(program="AURA_SYDNEY")))
    assert isinstance(r, Settled)
    [post] = [e for e in h.effects if isinstance(e, PostHold)]
    assert (post.transfer_id, post.hold_id, post.amount_units) == (
        "BRIDGE-card-1:post",
        "BRIDGE-card-1:hold",
        1_000 * K,
    )
    assert post.rewards == (
        Reward(
            "BRIDGE-card-1:cashback",
            "bridge:rewards",
            PAYER,
            30 * K,
            "cashback GOLD 300 bps",
            Reference(SettlementKind.CARD_PAYMENT, "BRIDGE-card-1", Leg.CASHBACK),
        ),
        Reward(
            "BRIDGE-card-1:bonus",
            "bridge:ecosystem",
            PAYER,
            3 * K,
            "ecosystem bonus AURA_SYDNEY",
            Reference(SettlementKind.CARD_PAYMENT, "BRIDGE-card-1", Leg.BONUS),
        ),
    )
    # the result reports what the capture carried; after the capture only the result follows
    assert (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units) == tuple(x.amount_units for x in post.rewards)
    assert isinstance(h.effects[-1], Done) and isinstance(h.effects[-2], PostHold)
    # a merchant outside the ecosystem programs: the cashback alone
    plain = harness()
    plain.run(payment(tier=PayerTier.BRONZE))
    [plain_post] = [e for e in plain.effects if isinstance(e, PostHold)]
    assert [(x.transfer_id, x.amount_units) for x in plain_post.rewards] == [("BRIDGE-card-1:cashback", 10 * K)]


def test_hold_is_sized_for_the_worst_accepted_rate_and_post_is_the_exact_debit() -> None:
    h = harness(book=fx_book("0.1496"))  # live 0.1496 = 0.2667% below the quote: accepted
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled)
    hold = next(e for e in h.effects if isinstance(e, PlaceHold))
    post = next(e for e in h.effects if isinstance(e, PostHold))
    assert hold.amount_units == 1_003_009_028  # 150 / (0.15 x 0.997), rounded up
    assert post.amount_units == r.kaus_debited_units == 1_002_673_797  # 150 / 0.1496 = 1002.673796.. → up
    assert post.amount_units <= hold.amount_units
    assert hold.expires_at_ms == T0 + 600_000


def test_krw_settlement_whole_won_and_units_rounded_up() -> None:
    h = harness(book=fx_book("210.4321", Currency.KRW))
    r = result_of(
        h.run(
            payment(
                amount_minor=20_000,
                ccy=Currency.KRW,
                region=Region.KR,
                quoted="210.4321",
                tier=PayerTier.DIAMOND,
                program="NOMAD_MONTHLY",
            )
        )
    )
    assert isinstance(r, Settled) and r.rail is Rail.TOSS_PAYMENTS
    assert r.kaus_debited_units == 95_042_534  # 20,000 / 210.4321 = 95.0425339.. K-AUS → up
    assert r.provider_fee_minor == 460  # 2.3% of 20,000 won
    assert r.cashback_kaus_units == 95_042_534 * 500 // 10_000 == 4_752_126
    assert r.ecosystem_bonus_kaus_units == 475_212


# --------------------------------------------------------------------------- phase 1


def test_phase1_insufficient_funds_places_no_hold() -> None:
    h = harness(balance=1_003_009_027)  # one unit short of the worst-case hold
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.BALANCE_LOCK, ReasonCode.INSUFFICIENT_FUNDS, False)
    assert not any(isinstance(e, PlaceHold) for e in h.effects)
    assert h.ledger.available_units(PAYER) == 1_003_009_027


def test_phase1_ledger_refusing_the_hold_leaves_nothing_locked() -> None:
    h = harness()
    h.ledger.refuse_hold = "account frozen"
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected) and r.failed_phase is Phase.BALANCE_LOCK
    assert r.reason_code is ReasonCode.HOLD_REJECTED and "account frozen" in r.reason
    assert h.ledger.pending() == [] and h.providers.payouts == {}


# --------------------------------------------------------------------------- phase 2


def test_phase2_stale_rate_voids_the_hold() -> None:
    h = harness(book=fx_book(at_ms=T0 - 10_001))
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.FX_CONVERSION, ReasonCode.STALE_RATE, True)
    assert h.ledger.pending() == [] and voids(h)[0].phase is Phase.FX_CONVERSION
    assert h.ledger.available_units(PAYER) == 10_000 * K


def test_phase2_slippage_exactly_0_3_percent_rejects_and_voids() -> None:
    h = harness(book=fx_book("0.15045"))  # median exactly 0.3% above the quote
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code) == (Phase.FX_CONVERSION, ReasonCode.SLIPPAGE)
    assert "0.3000%" in r.reason and "0.15045" in r.reason
    assert h.ledger.pending() == [] and h.providers.payouts == {}


def test_phase2_slippage_just_under_0_3_percent_settles() -> None:
    h = harness(book=fx_book("0.1495500001"))  # 0.2999999% below the quote
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled) and r.rate == D("0.1495500001")
    assert r.kaus_debited_units == 1_003_009_027  # one unit under the worst-case hold
    assert h.ledger.pending() == []


# --------------------------------------------------------------------------- phase 3


def test_phase3_no_rail_voids_the_hold() -> None:
    h = harness()
    for rail in (Rail.STRIPE_INSTANT, Rail.WISE, Rail.PAYPAL):
        for _ in range(3):
            h.breakers[rail] = h.breakers[rail].on_failure(T0)
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.hold_voided) == (Phase.MERCHANT_CREDIT, ReasonCode.NO_RAIL, True)
    assert "STRIPE_INSTANT: circuit breaker OPEN" in r.reason
    assert h.ledger.pending() == []


def test_phase3_provider_decline_voids_and_does_not_count_against_the_rail() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, DECLINE)
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code, r.rail) == (
        Phase.MERCHANT_CREDIT,
        ReasonCode.PROVIDER_DECLINED,
        Rail.STRIPE_INSTANT,
    )
    assert "account_closed" in r.reason
    assert h.breakers[Rail.STRIPE_INSTANT].consecutive_failures == 0
    assert h.ledger.pending() == [] and h.providers.payouts == {}


def test_phase3_every_provider_down_fails_after_failover_and_voids() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, DOWN).on(Rail.WISE, DOWN).on(Rail.PAYPAL, DOWN)
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code) == (Phase.MERCHANT_CREDIT, ReasonCode.PAYOUT_FAILED)
    intents = [e for e in h.effects if isinstance(e, PayoutIntent)]
    assert [i.rail for i in intents] == [Rail.STRIPE_INSTANT, Rail.WISE, Rail.PAYPAL]
    assert {i.idempotency_key for i in intents} == {"BRIDGE-card-1"}
    assert h.ledger.pending() == [] and h.providers.payouts == {}


def test_phase3_failover_pays_on_the_next_rail_once() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, DOWN)
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled) and r.rail is Rail.WISE and r.provider_fee_minor == 75  # Wise 0.5%
    assert (r.primary_rail, r.rail_substitution) == (Rail.STRIPE_INSTANT, RailSubstitution.PRIMARY_FAILED)
    outcomes = [e for e in h.effects if isinstance(e, RailOutcome)]
    assert [(o.rail, o.ok) for o in outcomes] == [(Rail.STRIPE_INSTANT, False), (Rail.WISE, True)]
    intents = [e for e in h.effects if isinstance(e, PayoutIntent)]
    assert [(i.provider_attempt, i.tried_providers, i.substitution) for i in intents] == [
        (1, (Provider.STRIPE,), None),
        (2, (Provider.STRIPE, Provider.WISE), RailSubstitution.PRIMARY_FAILED),
    ]
    assert h.providers.count("BRIDGE-card-1") == 1


def test_phase3_failover_refused_once_the_rate_lock_expired() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, DOWN)
    h.before_call = lambda intent: h.clock.advance(5_000)  # the first call takes the whole lock window
    r = result_of(h.run(payment()))
    assert isinstance(r, Rejected)
    assert (r.failed_phase, r.reason_code) == (Phase.FX_CONVERSION, ReasonCode.RATE_LOCK_EXPIRED)
    assert "service_unavailable" in r.reason
    assert h.ledger.pending() == [] and h.providers.payouts == {}


# --------------------------------------------------------------------------- timeouts


def test_timeout_with_the_payout_made_is_resolved_by_lookup_without_a_second_payout() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, LOST_RESPONSE)
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled) and r.rail is Rail.STRIPE_INSTANT
    assert h.providers.calls == [("payout", Rail.STRIPE_INSTANT), ("lookup", Rail.STRIPE_INSTANT)]
    assert h.providers.count("BRIDGE-card-1") == 1
    assert h.breakers[Rail.STRIPE_INSTANT].consecutive_failures == 1  # a timeout counts against the rail


def test_timeout_with_the_request_lost_is_resent_under_the_same_key() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, LOST_REQUEST)
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled) and r.rail is Rail.STRIPE_INSTANT
    sends = [e for e in h.effects if isinstance(e, PayoutIntent)]
    assert [(s.rail, s.send_no, s.idempotency_key) for s in sends] == [
        (Rail.STRIPE_INSTANT, 1, "BRIDGE-card-1"),
        (Rail.STRIPE_INSTANT, 2, "BRIDGE-card-1"),
    ]
    assert h.providers.count("BRIDGE-card-1") == 1


def test_unknown_outcome_is_parked_with_the_hold_then_recovered_exactly_once() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, LOST_RESPONSE)
    h.providers.lookup_script.extend([DOWN, DOWN])
    step = h.run(payment())
    assert step.tx.stage is b.Stage.PARKED and step.tx.result is None
    parked = next(e for e in h.effects if isinstance(e, ParkForRecovery))
    assert "unknown" in parked.reason
    assert len(h.ledger.pending()) == 1  # money may have moved: the hold stays until recovery decides
    # later (or after a restart): recover the open intent
    h.clock.advance(60_000)
    (rec,) = b.recover([parked.intent], h.clock.now())
    r = result_of(h.drive(rec))
    assert isinstance(r, Settled) and r.provider_reference == "ref-STRIPE-BRIDGE-card-1"
    assert h.providers.count("BRIDGE-card-1") == 1 and h.ledger.pending() == []
    assert h.ledger.balances[PAYER] == 10_000 * K - 1_000 * K + 30 * K


# --------------------------------------------------------------------------- phase 4


def test_phase4_capture_refused_after_payout_settles_and_flags_the_debit_for_reconciliation() -> None:
    h = harness()
    h.ledger.refuse_post = "hold expired"
    r = result_of(h.run(payment()))
    # The merchant was paid: the payment is settled, never reported failed.
    assert isinstance(r, Settled) and r.provider_reference == "ref-STRIPE-BRIDGE-card-1"
    assert (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units) == (0, 0)  # the rewards rode on the capture
    [flag] = [e for e in h.effects if isinstance(e, FlagForReconciliation)]
    assert (flag.request_id, flag.kaus_units, flag.rail) == ("card-1", r.kaus_debited_units, Rail.STRIPE_INSTANT)
    assert "hold expired" in flag.reason and "merchant was paid" in flag.reason
    done = [i for i, e in enumerate(h.effects) if isinstance(e, Done)]
    assert done == [len(h.effects) - 1] and h.effects.index(flag) < done[0]  # recorded before the result
    assert h.ledger.pending() == []  # the hold is released: nothing stays locked
    [post] = [e for e in h.effects if isinstance(e, PostHold)]
    assert [r.transfer_id for r in post.rewards] == ["BRIDGE-card-1:cashback"]  # sent with the capture ...
    assert "bridge:rewards" not in h.ledger.balances  # ... and not paid: the capture did not apply
    assert h.ledger.balances[PAYER] == 10_000 * K  # not debited: that is what reconciliation recovers


def test_an_unanswered_capture_is_resent_under_the_same_id_and_never_fails() -> None:
    h = harness()
    h.ledger.unanswered_posts, h.ledger.applied_unanswered = 2, True  # applied, answers lost twice
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled) and r.cashback_kaus_units == 30 * K
    posts = [e for e in h.effects if isinstance(e, PostHold)]
    assert [(p.transfer_id, p.send_no) for p in posts] == [("BRIDGE-card-1:post", n) for n in (1, 2, 3)]
    assert not any(isinstance(e, VoidHold | FlagForReconciliation) for e in h.effects)
    assert len([e for e in h.effects if isinstance(e, Done)]) == 1
    assert h.ledger.balances[PAYER] == 10_000 * K - 1_000 * K + 30 * K  # captured and rewarded once
    assert h.providers.count("BRIDGE-card-1") == 1


def test_a_capture_unanswered_past_its_sends_is_parked_then_recovered_with_one_outcome() -> None:
    h = harness()
    h.ledger.unanswered_posts = h.cfg.max_capture_sends  # the ledger is down for every send
    step = h.run(payment())
    assert step.tx.stage is b.Stage.PARKED and step.tx.result is None
    assert not any(isinstance(e, Done | VoidHold) for e in h.effects)  # no outcome, the hold stays
    [parked] = [e for e in h.effects if isinstance(e, ParkForRecovery)]
    assert "capture" in parked.reason and len(h.ledger.pending()) == 1
    assert len([e for e in h.effects if isinstance(e, PostHold)]) == h.cfg.max_capture_sends
    # The ledger is back; recovery (live, or after a restart from the journal's open intent) finishes it.
    (rec,) = b.recover([parked.intent], h.clock.now())
    r = result_of(h.drive(rec))
    assert isinstance(r, Settled)
    assert len([e for e in h.effects if isinstance(e, Done)]) == 1
    assert h.providers.count("BRIDGE-card-1") == 1 and h.ledger.pending() == []
    assert h.ledger.balances[PAYER] == 10_000 * K - 1_000 * K + 30 * K


def test_capture_transitions_only_while_posting() -> None:
    h = harness()
    step = b.begin(payment(), 10_000 * K, h.clock.now(), h.cfg)
    with pytest.raises(AssertionError, match="not allowed"):
        b.on_capture_unanswered(step.tx, "late", h.clock.now(), h.cfg)


# --------------------------------------------------------------------------- circuit breaker across payments


def test_breaker_opens_at_exactly_the_third_consecutive_failure_and_recovers() -> None:
    cfg = BridgeConfig()
    h = harness(cfg=cfg)
    h.providers.on(Rail.STRIPE_INSTANT, DOWN, DOWN, DOWN)
    rails_used = []
    for i in range(3):
        r = result_of(h.run(payment(request_id=f"card-{i}")))
        assert isinstance(r, Settled)
        rails_used.append((r.rail, r.rail_substitution))
        expected = BreakerState.OPEN if i == 2 else BreakerState.CLOSED
        assert h.breakers[Rail.STRIPE_INSTANT].state(h.clock.wall_ms) is expected, i
    assert rails_used == [(Rail.WISE, RailSubstitution.PRIMARY_FAILED)] * 3  # each tried the primary, failed over
    # open: the next payment goes straight to the fallback, the primary is not called
    calls_before = len(h.providers.calls)
    r = result_of(h.run(payment(request_id="card-3")))
    assert isinstance(r, Settled) and r.rail is Rail.WISE
    assert (r.primary_rail, r.rail_substitution) == (Rail.STRIPE_INSTANT, RailSubstitution.PRIMARY_CIRCUIT_OPEN)
    assert h.providers.calls[calls_before:] == [("payout", Rail.WISE)]
    # after the cool-down: one probe goes to the primary; it succeeds and closes the breaker
    h.clock.advance(30_000)
    assert h.breakers[Rail.STRIPE_INSTANT].state(h.clock.wall_ms) is BreakerState.HALF_OPEN
    h.book = fx_book(at_ms=h.clock.wall_ms)
    r = result_of(h.run(payment(request_id="card-4")))
    assert isinstance(r, Settled) and r.rail is Rail.STRIPE_INSTANT and r.rail_substitution is None
    assert h.breakers[Rail.STRIPE_INSTANT].state(h.clock.wall_ms) is BreakerState.CLOSED
    assert all(h.providers.count(f"BRIDGE-card-{i}") == 1 for i in range(5))


# --------------------------------------------------------------------------- rail substitution


def rails_with_adapters(*providers: Provider) -> frozenset[Rail]:
    """The enabled rails of a deployment with adapters for ``providers`` (as the runner derives them)."""
    return frozenset(r for r, spec in RAILS.items() if spec.provider in providers)


def test_a_region_without_an_adapter_for_its_primary_pays_over_a_fallback_and_says_so() -> None:
    adapters = (Provider.STRIPE, Provider.WISE, Provider.PAYPAL, Provider.TOSS, Provider.ALIPAY)  # no PayPay
    h = harness(book=fx_book("22.5", Currency.JPY), cfg=BridgeConfig(enabled_rails=rails_with_adapters(*adapters)))
    r = result_of(h.run(payment(amount_minor=15_000, ccy=Currency.JPY, region=Region.JP, quoted="22.5")))
    assert isinstance(r, Settled) and r.rail is Rail.WISE
    assert (r.primary_rail, r.rail_substitution) == (Rail.PAYPAY_BUSINESS, RailSubstitution.PRIMARY_NOT_CONFIGURED)
    assert h.providers.calls == [("payout", Rail.WISE)]


def test_a_currency_other_than_the_regions_never_goes_to_the_primary() -> None:
    h = harness(book=fx_book("0.12", Currency.GBP))
    r = result_of(h.run(payment(amount_minor=15_000, ccy=Currency.GBP, region=Region.EU, quoted="0.12")))
    assert isinstance(r, Settled) and r.rail is Rail.WISE
    assert (r.primary_rail, r.rail_substitution) == (Rail.STRIPE_SEPA, RailSubstitution.CURRENCY_NOT_ON_PRIMARY)


def test_a_recovered_payout_keeps_the_substitution_decided_when_it_was_routed() -> None:
    h = harness()
    for _ in range(3):
        h.breakers[Rail.STRIPE_INSTANT] = h.breakers[Rail.STRIPE_INSTANT].on_failure(T0)
    intent = _intent_then_crash(h, payment())
    assert (intent.rail, intent.substitution) == (Rail.WISE, RailSubstitution.PRIMARY_CIRCUIT_OPEN)
    h.providers.payout(intent)
    h.clock.advance(120_000)  # restart: the primary's breaker has cooled down since, the payout was decided
    (step,) = b.recover([intent], h.clock.now())
    r = result_of(h.drive(step))
    assert isinstance(r, Settled) and r.rail is Rail.WISE
    assert r.rail_substitution is RailSubstitution.PRIMARY_CIRCUIT_OPEN


# --------------------------------------------------------------------------- duplicates


def test_duplicate_request_returns_the_original_result() -> None:
    h = harness()
    p = payment()
    first = result_of(h.run(p))
    finished = {first.request_id: first}
    dup = b.admit(p, finished, set())
    assert isinstance(dup, Duplicate) and dup.result is first and dup.same_payload
    changed = b.admit(payment(amount_minor=99), finished, set())
    assert isinstance(changed, Duplicate) and changed.result is first and not changed.same_payload
    assert isinstance(b.admit(payment(request_id="other"), finished, set()), New)
    assert isinstance(b.admit(payment(request_id="card-2"), finished, {"card-2"}), InFlight)
    assert h.providers.count("BRIDGE-card-1") == 1


def test_failed_request_duplicate_returns_the_original_failure() -> None:
    h = harness(balance=0)
    first = result_of(h.run(payment()))
    dup = b.admit(payment(), {first.request_id: first}, ())
    assert isinstance(dup, Duplicate) and isinstance(dup.result, Rejected)


@pytest.mark.parametrize("balance", [10_000 * K, 0], ids=["settled", "rejected"])
def test_only_another_record_with_the_same_request_id_is_answered_as_a_repeat(balance: int) -> None:
    first = result_of(harness(balance=balance).run(payment(origin="3:17")))
    assert first.origin == "3:17"
    assert not b.is_repeat(payment(origin="3:17"), first)  # its own record read again: maybe never answered
    assert b.is_repeat(payment(origin="3:18"), first)  # a repeated request
    assert b.is_repeat(payment(origin="4:17"), first)  # another partition's record (a producer's own partitioner)
    assert not b.is_repeat(payment(), first)  # the asker's origin unknown: never hide a first answer
    assert not b.is_repeat(payment(origin="3:18"), replace(first, origin=None))  # the result's unknown (old entry)


# --------------------------------------------------------------------------- recovery after a crash


def _intent_then_crash(h: Harness, p: CardPayment) -> PayoutIntent:
    """Run up to the persisted intent; the 'worker' dies before seeing the provider's answer."""
    step = b.begin(p, h.ledger.available_units(p.payer_account_id), h.clock.now(), h.cfg)
    hold = step.effects[0]
    assert isinstance(hold, PlaceHold)
    h.ledger.apply_hold(hold)
    step = b.on_hold(step.tx, True, "", h.clock.now())
    step = b.convert(step.tx, h.book, h.clock.now(), h.cfg)
    step = b.route(step.tx, h.breakers, h.clock.now(), h.cfg)
    (intent,) = step.effects
    assert isinstance(intent, PayoutIntent)
    return intent


def test_crash_after_the_provider_paid_recovers_with_exactly_one_payout() -> None:
    h = harness()
    intent = _intent_then_crash(h, payment())
    h.providers.payout(intent)  # the call went out and the provider paid; the process died before the result
    h.clock.advance(120_000)  # restart much later: the 5 s lock is long gone, the intent still stands
    (step,) = b.recover([intent], h.clock.now())
    r = result_of(h.drive(step))
    assert isinstance(r, Settled) and r.kaus_debited_units == 1_000 * K
    assert h.providers.count("BRIDGE-card-1") == 1
    assert h.providers.calls == [("payout", Rail.STRIPE_INSTANT), ("lookup", Rail.STRIPE_INSTANT)]
    assert h.ledger.pending() == []


def test_crash_before_the_provider_call_recovers_by_resending_the_same_key() -> None:
    h = harness()
    intent = _intent_then_crash(h, payment())  # persisted, never sent
    h.clock.advance(120_000)
    (step,) = b.recover([intent], h.clock.now())
    r = result_of(h.drive(step))
    assert isinstance(r, Settled)
    assert h.providers.calls == [("lookup", Rail.STRIPE_INSTANT), ("payout", Rail.STRIPE_INSTANT)]
    assert h.providers.count("BRIDGE-card-1") == 1


def test_recovering_twice_never_pays_twice() -> None:
    h = harness()
    intent = _intent_then_crash(h, payment())
    for _ in range(2):  # e.g. the worker died again during the first recovery
        (step,) = b.recover([intent], h.clock.now())
        result_of(h.drive(step))
    assert h.providers.count("BRIDGE-card-1") == 1
    assert h.ledger.balances[PAYER] == 10_000 * K - 1_000 * K + 30 * K  # ledger ops are idempotent by id


# --------------------------------------------------------------------------- invariants under random failures

BEHAVIOURS = st.sampled_from([OK, DOWN, DECLINE, LOST_RESPONSE, LOST_REQUEST])


@settings(max_examples=200, deadline=None)
@given(
    stripe=st.lists(BEHAVIOURS, max_size=3),
    wise=st.lists(BEHAVIOURS, max_size=3),
    paypal=st.lists(BEHAVIOURS, max_size=3),
    lookups=st.lists(st.sampled_from([OK, DOWN]), max_size=4),
    post_fails=st.booleans(),
    posts_unanswered=st.integers(0, 5),
)
def test_no_kaus_stays_locked_and_the_merchant_is_paid_at_most_once(
    stripe: list[str], wise: list[str], paypal: list[str], lookups: list[str], post_fails: bool, posts_unanswered: int
) -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, *stripe).on(Rail.WISE, *wise).on(Rail.PAYPAL, *paypal)
    h.providers.lookup_script.extend(lookups)
    h.ledger.unanswered_posts = posts_unanswered
    if post_fails:
        h.ledger.refuse_post = "expired"
    step = h.run(payment())
    paid = h.providers.count("BRIDGE-card-1")
    assert paid <= 1
    done = [e for e in h.effects if isinstance(e, Done)]
    if step.tx.stage is b.Stage.PARKED:
        assert not done and len(h.ledger.pending()) == 1
        return
    (d,) = done
    assert h.ledger.pending() == []
    flags = [e for e in h.effects if isinstance(e, FlagForReconciliation)]
    if isinstance(d.result, Settled):
        assert paid == 1  # paid means settled: a payout is never followed by a failure
        captured = h.ledger.balances.get("bridge:settlement", 0)
        assert captured == (0 if flags else d.result.kaus_debited_units)
        assert [f.kaus_units for f in flags] == ([d.result.kaus_debited_units] if post_fails else [])
    else:
        assert d.result.hold_voided or d.result.failed_phase is Phase.BALANCE_LOCK
        assert paid == 0 and not flags
        assert h.ledger.balances[PAYER] == 10_000 * K


def test_step_functions_refuse_transitions_out_of_order() -> None:
    h = harness()
    step = b.begin(payment(), 10_000 * K, h.clock.now(), h.cfg)
    with pytest.raises(AssertionError, match="not allowed"):
        b.convert(step.tx, h.book, h.clock.now(), h.cfg)


def test_a_remote_ledger_decides_the_hold_and_keeps_its_refusal_code() -> None:
    cfg = BridgeConfig()
    clock = Clock()
    step = b.begin(payment(), None, clock.now(), cfg)  # balance unknown here: the ledger will check it
    [hold] = step.effects
    assert isinstance(hold, PlaceHold) and hold.amount_units > 0
    refused = result_of(b.on_hold(step.tx, False, "INSUFFICIENT_FUNDS: 1 available", clock.now(), "INSUFFICIENT_FUNDS"))
    assert isinstance(refused, Rejected) and refused.reason_code is ReasonCode.INSUFFICIENT_FUNDS
    other = result_of(b.on_hold(step.tx, False, "no account", clock.now(), "UNKNOWN_DEBIT_ACCOUNT"))
    assert isinstance(other, Rejected) and other.reason_code is ReasonCode.HOLD_REJECTED
    assert not refused.hold_voided and not other.hold_voided  # nothing was held, so nothing to void
