"""Multi-sig governance (spec §4.2): the matrix at its exact boundaries, the canonical hash, every refusal, the
lifecycle and what each operation executes (domain.governance), and the service's messages
(streams.security.governance) — with real ECDSA P-256 signatures."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

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
    PLATFORM_DEADLETTERS,
)
from domain import governance as g
from domain.governance import GovernanceCode as Code
from domain.governance import Operation as Op
from domain.governance import State
from streams.alerting.agent import observations
from streams.security import governance as svc

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
K = 1_000_000
DEPLOYMENT = "nexus-x-test"
H = timedelta(hours=1)


class Signers:
    def __init__(self, count: int = 5) -> None:
        self.keys = {f"s{i}": ec.generate_private_key(ec.SECP256R1()) for i in range(1, count + 1)}

    @property
    def public(self) -> dict[str, str]:
        return {sid: svc.public_key_pem(key) for sid, key in self.keys.items()}

    def approval(self, gov: g.Governance, signer: str, request_id: str, over: str | None = None) -> g.Approval:
        """``signer``'s approval of ``request_id``, signing ``over`` (default: the request's own hash)."""
        digest = over or gov.requests[request_id].request_hash
        return g.Approval(request_id, signer, digest, svc.sign_hash(self.keys[signer], digest), T0)


@pytest.fixture(scope="module")
def signers() -> Signers:
    return Signers()


def new_gov(signers: Signers, **config: Any) -> g.Governance:
    return g.Governance(g.Config(DEPLOYMENT, **config), signers.public, svc.verify_signature, svc.key_valid)


def request(
    rid: str = "r1",
    op: Op = Op.TREASURY_TRANSFER,
    amount: int = 1_000 * K,
    nonce: int = 1,
    expires: datetime = T0 + 7 * 24 * H,
    params: dict[str, str] | None = None,
    **more: str,
) -> g.Request:
    params = {**(params or {}), **more}
    if op in g.TRANSFERS:
        params = {"from_account": "treasury", "to_account": "ops", **params}
    return g.Request(rid, op, amount, params, nonce, expires, "alice", T0)


def refusals(events: list[g.Event]) -> list[Code]:
    return [e.code for e in events if isinstance(e, g.Refused)]


def sign(gov: g.Governance, signers: Signers, rid: str, *who: str, at: datetime = T0) -> list[g.Event]:
    out: list[g.Event] = []
    for s in who:
        out.extend(gov.approve(signers.approval(gov, s, rid), at))
    return out


def of(events: list[g.Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize(
    ("kaus", "tier", "signatures", "hours"),
    [
        ("0.000001", "STANDARD", 3, 24),
        ("49999.999999", "STANDARD", 3, 24),
        ("50000", "ELEVATED", 4, 48),
        ("50000.000001", "ELEVATED", 4, 48),
        ("499999.999999", "ELEVATED", 4, 48),
        ("500000", "ELEVATED", 4, 48),
        ("500000.000001", "SOVEREIGN", 5, 48),
        ("1000000000", "SOVEREIGN", 5, 48),
    ],
)
def test_the_matrix_at_its_exact_boundaries(kaus: str, tier: str, signatures: int, hours: int) -> None:
    policy = g.policy_for(Op.TREASURY_TRANSFER, g.kaus_units(kaus), {})
    assert (policy.tier, policy.required_signers, policy.timelock) == (tier, signatures, timedelta(hours=hours))


def test_boundaries_in_base_units() -> None:
    assert g.tier_for_amount(50_000 * K - 1) is g.STANDARD
    assert g.tier_for_amount(50_000 * K) is g.ELEVATED
    assert g.tier_for_amount(500_000 * K) is g.ELEVATED
    assert g.tier_for_amount(500_000 * K + 1) is g.SOVEREIGN


def test_amounts_are_exact_or_refused() -> None:
    assert g.kaus_units("49,999.999999") == 49_999_999_999
    for bad in ("1.0000001", "-1", "NaN", "abc", "Infinity"):
        with pytest.raises(ValueError):
            g.kaus_units(bad)


def test_pause_unpause_and_ceremonies() -> None:
    assert g.policy_for(Op.PAUSE, 0, {}) == g.Policy("EMERGENCY", 2, timedelta(0))
    assert g.policy_for(Op.UNPAUSE, 0, {}) == g.Policy("UNPAUSE", 3, timedelta(0))
    assert g.policy_for(Op.KEY_CEREMONY, 0, {"ceremony": "ROTATE"}).required_signers == 3
    assert g.policy_for(Op.KEY_CEREMONY, 0, {"ceremony": "ROTATE"}).timelock == timedelta(0)
    assert g.policy_for(Op.KEY_CEREMONY, 0, {"ceremony": "DESTROY"}).timelock == 48 * H
    # Others by amount: a parameter change naming a large amount needs the sovereign tier.
    assert g.policy_for(Op.PARAMETER_CHANGE, 0, {}).required_signers == 3
    assert g.policy_for(Op.PARAMETER_CHANGE, 600_000 * K, {}).required_signers == 5


@pytest.mark.parametrize(("kaus", "needed"), [("49999.999999", 3), ("50000", 4), ("500000", 4), ("500000.000001", 5)])
def test_a_request_needs_its_tiers_signatures(signers: Signers, kaus: str, needed: int) -> None:
    gov = new_gov(signers)
    gov.submit(request(amount=g.kaus_units(kaus)), T0)
    ids = list(signers.keys)
    sign(gov, signers, "r1", *ids[: needed - 1])
    assert gov.requests["r1"].state is State.PENDING
    sign(gov, signers, "r1", ids[needed - 1], at=T0 + H)
    t = gov.requests["r1"]
    hours = 24 if needed == 3 else 48
    assert (t.state, t.timelock_until) == (State.APPROVED, T0 + H + timedelta(hours=hours))


def test_enums_match_the_contract() -> None:
    assert {o.value for o in Op} == {o.value for o in m.GovernanceOperation}
    assert {s.value for s in State} == {s.value for s in m.MultisigState}


# --------------------------------------------------------------------------- the canonical hash


def test_the_hash_is_stable() -> None:
    """A fixed vector: another implementation of docs/governance.md's encoding must reach the same value."""
    r = g.Request("req-1", Op.TREASURY_TRANSFER, 1_000_000_000, {"to_account": "ops", "from_account": "treasury"},
                  7, datetime(2026, 12, 8, tzinfo=UTC), "alice", datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip
    assert g.request_hash(r, "nexus-x-local") == VECTOR
    assert g.request_hash(r, "nexus-x-local") == g.request_hash(r, "nexus-x-local")


VECTOR = "0xb21e529dc3d0696286bfdd41299e6c8bc7c4cf5e11fa79c394066f4e2a50cf86"  # docs/governance.md's example


def test_the_hash_is_domain_separated_and_covers_every_field() -> None:
    base = request(reason="quarterly")
    digest = g.request_hash(base, DEPLOYMENT)
    assert digest.startswith("0x") and len(digest) == 66 and int(digest, 16) >= 0
    assert g.request_hash(base, "another-deployment") != digest
    variants = [
        replace(base, request_id="r2"),
        replace(base, operation=Op.LEDGER_CORRECTION),
        replace(base, amount_units=base.amount_units + 1),
        replace(base, params={**base.params, "to_account": "other"}),
        replace(base, params={**base.params, "reason": "x"}),
        replace(base, nonce=base.nonce + 1),
        replace(base, expires_at=base.expires_at + timedelta(microseconds=1)),
        replace(base, requested_by="bob"),
        replace(base, created_at=base.created_at + timedelta(microseconds=1)),
    ]
    hashes = {g.request_hash(v, DEPLOYMENT) for v in variants}
    assert len(hashes) == len(variants) and digest not in hashes
    # The params' order in the message does not matter (they are sorted by key).
    reordered = replace(base, params=dict(reversed(list(base.params.items()))))
    assert g.request_hash(reordered, DEPLOYMENT) == digest


# --------------------------------------------------------------------------- refusals


def test_a_signature_from_a_non_signer_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request(), T0)
    outsider = ec.generate_private_key(ec.SECP256R1())
    digest = gov.requests["r1"].request_hash
    events = gov.approve(g.Approval("r1", "mallory", digest, svc.sign_hash(outsider, digest), T0), T0)
    assert refusals(events) == [Code.NOT_A_SIGNER]
    published = of(events, g.Published)[0]
    assert (published.reason_code, published.tracked.signatures) == (Code.NOT_A_SIGNER, {})
    assert [a.action for a in of(events, g.Audited)] == ["GOVERNANCE_REFUSED_NOT_A_SIGNER"]


