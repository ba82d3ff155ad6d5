"""Multi-sig governance (spec §4.2) — the functional core: the approval matrix, the canonical request hash, and the
lifecycle of requests as a state machine (PENDING -> APPROVED -> executable after the timelock -> EXECUTED, or
REJECTED / EXPIRED with a reason).

Pure: no clock reads, no I/O, no framework. Signature checks are a function passed in (the shell verifies ECDSA
P-256 with `cryptography`). Money is exact K-AUS base units (1 K-AUS = 10^6 units). See docs/governance.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain import parameters
from domain.money import KAUS_UNITS_PER_TOKEN


class GovernanceCode(StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"  # the request cannot be executed as given (a param missing, ...)
    UNKNOWN_REQUEST = "UNKNOWN_REQUEST"  # a signature for a request never seen
    NOT_A_SIGNER = "NOT_A_SIGNER"  # the signer id is not in the signer set
    DUPLICATE_SIGNER = "DUPLICATE_SIGNER"  # this signer already signed this request
    WRONG_HASH = "WRONG_HASH"  # the signature is over another request's hash
    BAD_SIGNATURE = "BAD_SIGNATURE"  # the signature does not verify with the signer's public key
    NONCE_REPLAYED = "NONCE_REPLAYED"  # the nonce was used by another request
    EXPIRED = "EXPIRED"  # the request expired before it was executed
    TIMELOCK_NOT_ENDED = "TIMELOCK_NOT_ENDED"  # an execution before the timelock ends
    ALREADY_FINAL = "ALREADY_FINAL"  # executed, rejected or expired already
    EXECUTION_FAILED = "EXECUTION_FAILED"  # the approved operation failed when executed (e.g. the ledger refused)


class Operation(StrEnum):
    """The values of contracts.models.GovernanceOperation (the core cannot import contracts; a test ties them)."""

    TREASURY_TRANSFER = "TREASURY_TRANSFER"
    LEDGER_CORRECTION = "LEDGER_CORRECTION"
    PAYOUT_APPROVAL = "PAYOUT_APPROVAL"
    PARAMETER_CHANGE = "PARAMETER_CHANGE"
    SIGNER_CHANGE = "SIGNER_CHANGE"
    KEY_CEREMONY = "KEY_CEREMONY"
    PAUSE = "PAUSE"
    UNPAUSE = "UNPAUSE"


class State(StrEnum):
    """The values of contracts.models.MultisigState."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    EXECUTED = "EXECUTED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


FINAL = frozenset({State.EXECUTED, State.REJECTED, State.EXPIRED})
TRANSFERS = frozenset({Operation.TREASURY_TRANSFER, Operation.LEDGER_CORRECTION})

# --------------------------------------------------------------------------- the approval matrix (spec §4.2)

ELEVATED_FROM_UNITS = 50_000 * KAUS_UNITS_PER_TOKEN  # 50,000 K-AUS: first amount of the elevated tier
SOVEREIGN_ABOVE_UNITS = 500_000 * KAUS_UNITS_PER_TOKEN  # 500,000 K-AUS: last amount of the elevated tier
HOUR = timedelta(hours=1)
SIGNER_SET_MIN = 5  # the sovereign tier needs five distinct signers
SIGNER_SET_MAX = 7  # the contract's bound on required_signers / signatures


class Ceremony(StrEnum):
    ROTATE = "ROTATE"  # a new version now (rotate early): adds, never removes
    RESTORE = "RESTORE"  # the wrapped keys of a backup into an empty token
    DESTROY = "DESTROY"  # remove a key version from the token: irreversible


CEREMONIES = frozenset(str(c) for c in Ceremony)


@dataclass(frozen=True, slots=True)
class Policy:
    tier: str  # STANDARD / ELEVATED / SOVEREIGN / EMERGENCY / UNPAUSE / KEY_CEREMONY
    required_signers: int
    timelock: timedelta


STANDARD = Policy("STANDARD", 3, 24 * HOUR)
ELEVATED = Policy("ELEVATED", 4, 48 * HOUR)
SOVEREIGN = Policy("SOVEREIGN", 5, 48 * HOUR)
EMERGENCY = Policy("EMERGENCY", 2, timedelta(0))
# Unpause re-opens money out: a majority (3/5), so the two keys that suffice to pause (a nuisance at worst) cannot
# undo a pause the others want; immediate, because while paused no holder is paid and a delay only prolongs that —
# each movement that then happens still waits out its own timelock.
UNPAUSE_POLICY = Policy("UNPAUSE", 3, timedelta(0))
# Key ceremonies: spec §4.1's quorum 3/5. Rotating early only adds a version (old ones still verify) and is what a
# suspected compromise calls for, restoring ends an outage: both immediate. Destroying is irreversible: 48 h, so
# every signer sees it coming.
CEREMONY_POLICIES = {
    Ceremony.ROTATE: Policy("KEY_CEREMONY", 3, timedelta(0)),
    Ceremony.RESTORE: Policy("KEY_CEREMONY", 3, timedelta(0)),
    Ceremony.DESTROY: Policy("KEY_CEREMONY", 3, 48 * HOUR),
}


