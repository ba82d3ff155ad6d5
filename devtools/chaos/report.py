"""What a chaos soak did and found: counts only, so a run prints, compares and fails on its own figures.

``violations()`` is the verdict: each line is a property that broke (``docs/chaos-soak.md`` says how each count is
computed). Re-emitted identical copies are counted but are no violation: Kafka delivers at least once, and the
platform is idempotent by id, so a copy is harmless as long as it is the same record.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SoakReport:
    seed: int
    events: dict[str, int]  # sent, by kind
    kills: dict[str, int] = field(default_factory=dict)  # planned SIGKILLs done, by worker
    restarts_after_kill: dict[str, int] = field(default_factory=dict)
    unplanned_exits: dict[str, int] = field(default_factory=dict)  # a worker exited on its own (then restarted)
    broker_restarts: list[str] = field(default_factory=list)  # what each one did
    faults_planned: int = 0
    fault_error: str | None = None
    send_errors: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # trades settled, cards completed / failed, payouts ...
    failure_reasons: Counter[str] = field(default_factory=Counter)  # failed answers by reason code (a final answer)
    failure_samples: dict[str, str] = field(default_factory=dict)  # one reason text per reason code
    lost: dict[str, int] = field(default_factory=dict)  # inputs without their outcome, by kind
    duplicated: dict[str, int] = field(default_factory=dict)  # applied or paid twice, by kind
    conflicts: dict[str, int] = field(default_factory=dict)  # one id, two different records
    reemitted: dict[str, int] = field(default_factory=dict)  # identical copies of a record, by topic (allowed)
    conflict_details: list[str] = field(default_factory=list)  # the first conflicting records: what differed
    holds_open: int = 0
    negative_accounts: list[str] = field(default_factory=list)
    unnamed_accounts: list[str] = field(default_factory=list)  # holding K-AUS but not an account of the run
    kaus: dict[str, int] = field(default_factory=dict)  # the identity's terms
    balances_exact: bool = False  # the traders' balances are the clean in-process run's
    wall_s: float = 0.0
    send_s: float = 0.0
    settle_s: float = 0.0  # from the last event sent until every outcome was there
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)  # outcomes the run stopped waiting for

    @property
    def kaus_conserved(self) -> bool:
        k = self.kaus
        if not k:
            return False
        identity = k["holders"] + k["staked"] + k["platform"] == k["deposits"] + k["rewards"] - k["captured"]
        # term by term: what the ledger minted, issued, captured and kept is what the services said they did
        terms = (k["minted"], k["issued"], k["settlement_account"], k["platform"])
        return identity and terms == (k["deposits"], k["rewards"], k["captured"], k["trade_fees"])

    def failed(self, code: str, reason: str) -> None:
        self.failure_reasons[code] += 1
        self.failure_samples.setdefault(code, reason)

    def violations(self) -> list[str]:
        found = [f"{what}: {n} lost" for what, n in self.lost.items() if n]
        found += [f"{what}: {n} duplicated" for what, n in self.duplicated.items() if n]
        found += [f"{what}: {n} conflicting" for what, n in self.conflicts.items() if n]
        if self.holds_open:
            found.append(f"{self.holds_open} holds neither posted nor voided")
        if not self.kaus_conserved:
            found.append(f"K-AUS not conserved: {self.kaus}")
        if not self.balances_exact:
            found.append("the traders' balances differ from the clean run's")
        found += [f"negative balance: {a}" for a in self.negative_accounts]
        found += [f"K-AUS in an account the run does not know: {a}" for a in self.unnamed_accounts]
        found += [f"send: {e}" for e in self.send_errors[:5]]
        if self.fault_error:
            found.append(f"faults: {self.fault_error}")
        if sum(self.kills.values()) + len(self.broker_restarts) < self.faults_planned:
            found.append(f"only {sum(self.kills.values())} kills and {len(self.broker_restarts)} broker restarts done")
        found += [f"never finished: {u}" for u in self.unfinished]
        return found

    def lines(self) -> list[str]:
        """The figures, one per line (the bench prints them, the test prints them with the seed)."""
        sent = sum(self.events.values())
        k = self.kaus
        return [
            f"seed {self.seed}: {sent:,} events {_kv(self.events)}",
            f"kills by worker {_kv(self.kills)}; restarts after a kill {_kv(self.restarts_after_kill)}; "
            f"exits of their own {_kv(self.unplanned_exits)}",
            *(f"broker restart: {b}" for b in self.broker_restarts),
            f"outcomes {_kv(self.outcomes)}; failed by reason {_kv(dict(self.failure_reasons))}",
            f"lost {_kv(self.lost)}; duplicated {_kv(self.duplicated)}; conflicts {_kv(self.conflicts)}; "
            f"re-emitted identical copies {_kv(self.reemitted)}",
            *(f"failed, e.g.: {code}: {reason}" for code, reason in self.failure_samples.items()),
            *(f"conflict: {d}" for d in self.conflict_details),
            f"holds open at the end {self.holds_open}; traders' balances exact {self.balances_exact}",
            f"K-AUS: holders {k.get('holders', 0):,} + staked {k.get('staked', 0):,} + platform "
            f"{k.get('platform', 0):,} = deposits {k.get('deposits', 0):,} + rewards {k.get('rewards', 0):,} "
            f"- captured {k.get('captured', 0):,}: {'conserved' if self.kaus_conserved else 'NOT CONSERVED'}",
            f"  the ledger's side: minted {k.get('minted', 0):,}, issued {k.get('issued', 0):,}, in the settlement "
            f"account {k.get('settlement_account', 0):,}; trade fees {k.get('trade_fees', 0):,}",
            f"wall {self.wall_s:.1f} s, sending {self.send_s:.1f} s ({sent / max(self.send_s, 1e-9):,.0f} events/s), "
            f"outcomes settled {self.settle_s:.1f} s after the last one; workers' peak RSS MB "
            f"{_kv({w: round(v) for w, v in self.peak_rss_mb.items()})}",
        ]


def _kv(d: dict[str, int] | dict[str, float]) -> str:
    return "{" + ", ".join(f"{k} {v:,}" for k, v in d.items()) + "}"