def test_a_repeated_signer_counts_once(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request(), T0)
    first = signers.approval(gov, "s1", "r1")
    gov.approve(first, T0)
    assert gov.approve(first, T0) == []  # the same approval delivered again: nothing happens
    second = signers.approval(gov, "s1", "r1")  # a new signature by the same signer (ECDSA is randomised)
    assert refusals(gov.approve(second, T0)) == [Code.DUPLICATE_SIGNER]
    sign(gov, signers, "r1", "s2")
    assert (gov.requests["r1"].state, len(gov.requests["r1"].signatures)) == (State.PENDING, 2)


def test_a_signature_over_another_requests_hash_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request("r1", nonce=1), T0)
    gov.submit(request("r2", nonce=2), T0)
    other = gov.requests["r2"].request_hash
    assert refusals(gov.approve(signers.approval(gov, "s1", "r1", over=other), T0)) == [Code.WRONG_HASH]
    assert gov.requests["r1"].signatures == {}


def test_a_bad_signature_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request(), T0)
    digest = gov.requests["r1"].request_hash
    by_s2 = svc.sign_hash(signers.keys["s2"], digest)
    assert refusals(gov.approve(g.Approval("r1", "s1", digest, by_s2, T0), T0)) == [Code.BAD_SIGNATURE]
    junk = base64.b64encode(b"not a signature").decode()
    assert refusals(gov.approve(g.Approval("r1", "s3", digest, junk, T0), T0)) == [Code.BAD_SIGNATURE]
    assert gov.requests["r1"].signatures == {}