def tier_for_amount(amount_units: int) -> Policy:
    """< 50,000 K-AUS: 3/5, 24 h; 50,000 to 500,000 K-AUS, both ends included: 4/5, 48 h; above: 5/5, 48 h."""
    if amount_units < ELEVATED_FROM_UNITS:
        return STANDARD
    if amount_units <= SOVEREIGN_ABOVE_UNITS:
        return ELEVATED
    return SOVEREIGN


def policy_for(operation: Operation, amount_units: int, params: Mapping[str, str]) -> Policy:
    """The quorum and timelock of a request. Other operations than pause, unpause and key ceremonies go by amount."""
    if operation is Operation.PAUSE:
        return EMERGENCY
    if operation is Operation.UNPAUSE:
        return UNPAUSE_POLICY
    if operation is Operation.KEY_CEREMONY:
        ceremony = params.get("ceremony", "")
        return CEREMONY_POLICIES[Ceremony(ceremony)] if ceremony in CEREMONIES else STANDARD
    return tier_for_amount(amount_units)


# --------------------------------------------------------------------------- requests and the canonical hash


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    operation: Operation
    amount_units: int
    params: Mapping[str, str]
    nonce: int
    expires_at: datetime
    requested_by: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "operation": str(self.operation),
            "amount_units": self.amount_units,
            "params": dict(self.params),
            "nonce": self.nonce,
            "expires_at": self.expires_at.isoformat(),
            "requested_by": self.requested_by,
            "created_at": self.created_at.isoformat(),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Request:
        return Request(
            d["request_id"],
            Operation(d["operation"]),
            int(d["amount_units"]),
            dict(d["params"]),
            int(d["nonce"]),
            datetime.fromisoformat(d["expires_at"]),
            d["requested_by"],
            datetime.fromisoformat(d["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class Approval:
    request_id: str
    signer_id: str
    request_hash: str
    signature_b64: str
    signed_at: datetime


DOMAIN_NAME = "NEXUS-X Governance"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = "NexusGovernanceDomain(string name,string version,string deploymentId)"
PARAM_TYPE = "Param(string key,string value)"
REQUEST_TYPE = (
    "GovernanceRequest(string requestId,string operation,uint256 amountKausUnits,Param[] params,uint64 nonce,"
    "uint64 expiresAtMicros,string requestedBy,uint64 createdAtMicros)"
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _string(text: str) -> bytes:
    return _sha(text.encode("utf-8"))


def _uint(value: int) -> bytes:
    if value < 0 or value >= 2**256:
        raise ValueError(f"{value} does not fit uint256")
    return value.to_bytes(32, "big")


def micros(moment: datetime) -> int:
    """Microseconds since 1970-01-01T00:00Z, exactly (integer arithmetic)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: governance timestamps are UTC-aware")
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def domain_separator(deployment_id: str) -> bytes:
    return _sha(_string(DOMAIN_TYPE) + _string(DOMAIN_NAME) + _string(DOMAIN_VERSION) + _string(deployment_id))


def _params_hash(params: Mapping[str, str]) -> bytes:
    """EIP-712 array encoding: the hash of the concatenated struct hashes, params sorted by their key's UTF-8."""
    type_hash = _string(PARAM_TYPE)
    ordered = sorted(params.items(), key=lambda kv: kv[0].encode("utf-8"))
    return _sha(b"".join(_sha(type_hash + _string(k) + _string(v)) for k, v in ordered))


def struct_hash(request: Request) -> bytes:
    """EIP-712 hashStruct: the type hash (the type string, then the referenced Param type) and each field by type."""
    return _sha(
        _string(REQUEST_TYPE + PARAM_TYPE)
        + _string(request.request_id)
        + _string(str(request.operation))
        + _uint(request.amount_units)
        + _params_hash(request.params)
        + _uint(request.nonce)
        + _uint(micros(request.expires_at))
        + _string(request.requested_by)
        + _uint(micros(request.created_at))
    )


def request_hash(request: Request, deployment_id: str) -> str:
    """``0x`` + 64 hex: SHA-256(0x19 0x01 || domainSeparator || hashStruct(request)) — EIP-712 with SHA-256 for
    keccak-256 (no EVM here; SHA-256 is what the HSMs and signer devices implement)."""
    digest = _sha(b"\x19\x01" + domain_separator(deployment_id) + struct_hash(request))
    return "0x" + digest.hex()


# --------------------------------------------------------------------------- what a request needs

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
_ALWAYS = frozenset({"reason"})
_PARAMS: dict[Operation, tuple[frozenset[str], frozenset[str]]] = {  # (required, optional besides "reason")
    Operation.TREASURY_TRANSFER: (frozenset({"from_account", "to_account"}), frozenset()),
    Operation.LEDGER_CORRECTION: (frozenset({"from_account", "to_account"}), frozenset({"exception_id"})),
    Operation.PAYOUT_APPROVAL: (frozenset({"payout_id"}), frozenset({"account_id"})),
    Operation.PARAMETER_CHANGE: (frozenset({"name", "value"}), frozenset()),
    Operation.SIGNER_CHANGE: (frozenset({"action", "signer_id"}), frozenset({"public_key_pem", "replaces"})),
    Operation.KEY_CEREMONY: (frozenset({"ceremony"}), frozenset({"purpose", "key_id", "version", "backup"})),
    Operation.PAUSE: (frozenset(), frozenset()),
    Operation.UNPAUSE: (frozenset(), frozenset()),
}
_NO_AMOUNT = frozenset({Operation.SIGNER_CHANGE, Operation.KEY_CEREMONY, Operation.PAUSE, Operation.UNPAUSE})
_NEEDS_AMOUNT = TRANSFERS | {Operation.PAYOUT_APPROVAL}


def param_names(operation: Operation) -> tuple[str, ...]:
    """The params an operation takes, sorted (``reason`` besides, for every operation)."""
    required, optional = _PARAMS[operation]
    return tuple(sorted(required | optional))


def check_request(request: Request) -> str | None:
    """Why the request cannot be executed as given, or None. Signer changes are checked against the set apart."""
    required, optional = _PARAMS[request.operation]
    given = set(request.params)
    if missing := sorted(required - given):
        return f"{request.operation} needs params {', '.join(missing)}"
    if unknown := sorted(given - required - optional - _ALWAYS):
        return f"{request.operation} takes no params {', '.join(unknown)} (allowed: {sorted(required | optional)})"
    if request.operation in _NO_AMOUNT and request.amount_units != 0:
        return f"{request.operation} moves no money: amount_kaus_units must be 0"
    if request.operation in _NEEDS_AMOUNT and request.amount_units <= 0:
        return f"{request.operation} needs a positive amount_kaus_units"
    if request.operation in TRANSFERS:
        if len(request.request_id) > 124:
            return "a transfer's request_id has at most 124 characters (its ledger command id is GOV:<request_id>)"
        debit, credit = request.params["from_account"], request.params["to_account"]
        if not (_ID.match(debit) and _ID.match(credit)):
            return "from_account and to_account must be account ids (letters, digits and ._:/@-, up to 128)"
        if debit == credit:
            return "from_account and to_account are the same account"
    if request.operation is Operation.KEY_CEREMONY:
        return _check_ceremony(request.params)
    if request.operation is Operation.PARAMETER_CHANGE:
        try:
            parameters.parse(request.params["name"], request.params["value"])
        except parameters.InvalidParameter as exc:
            return str(exc)
    return None


def _check_ceremony(params: Mapping[str, str]) -> str | None:
    ceremony = params["ceremony"]
    if ceremony not in CEREMONIES:
        return f"ceremony must be one of {', '.join(Ceremony)}"
    needs = {Ceremony.ROTATE: "purpose", Ceremony.DESTROY: "key_id", Ceremony.RESTORE: "backup"}[Ceremony(ceremony)]
    if not params.get(needs):
        return f"a {ceremony} ceremony needs param {needs}"
    if ceremony == Ceremony.ROTATE and params["purpose"] not in ("MASTER", "SIGNING", "ENCRYPTION"):
        return "purpose must be MASTER, SIGNING or ENCRYPTION"
    return None


def check_signer_change(
    params: Mapping[str, str], signers: Mapping[str, str], key_valid: Callable[[str], bool]
) -> str | None:
    """Why this signer change cannot apply to ``signers``, or None. The set stays between 5 and 7 signers."""
    action, signer = params.get("action", ""), params.get("signer_id", "")
    if action not in ("ADD", "REMOVE", "REPLACE"):
        return "action must be ADD, REMOVE or REPLACE"
    if not _ID.match(signer):
        return "signer_id must be an id (letters, digits and ._:/@-)"
    if action == "REMOVE":
        if signer not in signers:
            return f"{signer} is not a signer"
        return None if len(signers) > SIGNER_SET_MIN else f"the set cannot fall below {SIGNER_SET_MIN} signers"
    if signer in signers:
        return f"{signer} is a signer already"
    if not key_valid(params.get("public_key_pem", "")):
        return "public_key_pem must be an ECDSA P-256 public key (SubjectPublicKeyInfo PEM)"
    if action == "ADD":
        return None if len(signers) < SIGNER_SET_MAX else f"the set cannot grow above {SIGNER_SET_MAX} signers"
    replaced = params.get("replaces", "")
    return None if replaced in signers else f"REPLACE needs replaces: a current signer (got {replaced!r})"


def changed_signers(params: Mapping[str, str], signers: Mapping[str, str]) -> dict[str, str]:
    """The set after a (checked) signer change."""
    after = dict(signers)
    action, signer = params["action"], params["signer_id"]
    if action == "REMOVE":
        del after[signer]
        return after
    if action == "REPLACE":
        del after[params["replaces"]]
    after[signer] = params["public_key_pem"]
    return after


# --------------------------------------------------------------------------- the lifecycle

Verify = Callable[[str, bytes, bytes], bool]  # (public key PEM, the 32-byte request hash, DER signature) -> valid


@dataclass(frozen=True, slots=True)
class Config:
    deployment_id: str
    # Tests and demos only: every timelock is multiplied by this (the matrix itself never changes).
    timelock_scale: Decimal = Decimal(1)
    # An approval read before its request waits this long for it (the two topics are read side by side).
    unknown_request_wait: timedelta = timedelta(minutes=1)
    parked_max: int = 1000
    # A transfer sent to the ledger with no outcome yet is sent again (same command id) after this long.
    resend_after: timedelta = timedelta(minutes=1)


@dataclass(slots=True)
class Tracked:
    """A request as the service tracks it."""

    request: Request
    request_hash: str
    policy: Policy
    state: State
    accepted_at: datetime
    updated_at: datetime
    signatures: dict[str, str] = field(default_factory=dict)  # signer id -> base64 DER signature
    timelock_until: datetime | None = None
    executing_since: datetime | None = None  # the effect was ordered (a transfer awaits the ledger's outcome)
    reason_code: GovernanceCode | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        stamp = _iso
        return {
            "request": self.request.to_dict(),
            "request_hash": self.request_hash,
            "state": str(self.state),
            "accepted_at": stamp(self.accepted_at),
            "updated_at": stamp(self.updated_at),
            "signatures": dict(self.signatures),
            "timelock_until": stamp(self.timelock_until),
            "executing_since": stamp(self.executing_since),
            "reason_code": None if self.reason_code is None else str(self.reason_code),
            "reason": self.reason,
        }


def _snap(t: Tracked) -> Tracked:
    """A copy as it is now (the events of one call are turned into messages after the call)."""
    return replace(t, signatures=dict(t.signatures))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# What the core decides; the shell turns each into a message.
@dataclass(frozen=True, slots=True)
class Published:
    """The request's state for governance.multisig; ``reason_code`` also names a refused signature."""

    tracked: Tracked
    at: datetime
    reason_code: GovernanceCode | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Audited:
    audit_key: str  # unique per fact: a re-write after a crash carries the same id
    action: str
    request_id: str
    actor: str
    at: datetime
    amount_units: int | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    request_id: str
    signer_id: str | None
    code: GovernanceCode
    reason: str


@dataclass(frozen=True, slots=True)
class TransferOrdered:
    command_id: str
    request_id: str
    debit_account_id: str
    credit_account_id: str
    amount_units: int
    reason: str
    at: datetime  # when execution began: the same on every re-send


@dataclass(frozen=True, slots=True)
class PauseSet:
    paused: bool
    request_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CeremonyOrdered:
    request_id: str
    ceremony: Ceremony
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SignersChanged:
    request_id: str
    signers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ParameterSet:
    """An executed PARAMETER_CHANGE: ``name`` is ``value`` from now on (``governance.parameters``)."""

    name: str
    value: int
    request_id: str
    at: datetime


Event = Published | Audited | Refused | TransferOrdered | PauseSet | CeremonyOrdered | SignersChanged | ParameterSet
SERVICE_ACTOR = "nexus-governance"


def _refused(
    t: Tracked | None, request_id: str, signer: str | None, code: GovernanceCode, reason: str, key: str, now: datetime
) -> list[Event]:
    """A refused request, signature or execution: said on governance.multisig (when the request is open) and in
    the audit trail. A final request's record is not re-published: its own reason stays."""
    actor = signer or SERVICE_ACTOR
    out: list[Event] = [Refused(request_id, signer, code, reason)]
    if t is not None and t.state not in FINAL:
        out.append(Published(_snap(t), now, code, reason))
    amount = t.request.amount_units if t is not None else None
    out.append(Audited(key, f"GOVERNANCE_REFUSED_{code}", request_id, actor, now, amount))
    return out


class Governance:
    """The requests, the nonces they used, the signer set and the approvals waiting for their request.

    Every method takes the time it happened (``now``, the service's clock: never a time a requester or signer wrote,
    which they could back-date to shorten a timelock) and returns what to publish, in order."""

    def __init__(
        self, config: Config, signers: Mapping[str, str], verify: Verify, key_valid: Callable[[str], bool]
    ) -> None:
        self.config = config
        self.signers: dict[str, str] = dict(signers)  # signer id -> public key PEM
        self.verify = verify
        self.key_valid = key_valid
        self.requests: dict[str, Tracked] = {}
        self.nonces: dict[int, str] = {}  # nonce -> the accepted request that used it (kept for ever)
        self.parked: dict[str, list[tuple[Approval, datetime]]] = {}
        self._sent: dict[str, datetime] = {}  # transfers in flight -> last sent (not saved: a restart re-sends)

    # ------------------------------------------------------------------ requests

    def timelock(self, policy: Policy) -> timedelta:
        scaled = Decimal(policy.timelock // timedelta(microseconds=1)) * self.config.timelock_scale
        return timedelta(microseconds=int(scaled))

    def submit(self, request: Request, now: datetime) -> list[Event]:
        digest = request_hash(request, self.config.deployment_id)
        known = self.requests.get(request.request_id)
        if known is not None or self.nonces.get(request.nonce) == request.request_id:
            if known is None or known.request_hash == digest:
                return []  # the same request again (at-least-once delivery)
            reason = f"request id {request.request_id} is taken by another request (hash {known.request_hash})"
            key = f"{request.request_id}:refused:{digest[2:18]}"
            return _refused(None, request.request_id, request.requested_by, GovernanceCode.INVALID_REQUEST, reason,
                            key, now)  # fmt: skip
        policy = policy_for(request.operation, request.amount_units, request.params)
        t = Tracked(request, digest, policy, State.PENDING, now, now)
        self.requests[request.request_id] = t
        refusal = self._refusal(request, policy, now)
        if refusal is not None:
            code, reason = refusal
            t.state, t.reason_code, t.reason = State.REJECTED, code, reason
            out = _refused(None, request.request_id, request.requested_by, code, reason, f"{request.request_id}:"
                           f"refused:{digest[2:18]}", now)  # fmt: skip
            return [*out, Published(_snap(t), now, code, reason), *self._unpark(t, now)]
        self.nonces[request.nonce] = request.request_id
        audit = Audited(f"{request.request_id}:requested", "GOVERNANCE_REQUESTED", request.request_id,
                        request.requested_by, now, request.amount_units)  # fmt: skip
        return [Published(_snap(t), now), audit, *self._unpark(t, now)]

    def _refusal(self, request: Request, policy: Policy, now: datetime) -> tuple[GovernanceCode, str] | None:
        owner = self.nonces.get(request.nonce)
        if owner is not None and owner != request.request_id:
            return GovernanceCode.NONCE_REPLAYED, f"nonce {request.nonce} was used by request {owner}"
        if now >= request.expires_at:
            return GovernanceCode.EXPIRED, f"the request expired at {request.expires_at.isoformat()} before it arrived"
        problem = check_request(request)
        if problem is None and request.operation is Operation.SIGNER_CHANGE:
            problem = check_signer_change(request.params, self.signers, self.key_valid)
        if problem is None and len(self.signers) < policy.required_signers:
            problem = f"needs {policy.required_signers} signers; the set has {len(self.signers)}"
        if problem is None and request.expires_at <= now + self.timelock(policy):
            problem = f"expires at {request.expires_at.isoformat()}, before its {policy.timelock} timelock could end"
        return None if problem is None else (GovernanceCode.INVALID_REQUEST, problem)

    # ------------------------------------------------------------------ signatures

    def approve(self, approval: Approval, now: datetime) -> list[Event]:
        t = self.requests.get(approval.request_id)
        if t is not None:
            return self._approve(t, approval, now)
        waiting = self.parked.setdefault(approval.request_id, [])
        if sum(len(v) for v in self.parked.values()) < self.config.parked_max:
            waiting.append((approval, now))  # its request may not be read yet: the topics are read side by side
            return []
        if not waiting:
            del self.parked[approval.request_id]
        return self._unknown(approval, now)

    def _unknown(self, approval: Approval, now: datetime) -> list[Event]:
        reason = f"no request {approval.request_id} was received"
        key = f"{approval.request_id}:refused:{approval.signer_id}:{_sig_id(approval.signature_b64)}"
        return _refused(None, approval.request_id, approval.signer_id, GovernanceCode.UNKNOWN_REQUEST, reason, key,
                        now)  # fmt: skip

    def _unpark(self, t: Tracked, now: datetime) -> list[Event]:
        out: list[Event] = []
        for approval, _received in self.parked.pop(t.request.request_id, []):
            out.extend(self._approve(t, approval, now))
        return out

    def _approve(self, t: Tracked, approval: Approval, now: datetime) -> list[Event]:
        rid, signer = t.request.request_id, approval.signer_id
        key = f"{rid}:refused:{signer}:{_sig_id(approval.signature_b64)}"
        if t.state not in FINAL and t.executing_since is None and now >= t.request.expires_at:
            expired = self._expire(t, now)
            return [*expired, *_refused(t, rid, signer, GovernanceCode.EXPIRED, t.reason or "", key, now)]
        problem = self._signature_problem(t, approval)
        if problem is not None:
            return _refused(t, rid, signer, *problem, key, now)
        if signer in t.signatures:
            if t.signatures[signer] == approval.signature_b64:
                return []  # the same approval again
            reason = f"{signer} already signed {rid}: one signature per signer counts"
            return _refused(t, rid, signer, GovernanceCode.DUPLICATE_SIGNER, reason, key, now)
        t.signatures[signer] = approval.signature_b64
        t.updated_at = now
        out: list[Event] = [Audited(f"{rid}:signed:{signer}", "GOVERNANCE_APPROVED", rid, signer, now,
                                    t.request.amount_units)]  # fmt: skip
        if t.state is State.PENDING and len(t.signatures) >= t.policy.required_signers:
            t.state, t.timelock_until = State.APPROVED, now + self.timelock(t.policy)
            out.append(Audited(f"{rid}:quorum", "GOVERNANCE_QUORUM_REACHED", rid, SERVICE_ACTOR, now,
                               t.request.amount_units))  # fmt: skip
        out.append(Published(_snap(t), now))
        if t.state is State.APPROVED and t.timelock_until is not None and t.timelock_until <= now:
            out.extend(self.execute(rid, now))  # immediate (emergency pause, unpause, some ceremonies)
        return out

    def _signature_problem(self, t: Tracked, approval: Approval) -> tuple[GovernanceCode, str] | None:
        rid, signer = t.request.request_id, approval.signer_id
        if t.state in FINAL:
            return GovernanceCode.ALREADY_FINAL, f"{rid} is {t.state} already"
        public_key = self.signers.get(signer)
        if public_key is None:
            return GovernanceCode.NOT_A_SIGNER, f"{signer} is not in the signer set"
        if approval.request_hash != t.request_hash:
            return GovernanceCode.WRONG_HASH, f"signed {approval.request_hash}, but {rid} hashes to {t.request_hash}"
        try:
            signature = base64.b64decode(approval.signature_b64, validate=True)
        except binascii.Error:
            return GovernanceCode.BAD_SIGNATURE, "the signature is not base64"
        if not self.verify(public_key, bytes.fromhex(t.request_hash[2:]), signature):
            return GovernanceCode.BAD_SIGNATURE, f"the signature does not verify with {signer}'s public key"
        return None

    # ------------------------------------------------------------------ execution

    def execute(self, request_id: str, now: datetime) -> list[Event]:
        """Carry out an approved request whose timelock has ended (the service's timer calls it when due)."""
        t = self.requests.get(request_id)
        key = f"{request_id}:refused:execute"
        if t is None:
            reason = f"no request {request_id}"
            return _refused(None, request_id, None, GovernanceCode.UNKNOWN_REQUEST, reason, key, now)
        if t.state in FINAL:
            return _refused(t, request_id, None, GovernanceCode.ALREADY_FINAL, f"{request_id} is {t.state}", key, now)
        if t.executing_since is not None:
            return []  # under way: its outcome finishes it
        if now >= t.request.expires_at:
            return self._expire(t, now)
        if t.state is State.PENDING:
            reason = f"not approved: {len(t.signatures)} of {t.policy.required_signers} signatures"
            return _refused(t, request_id, None, GovernanceCode.INVALID_REQUEST, reason, key, now)
        assert t.timelock_until is not None
        if now < t.timelock_until:
            reason = f"the timelock ends at {t.timelock_until.isoformat()}"
            return _refused(t, request_id, None, GovernanceCode.TIMELOCK_NOT_ENDED, reason, key, now)
        return self._carry_out(t, now)

    def _carry_out(self, t: Tracked, now: datetime) -> list[Event]:
        request, op = t.request, t.request.operation
        reason = request.params.get("reason", "")
        if op in TRANSFERS:
            t.executing_since = now
            self._sent[request.request_id] = now
            return [self._transfer(t)]
        if op is Operation.KEY_CEREMONY:
            t.executing_since = now
            return [CeremonyOrdered(request.request_id, Ceremony(request.params["ceremony"]), dict(request.params))]
        if op in (Operation.PAUSE, Operation.UNPAUSE):
            t.executing_since = now
            return [PauseSet(op is Operation.PAUSE, request.request_id, reason, now), *self._finish(t, now)]
        if op is Operation.SIGNER_CHANGE:
            problem = check_signer_change(request.params, self.signers, self.key_valid)
            if problem is not None:
                return self._fail(t, now, f"the signer set changed meanwhile: {problem}")
            t.executing_since = now
            self.signers = changed_signers(request.params, self.signers)
            changed = SignersChanged(request.request_id, dict(self.signers))
            return [changed, *self._finish(t, now), *self._requorum(request.request_id, now)]
        if op is Operation.PARAMETER_CHANGE:
            return self._set_parameter(t, now)
        t.executing_since = now
        return self._finish(t, now)  # PAYOUT_APPROVAL: the payouts service follows its EXECUTED state and pays

    def _set_parameter(self, t: Tracked, now: datetime) -> list[Event]:
        """Checked on arrival; checked again, as a request accepted before a parameter's range was narrowed (or by
        an older version, kept in the state file) must fail rather than publish a value nobody applies."""
        name, text = t.request.params["name"], t.request.params["value"]
        try:
            value = parameters.parse(name, text)
        except parameters.InvalidParameter as exc:
            return self._fail(t, now, str(exc))
        t.executing_since = now
        return [ParameterSet(name, value, t.request.request_id, now), *self._finish(t, now)]

    def _transfer(self, t: Tracked) -> TransferOrdered:
        request = t.request
        assert t.executing_since is not None
        reason = request.params.get("reason") or f"{request.operation} {request.request_id}"
        return TransferOrdered(f"GOV:{request.request_id}", request.request_id, request.params["from_account"],
                               request.params["to_account"], request.amount_units, reason[:200],
                               t.executing_since)  # fmt: skip

    def finished(self, request_id: str, ok: bool, reason: str | None, now: datetime) -> list[Event]:
        """The outcome of an effect under way: the ledger applied or refused the transfer, the ceremony ran."""
        t = self.requests.get(request_id)
        if t is None or t.state in FINAL or t.executing_since is None:
            return []  # a repeated outcome, or one for a request not ours
        self._sent.pop(request_id, None)
        return self._finish(t, now) if ok else self._fail(t, now, reason or "the operation failed")

    def _finish(self, t: Tracked, now: datetime) -> list[Event]:
        t.state, t.updated_at = State.EXECUTED, now
        rid, op = t.request.request_id, t.request.operation
        action = {Operation.PAUSE: "GOVERNANCE_PAUSED", Operation.UNPAUSE: "GOVERNANCE_UNPAUSED"}.get(
            op, "GOVERNANCE_EXECUTED"
        )
        took_ms = (now - t.accepted_at) // timedelta(milliseconds=1)
        audit = Audited(f"{rid}:executed", action, rid, SERVICE_ACTOR, now, t.request.amount_units, max(took_ms, 0))
        return [audit, Published(_snap(t), now)]

    def _fail(self, t: Tracked, now: datetime, reason: str) -> list[Event]:
        t.state, t.updated_at = State.REJECTED, now
        t.reason_code, t.reason = GovernanceCode.EXECUTION_FAILED, reason[:500]
        rid = t.request.request_id
        audit = Audited(f"{rid}:failed", "GOVERNANCE_EXECUTION_FAILED", rid, SERVICE_ACTOR, now,
                        t.request.amount_units)  # fmt: skip
        return [Refused(rid, None, GovernanceCode.EXECUTION_FAILED, t.reason), audit, Published(_snap(t), now)]

    def _expire(self, t: Tracked, now: datetime) -> list[Event]:
        t.state, t.updated_at = State.EXPIRED, now
        t.reason_code = GovernanceCode.EXPIRED
        t.reason = f"expired at {t.request.expires_at.isoformat()} before it was executed"
        rid = t.request.request_id
        audit = Audited(f"{rid}:expired", "GOVERNANCE_EXPIRED", rid, SERVICE_ACTOR, now, t.request.amount_units)
        return [audit, Published(_snap(t), now)]

    def _requorum(self, change_id: str, now: datetime) -> list[Event]:
        """After a signer change, only current signers' signatures count: a request may fall back to PENDING."""
        out: list[Event] = []
        for t in self.requests.values():
            if t.state in FINAL or t.executing_since is not None:
                continue
            gone = [s for s in t.signatures if s not in self.signers]
            if not gone:
                continue
            for signer in gone:
                del t.signatures[signer]
            t.updated_at = now
            if t.state is State.APPROVED and len(t.signatures) < t.policy.required_signers:
                t.state, t.timelock_until = State.PENDING, None
                out.append(Audited(f"{t.request.request_id}:quorum-lost:{change_id}", "GOVERNANCE_QUORUM_LOST",
                                   t.request.request_id, SERVICE_ACTOR, now, t.request.amount_units))  # fmt: skip
            out.append(Published(_snap(t), now))
        return out

    # ------------------------------------------------------------------ the timer

    def tick(self, now: datetime) -> list[Event]:
        """Approvals whose request never came, expiries, executions due, transfers to send again, old requests."""
        out: list[Event] = []
        for request_id in list(self.parked):
            waiting = self.parked[request_id]
            while waiting and now - waiting[0][1] >= self.config.unknown_request_wait:
                out.extend(self._unknown(waiting.pop(0)[0], now))
            if not waiting:
                del self.parked[request_id]
        open_ = sorted(
            (t for t in self.requests.values() if t.state not in FINAL),
            key=lambda t: (t.timelock_until or t.request.expires_at, t.accepted_at, t.request.request_id),
        )
        for t in open_:
            rid = t.request.request_id
            if t.executing_since is not None:
                if t.request.operation in TRANSFERS and now - self._sent.get(rid, EPOCH) >= self.config.resend_after:
                    self._sent[rid] = now
                    out.append(self._transfer(t))  # same command id: the ledger applies it once
            elif now >= t.request.expires_at:
                out.extend(self._expire(t, now))
            elif t.state is State.APPROVED and t.timelock_until is not None and t.timelock_until <= now:
                out.extend(self._carry_out(t, now))
        return out

    def prune(self, before: datetime) -> int:
        """Forget final requests last changed before ``before`` (their nonces stay used); returns how many."""
        old = [rid for rid, t in self.requests.items() if t.state in FINAL and t.updated_at < before]
        for rid in old:
            del self.requests[rid]
        return len(old)

    def open_requests(self) -> list[Tracked]:
        return [t for t in self.requests.values() if t.state not in FINAL]

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        return {
            "signers": dict(sorted(self.signers.items())),
            "requests": [t.to_dict() for t in self.requests.values()],
            "nonces": {str(n): rid for n, rid in self.nonces.items()},
            "parked": [
                {**_approval_dict(a), "received_at": at.isoformat()} for v in self.parked.values() for a, at in v
            ],
        }

    def load(self, data: Mapping[str, Any]) -> None:
        """Replace the state with a saved one (the verify and key check functions stay the ones given)."""
        self.signers = dict(data["signers"])
        self.requests = {}
        for d in data["requests"]:
            request = Request.from_dict(d["request"])
            t = Tracked(
                request, d["request_hash"], policy_for(request.operation, request.amount_units, request.params),
                State(d["state"]), datetime.fromisoformat(d["accepted_at"]), datetime.fromisoformat(d["updated_at"]),
                dict(d["signatures"]), _at(d["timelock_until"]), _at(d["executing_since"]),
                None if d["reason_code"] is None else GovernanceCode(d["reason_code"]), d["reason"],
            )  # fmt: skip
            self.requests[request.request_id] = t
        self.nonces = {int(n): rid for n, rid in data["nonces"].items()}
        self.parked = {}
        for p in data["parked"]:
            approval = Approval(p["request_id"], p["signer_id"], p["request_hash"], p["signature_b64"],
                                datetime.fromisoformat(p["signed_at"]))  # fmt: skip
            self.parked.setdefault(approval.request_id, []).append((approval, datetime.fromisoformat(p["received_at"])))
        self._sent = {}


def _approval_dict(a: Approval) -> dict[str, Any]:
    return {
        "request_id": a.request_id,
        "signer_id": a.signer_id,
        "request_hash": a.request_hash,
        "signature_b64": a.signature_b64,
        "signed_at": a.signed_at.isoformat(),
    }


def _sig_id(signature_b64: str) -> str:
    """A short, stable id of one signature (audit ids of refusals: each distinct signature once)."""
    return hashlib.sha256(signature_b64.encode()).hexdigest()[:16]


def kaus_units(text: str) -> int:
    """A K-AUS amount as typed by a person ("50000", "49999.999999") -> base units, exactly; more than six
    decimals is an error, never rounded."""
    problem = ValueError(f"{text!r} is not a K-AUS amount (at most 6 decimals, not negative)")
    try:
        amount = Decimal(text.replace(",", "").replace("_", ""))
    except ArithmeticError:
        raise problem from None
    if not amount.is_finite() or amount < 0:
        raise problem
    units = amount * KAUS_UNITS_PER_TOKEN
    if units != units.to_integral_value():
        raise problem
    return int(units)


__all__ = [
    "Approval",
    "Config",
    "Governance",
    "GovernanceCode",
    "Operation",
    "Request",
    "State",
    "policy_for",
    "request_hash",
]