def test_a_replayed_nonce_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request("r1", nonce=42), T0)
    events = gov.submit(request("r2", nonce=42, amount=5 * K), T0)
    assert refusals(events) == [Code.NONCE_REPLAYED]
    t = gov.requests["r2"]
    assert (t.state, t.reason_code) == (State.REJECTED, Code.NONCE_REPLAYED)
    assert refusals(sign(gov, signers, "r2", "s1")) == [Code.ALREADY_FINAL]
    assert gov.requests["r1"].state is State.PENDING


def test_an_expired_request_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    late = gov.submit(request("r0", expires=T0), T0)  # expired on arrival (expires_at is exclusive)
    assert refusals(late) == [Code.EXPIRED] and gov.requests["r0"].state is State.REJECTED
    gov.submit(request("r1", nonce=2, expires=T0 + 30 * H), T0)
    sign(gov, signers, "r1", "s1", "s2")
    events = gov.approve(signers.approval(gov, "s3", "r1"), T0 + 30 * H)
    assert Code.EXPIRED in refusals(events)
    t = gov.requests["r1"]
    assert (t.state, t.reason_code, len(t.signatures)) == (State.EXPIRED, Code.EXPIRED, 2)


def test_an_approved_request_expires_if_not_executed(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request(expires=T0 + 25 * H), T0)
    sign(gov, signers, "r1", "s1", "s2", "s3", at=T0 + 2 * H)  # timelock ends at T0 + 26 h, after the expiry
    events = gov.tick(T0 + 25 * H)
    assert of(events, g.TransferOrdered) == [] and gov.requests["r1"].state is State.EXPIRED
    assert [a.action for a in of(events, g.Audited)] == ["GOVERNANCE_EXPIRED"]


def test_a_request_that_cannot_outlive_its_timelock_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    events = gov.submit(request(expires=T0 + 24 * H), T0)
    assert refusals(events) == [Code.INVALID_REQUEST] and "timelock" in of(events, g.Refused)[0].reason


def test_an_execution_before_the_timelock_ends_is_refused(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request(), T0)
    assert refusals(gov.execute("r1", T0)) == [Code.INVALID_REQUEST]  # not approved yet
    sign(gov, signers, "r1", "s1", "s2", "s3")
    until = T0 + 24 * H
    early = gov.execute("r1", until - timedelta(microseconds=1))
    assert refusals(early) == [Code.TIMELOCK_NOT_ENDED] and of(early, g.TransferOrdered) == []
    assert gov.tick(until - timedelta(microseconds=1)) == []
    assert gov.requests["r1"].state is State.APPROVED
    (ordered,) = of(gov.execute("r1", until), g.TransferOrdered)  # the timelock's end itself is executable
    assert ordered.command_id == "GOV:r1"


def test_unknown_requests_already_final_and_invalid_ones(signers: Signers) -> None:
    gov = new_gov(signers, unknown_request_wait=timedelta(seconds=60))
    ghost = g.Approval("ghost", "s1", "0x" + "ab" * 32, "AAAAAAAA", T0)
    assert gov.approve(ghost, T0) == []  # waits: its request may not have been read yet
    assert refusals(gov.tick(T0 + timedelta(seconds=59))) == []
    assert refusals(gov.tick(T0 + timedelta(seconds=60))) == [Code.UNKNOWN_REQUEST]
    assert gov.parked == {}
    assert refusals(gov.execute("nope", T0)) == [Code.UNKNOWN_REQUEST]
    for bad in (
        request("b1", Op.PAYOUT_APPROVAL, nonce=11),  # no payout_id
        request("b6", nonce=16, typo_account="x"),
        request("b2", Op.PAUSE, amount=5, nonce=12),
        request("b3", Op.TREASURY_TRANSFER, amount=0, nonce=13),
        request("b4", Op.KEY_CEREMONY, amount=0, nonce=14, ceremony="SHRED"),
        request("b5", nonce=15, from_account="same", to_account="same"),
    ):
        assert refusals(gov.submit(bad, T0)) == [Code.INVALID_REQUEST], bad
    gov.submit(request("r1", nonce=20), T0)
    clash = gov.submit(request("r1", nonce=21, amount=7 * K), T0)  # same id, other content
    assert refusals(clash) == [Code.INVALID_REQUEST] and of(clash, g.Published) == []
    assert gov.submit(request("r1", nonce=20), T0) == []  # the same request again
    assert gov.requests["r1"].request.amount_units == 1_000 * K


def test_an_approval_read_before_its_request_counts(signers: Signers) -> None:
    gov = new_gov(signers)
    r = request()
    digest = g.request_hash(r, DEPLOYMENT)
    early = g.Approval("r1", "s1", digest, svc.sign_hash(signers.keys["s1"], digest), T0)
    assert gov.approve(early, T0) == []
    gov.submit(r, T0 + timedelta(seconds=1))
    assert list(gov.requests["r1"].signatures) == ["s1"] and gov.parked == {}


# --------------------------------------------------------------------------- execution


def test_a_transfer_executes_once_the_ledger_applies_it(signers: Signers) -> None:
    gov = new_gov(signers, resend_after=timedelta(minutes=1))
    gov.submit(request(reason="fund ops"), T0)
    sign(gov, signers, "r1", "s1", "s2", "s3")
    until = T0 + 24 * H
    (ordered,) = of(gov.tick(until), g.TransferOrdered)
    assert ordered == g.TransferOrdered("GOV:r1", "r1", "treasury", "ops", 1_000 * K, "fund ops", until)
    assert gov.tick(until + timedelta(seconds=59)) == []
    (again,) = of(gov.tick(until + timedelta(minutes=1)), g.TransferOrdered)  # no outcome yet: sent again
    assert again == ordered  # same command id and time: the ledger applies it once
    assert gov.tick(until + 60 * 24 * H) == [ordered]  # under way: it does not expire, it is sent again
    assert gov.requests["r1"].state is State.APPROVED
    done = gov.finished("r1", True, None, until + timedelta(minutes=2))
    assert gov.requests["r1"].state is State.EXECUTED
    assert [a.action for a in of(done, g.Audited)] == ["GOVERNANCE_EXECUTED"]
    assert gov.finished("r1", True, None, until) == []  # a repeated outcome
    assert refusals(gov.execute("r1", until)) == [Code.ALREADY_FINAL]


def test_a_transfer_the_ledger_refuses_fails(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request(), T0)
    sign(gov, signers, "r1", "s1", "s2", "s3")
    gov.tick(T0 + 24 * H)
    events = gov.finished("r1", False, "the ledger refused the transfer: INSUFFICIENT_FUNDS", T0 + 25 * H)
    t = gov.requests["r1"]
    assert (t.state, t.reason_code) == (State.REJECTED, Code.EXECUTION_FAILED)
    assert refusals(events) == [Code.EXECUTION_FAILED] and "INSUFFICIENT_FUNDS" in (t.reason or "")


def test_emergency_pause_is_immediate_with_two_and_unpause_needs_three(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request("p", Op.PAUSE, amount=0, nonce=1, reason="provider breach"), T0)
    assert of(sign(gov, signers, "p", "s1"), g.PauseSet) == []
    events = sign(gov, signers, "p", "s2")
    assert of(events, g.PauseSet) == [g.PauseSet(True, "p", "provider breach", T0)]
    assert gov.requests["p"].state is State.EXECUTED
    assert "GOVERNANCE_PAUSED" in [a.action for a in of(events, g.Audited)]
    gov.submit(request("u", Op.UNPAUSE, amount=0, nonce=2), T0 + H)
    assert of(sign(gov, signers, "u", "s1", "s2", at=T0 + H), g.PauseSet) == []
    events = sign(gov, signers, "u", "s3", at=T0 + H)
    assert of(events, g.PauseSet) == [g.PauseSet(False, "u", "", T0 + H)]
    assert "GOVERNANCE_UNPAUSED" in [a.action for a in of(events, g.Audited)]


def test_a_signer_change_changes_the_set_and_recounts(signers: Signers) -> None:
    gov = new_gov(signers)
    newcomer = ec.generate_private_key(ec.SECP256R1())
    params = {"action": "REPLACE", "signer_id": "s6", "replaces": "s1", "public_key_pem": svc.public_key_pem(newcomer)}
    gov.submit(request("sc", Op.SIGNER_CHANGE, amount=0, nonce=1, params=params), T0)
    gov.submit(request("t", nonce=2), T0)
    sign(gov, signers, "t", "s1", "s2", "s3", at=T0 + H)
    assert gov.requests["t"].state is State.APPROVED
    sign(gov, signers, "sc", "s2", "s3", "s4")
    events = gov.tick(T0 + 24 * H)
    assert sorted(gov.signers) == ["s2", "s3", "s4", "s5", "s6"]
    assert of(events, g.SignersChanged)[0].signers == gov.signers
    t = gov.requests["t"]  # s1's signature no longer counts: back to PENDING
    assert (t.state, sorted(t.signatures), t.timelock_until) == (State.PENDING, ["s2", "s3"], None)
    assert "GOVERNANCE_QUORUM_LOST" in [a.action for a in of(events, g.Audited)]
    digest = t.request_hash
    events = gov.approve(g.Approval("t", "s6", digest, svc.sign_hash(newcomer, digest), T0), T0 + 25 * H)
    assert gov.requests["t"].state is State.APPROVED
    assert refusals(sign(gov, signers, "t", "s1")) == [Code.NOT_A_SIGNER]


def test_signer_changes_keep_the_set_between_five_and_seven(signers: Signers) -> None:
    gov = new_gov(signers)
    remove = request("rm", Op.SIGNER_CHANGE, amount=0, nonce=1, action="REMOVE", signer_id="s1")
    assert refusals(gov.submit(remove, T0)) == [Code.INVALID_REQUEST]
    bad_key = request("bk", Op.SIGNER_CHANGE, amount=0, nonce=2, action="ADD", signer_id="s9", public_key_pem="x")
    assert refusals(gov.submit(bad_key, T0)) == [Code.INVALID_REQUEST]


def test_a_parameter_change_publishes_its_value_once_executed(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request("pc", Op.PARAMETER_CHANGE, amount=0, nonce=1, name="cashback.bps.GOLD", value="350"), T0)
    gov.submit(request("kc", Op.KEY_CEREMONY, amount=0, nonce=2, ceremony="ROTATE", purpose="SIGNING"), T0)
    assert of(sign(gov, signers, "pc", "s1", "s2", "s3"), g.ParameterSet) == []  # nothing before its timelock
    assert of(gov.tick(T0 + 24 * H - timedelta(microseconds=1)), g.ParameterSet) == []
    executed = gov.tick(T0 + 24 * H)
    assert of(executed, g.ParameterSet) == [g.ParameterSet("cashback.bps.GOLD", 350, "pc", T0 + 24 * H)]
    assert of(executed, g.Audited)[0].action == "GOVERNANCE_EXECUTED"
    assert gov.requests["pc"].state is State.EXECUTED
    assert of(gov.tick(T0 + 48 * H), g.ParameterSet) == []  # once
    (ceremony,) = of(sign(gov, signers, "kc", "s1", "s2", "s3"), g.CeremonyOrdered)  # immediate
    assert (ceremony.ceremony, ceremony.params["purpose"]) == (g.Ceremony.ROTATE, "SIGNING")
    assert gov.requests["kc"].state is State.APPROVED  # under way until the key manager reports
    gov.finished("kc", True, None, T0)
    assert gov.requests["kc"].state is State.EXECUTED


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("fee_bps", "25", "'fee_bps' is not a platform parameter"),
        ("cashback.bps.GOLD", "10001", "cashback.bps.GOLD must be from 0 to 10000, not 10001"),
        ("fx.slippage_limit_bps", "0", "fx.slippage_limit_bps must be from 1 to 9999, not 0"),
        ("payouts.auto_approval_limit_kaus_units", "5e9", "takes a whole number (decimal digits), not '5e9'"),
        ("cashback.bps.GOLD", "-1", "takes a whole number"),
    ],
)
def test_a_parameter_change_the_platform_cannot_apply_is_refused_on_arrival(
    signers: Signers, name: str, value: str, words: str
) -> None:
    gov = new_gov(signers)
    events = gov.submit(request("pc", Op.PARAMETER_CHANGE, amount=0, nonce=1, name=name, value=value), T0)
    assert refusals(events) == [Code.INVALID_REQUEST]
    [refused] = of(events, g.Refused)
    assert words in refused.reason
    assert gov.requests["pc"].state is State.REJECTED and 1 not in gov.nonces  # the nonce stays free
    assert of(events, g.ParameterSet) == []


def test_a_parameter_change_accepted_before_its_range_narrowed_fails_at_execution(
    signers: Signers, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = new_gov(signers)
    gov.submit(request("pc", Op.PARAMETER_CHANGE, amount=0, nonce=1, name="cashback.bps.GOLD", value="900"), T0)
    sign(gov, signers, "pc", "s1", "s2", "s3")
    gold = g.parameters.PARAMETERS["cashback.bps.GOLD"]
    monkeypatch.setitem(g.parameters.PARAMETERS, gold.name, replace(gold, maximum=500))
    events = gov.tick(T0 + 24 * H)
    assert of(events, g.ParameterSet) == [] and refusals(events) == [Code.EXECUTION_FAILED]
    assert gov.requests["pc"].state is State.REJECTED


def test_the_service_publishes_an_executed_parameter_change_keyed_by_its_name(signers: Signers) -> None:
    service = svc.GovernanceService(g.Config(DEPLOYMENT), signers.public)
    event = g.ParameterSet("fx.slippage_limit_bps", 45, "gov-7", T0)
    [(topic, setting)] = service.outputs([event], T0)
    assert topic is GOVERNANCE_PARAMETERS
    assert setting == m.ParameterSetting(name="fx.slippage_limit_bps", value="45", request_id="gov-7", updated_at=T0)
    assert GOVERNANCE_PARAMETERS.key_of(setting) == b"fx.slippage_limit_bps"


def test_timelock_scale_shortens_timelocks_only(signers: Signers) -> None:
    gov = new_gov(signers, timelock_scale=Decimal("0.0001"))
    gov.submit(request(amount=60_000 * K), T0)
    sign(gov, signers, "r1", "s1", "s2", "s3")
    assert gov.requests["r1"].state is State.PENDING  # still 4 signatures
    sign(gov, signers, "r1", "s4")
    assert gov.requests["r1"].timelock_until == T0 + timedelta(seconds=17.28)  # 48 h x 0.0001


def test_state_round_trips_and_the_lifecycle_goes_on(signers: Signers) -> None:
    gov = new_gov(signers)
    gov.submit(request("r1", nonce=1), T0)
    gov.submit(request("r2", nonce=2, reason="b"), T0)
    sign(gov, signers, "r1", "s1", "s2", "s3")
    sign(gov, signers, "r2", "s1")
    gov.approve(g.Approval("later", "s1", "0x" + "00" * 32, "AAAAAAAA", T0), T0)
    saved = json.loads(json.dumps(gov.to_dict()))
    again = new_gov(signers)
    again.load(saved)
    assert again.to_dict() == gov.to_dict()
    assert refusals(again.submit(request("r3", nonce=1), T0)) == [Code.NONCE_REPLAYED]
    assert of(again.tick(T0 + 24 * H), g.TransferOrdered)[0].command_id == "GOV:r1"
    assert again.prune(T0 + 48 * H) == 1 and "r3" not in again.requests  # r3 was final (rejected)


# --------------------------------------------------------------------------- the service's messages


@pytest.fixture
def service(signers: Signers) -> Iterator[svc.GovernanceService]:
    yield svc.GovernanceService(g.Config(DEPLOYMENT), signers.public)


def _record(topic: Any, offset: int, key: bytes | None, value: bytes | None) -> svc.Record:
    return svc.Record(topic.name, 0, offset, key, value)


def _request_msg(rid: str = "r1", nonce: int = 1, **kw: Any) -> m.GovernanceRequest:
    base: dict[str, Any] = {
        "request_id": rid,
        "operation": "TREASURY_TRANSFER",
        "amount_kaus_units": 1_000 * K,
        "params": {"from_account": "treasury", "to_account": "ops"},
        "nonce": nonce,
        "expires_at": T0 + 7 * 24 * H,
        "requested_by": "alice",
        "created_at": T0,
    }
    return m.GovernanceRequest.model_validate({**base, **kw})


def test_the_service_publishes_audits_and_executes(service: svc.GovernanceService, signers: Signers) -> None:
    msg = _request_msg()
    out = service.handle(_record(GOVERNANCE_REQUESTS, 0, b"r1", GOVERNANCE_REQUESTS.encode(msg)), T0)
    (pending,) = [v for t, v in out if t is GOVERNANCE_MULTISIG]
    assert (pending.state, pending.required_signers, pending.signatures) == (m.MultisigState.PENDING, 3, 0)
    assert pending.request_hash == g.request_hash(svc.to_request(msg), DEPLOYMENT)
    # The multi-sig-pending alert sees it: a PENDING entity whose reference is the request's creation.
    (entity,) = observations(GOVERNANCE_MULTISIG.decode(GOVERNANCE_MULTISIG.encode(pending)))
    assert (entity.signal, entity.reference) == ("multisig_pending", T0)  # type: ignore[union-attr]
    (audit,) = [v for t, v in out if t is AUDIT_RECORDS]
    assert (audit.audit_id, audit.action, audit.transaction_id) == ("AUDIT-GOV:r1:requested", "GOVERNANCE_REQUESTED",
                                                                    "r1")  # fmt: skip
    assert audit.details.kaus_amount == "1000.000000"
    for i, s in enumerate(("s1", "s2", "s3"), start=1):
        approval = m.GovernanceApproval(
            request_id="r1",
            signer_id=s,
            request_hash=pending.request_hash,
            signature=svc.sign_hash(signers.keys[s], pending.request_hash),
            signed_at=T0,
        )
        out = service.handle(_record(GOVERNANCE_APPROVALS, i, b"r1", GOVERNANCE_APPROVALS.encode(approval)), T0)
        for topic, value in out:
            topic.decode(topic.encode(value))  # every output is a valid message of its topic
    approved = [v for t, v in out if t is GOVERNANCE_MULTISIG][-1]
    assert (approved.state, approved.timelock_until) == (m.MultisigState.APPROVED, T0 + 24 * H)
    (transfer,) = [v for t, v in service.tick(T0 + 24 * H) if t is LEDGER_COMMANDS]
    assert (transfer.command_id, transfer.debit_account_id, transfer.amount_kaus_units) == ("GOV:r1", "treasury",
                                                                                            1_000 * K)  # fmt: skip
    outcome = m.LedgerOutcome(command_id="GOV:r1", command_type="GOVERNED_TRANSFER", status="APPLIED",
                              amount_kaus_units=1_000 * K, occurred_at=T0 + 24 * H)  # fmt: skip
    out = service.handle(_record(LEDGER_OUTCOMES, 0, b"GOV:r1", LEDGER_OUTCOMES.encode(outcome)), T0 + 24 * H)
    assert [v.state for t, v in out if t is GOVERNANCE_MULTISIG] == [m.MultisigState.EXECUTED]
    assert [v.action for t, v in out if t is AUDIT_RECORDS] == ["GOVERNANCE_EXECUTED"]
    assert service.offsets == {"governance.requests:0": 1, "governance.approvals:0": 4, "ledger.outcomes:0": 1}


def test_the_service_dead_letters_bad_records_and_skips_other_outcomes(service: svc.GovernanceService) -> None:
    out = service.handle(_record(GOVERNANCE_REQUESTS, 0, b"r1", b'{"request_id": "r1"}'), T0)
    assert [t for t, _ in out] == [PLATFORM_DEADLETTERS] and out[0][1].reason_code == "MISSING_FIELD"
    assert service.handle(_record(LEDGER_OUTCOMES, 1, b"hold-1", b"whatever"), T0) == []
    assert service.offsets["ledger.outcomes:0"] == 2


def test_pause_messages(service: svc.GovernanceService, signers: Signers) -> None:
    msg = _request_msg("p1", 5, operation="PAUSE", amount_kaus_units=0, params={"reason": "incident"})
    service.handle(_record(GOVERNANCE_REQUESTS, 0, b"p1", GOVERNANCE_REQUESTS.encode(msg)), T0)
    digest = service.core.requests["p1"].request_hash
    out: list[Any] = []
    for s in ("s1", "s2"):
        a = m.GovernanceApproval(request_id="p1", signer_id=s, request_hash=digest,
                                 signature=svc.sign_hash(signers.keys[s], digest), signed_at=T0)  # fmt: skip
        out = service.handle(_record(GOVERNANCE_APPROVALS, 0, b"p1", GOVERNANCE_APPROVALS.encode(a)), T0)
    (pause,) = [v for t, v in out if t is GOVERNANCE_PAUSE]
    assert (pause.paused, pause.request_id, pause.reason, pause.scope) == (True, "p1", "incident", "PLATFORM")
    assert "GOVERNANCE_PAUSED" in [v.action for t, v in out if t is AUDIT_RECORDS]


def test_audit_ids_fit_and_are_deterministic() -> None:
    assert svc.audit_id("r1:requested") == "AUDIT-GOV:r1:requested"
    long = svc.audit_id("x" * 128 + ":refused:s1:abcd")
    assert len(long) <= 128 and long == svc.audit_id("x" * 128 + ":refused:s1:abcd")


def test_signer_set_file(tmp_path: Path) -> None:
    from devtools.signers import generate

    path = generate(tmp_path / "gov")
    signers = svc.load_signers(path)
    assert sorted(signers) == [f"signer-{i}" for i in range(1, 6)]
    assert all((tmp_path / "gov" / f"signer-{i}.pem").stat().st_mode & 0o777 == 0o600 for i in range(1, 6))
    assert generate(tmp_path / "gov") and svc.load_signers(path) == signers  # existing keys are kept
    with pytest.raises(FileNotFoundError, match=r"devtools\.signers"):
        svc.load_signers(tmp_path / "none.json")


def test_key_ceremonies_call_the_key_manager_once_per_request(signers: Signers) -> None:
    calls: list[g.CeremonyOrdered] = []

    def ceremonies(event: g.CeremonyOrdered) -> None:
        calls.append(event)
        if event.ceremony is g.Ceremony.DESTROY:
            raise ValueError("nexus-signing-v2 is ACTIVE: only a RETIRED version can be destroyed")

    service = svc.GovernanceService(g.Config(DEPLOYMENT), signers.public, ceremonies=ceremonies)
    core = service.core
    bad = request("kx", Op.KEY_CEREMONY, amount=0, nonce=1, ceremony="DESTROY")  # which key?
    assert refusals(core.submit(bad, T0)) == [Code.INVALID_REQUEST]
    core.submit(request("rot", Op.KEY_CEREMONY, amount=0, nonce=2, ceremony="ROTATE", purpose="SIGNING"), T0)
    out = service.outputs(sign(core, signers, "rot", "s1", "s2", "s3"), T0)
    assert [(c.request_id, c.params["purpose"]) for c in calls] == [("rot", "SIGNING")]
    assert [v.state for t, v in out if t is GOVERNANCE_MULTISIG][-1] is m.MultisigState.EXECUTED
    core.submit(request("des", Op.KEY_CEREMONY, amount=0, nonce=3, ceremony="DESTROY", key_id="nexus-signing-v2"), T0)
    sign(core, signers, "des", "s1", "s2", "s3")
    out = service.tick(T0 + 48 * H)  # DESTROY waits out 48 h
    final = [v for t, v in out if t is GOVERNANCE_MULTISIG][-1]
    assert (final.state, final.reason_code) == (m.MultisigState.REJECTED, "EXECUTION_FAILED")
    assert "only a RETIRED version" in (final.reason or "") and len(calls) == 2
