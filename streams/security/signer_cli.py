"""The signers' CLI for multi-sig governance (docs/governance.md).

    python -m streams.security.signer_cli pending                 requests awaiting signatures (governance.multisig)
    python -m streams.security.signer_cli show REQUEST_ID         what it does and its hash, recomputed here
    python -m streams.security.signer_cli sign REQUEST_ID --key FILE --signer ID [--out FILE] [--submit]
    python -m streams.security.signer_cli submit [FILE]           an approval (JSON, default stdin) to the platform
    python -m streams.security.signer_cli request --operation OP [--amount K-AUS] [--param KEY=VALUE ...]

A signer never signs a hash they did not compute: ``show`` and ``sign`` read the request itself from
``governance.requests`` and hash it here, with this deployment's id (NEXUS_SECURITY_GOVERNANCE_DEPLOYMENT_ID or
``--deployment-id``); the hash the platform published is only compared against it. The private key stays in its
file (``--password-env`` names a variable holding its passphrase, if it has one); nothing secret is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from contracts import models as m
from contracts.topics import GOVERNANCE_APPROVALS, GOVERNANCE_MULTISIG, GOVERNANCE_REQUESTS, Topic
from domain import governance as g
from domain.money import kaus_text
from streams.kafka.clients import consume_now, watermarks
from streams.security.governance import GovernanceSettings, load_signers, public_key_pem, sign_hash, to_request
from streams.security.settings import get_security_settings
from streams.settings import get_settings

TIMEOUT_S = 10.0
WHAT = {
    g.Operation.TREASURY_TRANSFER: "moves {amount} K-AUS from {from_account} to {to_account} (ledger command GOV:{id})",
    g.Operation.LEDGER_CORRECTION: "corrects the ledger: {amount} K-AUS from {from_account} to {to_account} "
    "(ledger command GOV:{id})",
    g.Operation.PAYOUT_APPROVAL: "approves payout {payout_id} of {amount} K-AUS",
    g.Operation.PARAMETER_CHANGE: "sets parameter {name} to {value}",
    g.Operation.SIGNER_CHANGE: "{action} signer {signer_id}",
    g.Operation.KEY_CEREMONY: "key ceremony {ceremony}",
    g.Operation.PAUSE: "PAUSES money out: the bridge and payouts refuse everything until an unpause",
    g.Operation.UNPAUSE: "unpauses money out",
}


class CliError(Exception):
    """Something the person can fix: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- Kafka


def read_topic(bootstrap: str, topic: Topic, key: bytes | None = None) -> list[Any]:
    """Every valid message of ``topic`` (optionally only those keyed ``key``), oldest first per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"signer-cli-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        try:
            meta = consumer.list_topics(topic.name, timeout=TIMEOUT_S).topics[topic.name]
        except KafkaException as exc:
            raise CliError(f"cannot reach Kafka at {bootstrap} ({exc}); set NEXUS_KAFKA_BOOTSTRAP_SERVERS") from None
        ends = {}
        for p in meta.partitions:
            low, high = watermarks(consumer, topic.name, p, TIMEOUT_S)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic.name, p, 0) for p in ends])
        found: list[Any] = []
        while ends:
            batch = consume_now(consumer, TIMEOUT_S, 500)
            if not batch:
                raise CliError(f"timed out reading {topic.name} from {bootstrap}")
            for msg in batch:
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition in ends and offset is not None and offset >= ends[partition] - 1:
                    del ends[partition]
                value = msg.value()
                if value and (key is None or msg.key() == key):
                    try:
                        found.append(topic.decode(value))
                    except ValidationError:
                        continue  # the service dead-letters it; nothing to sign
        return found
    finally:
        consumer.close()


def produce(bootstrap: str, topic: Topic, value: Any) -> None:
    errors: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic.name, topic.encode(value), topic.key_of(value),
                     on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)  # fmt: skip
    if producer.flush(TIMEOUT_S) or errors:
        raise CliError(f"not delivered to {topic.name} at {bootstrap}: {errors or 'timed out'}")


# --------------------------------------------------------------------------- the commands


class Cli:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.console = console
        self.bootstrap: str = args.bootstrap or get_settings().bootstrap_servers
        self.deployment_id: str = args.deployment_id or GovernanceSettings().deployment_id

    def request_of(self, request_id: str) -> m.GovernanceRequest:
        found = read_topic(self.bootstrap, GOVERNANCE_REQUESTS, request_id.encode())
        if not found:
            raise CliError(
                f"no request {request_id} on {GOVERNANCE_REQUESTS.name} (check the id: `pending` lists them)"
            )
        first: m.GovernanceRequest = found[0]
        if any(other != first for other in found[1:]):
            self.console.print(f"[yellow]warning:[/] {request_id} was sent again with other content; the platform "
                               "keeps the first, shown here; the others are refused")  # fmt: skip
        return first

    def states(self) -> dict[str, m.MultisigRequest]:
        return {r.request_id: r for r in read_topic(self.bootstrap, GOVERNANCE_MULTISIG)}

    def pending(self, show_all: bool) -> None:
        states = sorted(self.states().values(), key=lambda r: r.created_at)
        wanted = [r for r in states if show_all or r.state in (m.MultisigState.PENDING, m.MultisigState.APPROVED)]
        if not wanted:
            self.console.print("no requests awaiting signatures or their timelock")
            return
        table = Table(title="Governance requests" if show_all else "Awaiting signatures / in their timelock")
        for column in ("request", "operation", "K-AUS", "signatures", "state", "created (UTC)", "expires / timelock"):
            table.add_column(column)
        for r in wanted:
            until = r.timelock_until if r.state is m.MultisigState.APPROVED else r.expires_at
            table.add_row(r.request_id, str(r.operation or "?"), kaus_text(r.amount_kaus_units),
                          f"{r.signatures}/{r.required_signers}", _state_text(r), _when(r.created_at),
                          _when(until))  # fmt: skip
        self.console.print(table)

    def show(self, request_id: str) -> str:
        message = self.request_of(request_id)
        request = to_request(message)
        digest = g.request_hash(request, self.deployment_id)
        policy = g.policy_for(request.operation, request.amount_units, request.params)
        params = dict(request.params)
        named = {k: params.get(k, "?") for k in g.param_names(request.operation)}
        what = WHAT[request.operation].format(amount=kaus_text(request.amount_units), id=request.request_id, **named)
        table = Table(show_header=False, title=f"Request {request_id}")
        rows = [("does", what), ("operation", str(request.operation)), ("amount", f"{kaus_text(request.amount_units)}"
                " K-AUS"), ("params", json.dumps(params, sort_keys=True)), ("nonce", str(request.nonce)),
                ("requested by", request.requested_by), ("created", _when(request.created_at)),
                ("expires", _when(request.expires_at)),
                ("needs", f"{policy.required_signers} signatures ({policy.tier}), timelock {policy.timelock}"),
                ("deployment", self.deployment_id), ("hash (computed here)", digest)]  # fmt: skip
        for name, value in rows:
            table.add_row(name, value)
        self.console.print(table)
        state = self.states().get(request_id)
        if state is not None and state.request_hash not in (None, digest):
            raise CliError(f"the platform published hash {state.request_hash} for {request_id}, not {digest}: do "
                           "not sign; check --deployment-id against the platform's")  # fmt: skip
        if state is not None:
            self.console.print(
                f"platform: {_state_text(state)}, {state.signatures}/{state.required_signers} signatures"
            )
        return digest

    def sign(self, request_id: str, key_file: Path, signer_id: str, password_env: str | None) -> m.GovernanceApproval:
        key = _private_key(key_file, password_env)
        self._check_signer(signer_id, key)
        digest = self.show(request_id)
        state = self.states().get(request_id)
        if state is not None and state.state not in (m.MultisigState.PENDING, m.MultisigState.APPROVED):
            raise CliError(f"{request_id} is {state.state} ({state.reason or 'final'}): a signature would not count")
        return m.GovernanceApproval(request_id=request_id, signer_id=signer_id, request_hash=digest,
                                    signature=sign_hash(key, digest), signed_at=datetime.now(UTC))  # fmt: skip

    def _check_signer(self, signer_id: str, key: ec.EllipticCurvePrivateKey) -> None:
        path = get_security_settings().signers_path
        if not path.exists():
            return  # the set may not be on a signer's machine: the platform checks
        signers = load_signers(path)
        if signer_id not in signers:
            raise CliError(f"{signer_id} is not in the signer set {path} ({', '.join(sorted(signers))})")
        if signers[signer_id] != public_key_pem(key):
            raise CliError(f"this key is not {signer_id}'s key in the signer set {path}")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state_text(r: m.MultisigRequest) -> str:
    text = str(r.state)
    if r.state is m.MultisigState.APPROVED and r.timelock_until is not None:
        text += f" (executable from {_when(r.timelock_until)})"
    if r.reason_code:
        text += f" [{r.reason_code}]"
    return text


def _private_key(path: Path, password_env: str | None) -> ec.EllipticCurvePrivateKey:
    if not path.exists():
        raise CliError(f"no key file {path}")
    if path.stat().st_mode & 0o077:
        raise CliError(f"{path} is readable by others: chmod 600 {path}")
    password = os.environ.get(password_env, "").encode() if password_env else None
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=password or None)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: not a usable PEM private key ({exc}); a passphrase goes in --password-env") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CliError(f"{path}: not an ECDSA P-256 key")
    return key


def new_request(args: argparse.Namespace) -> m.GovernanceRequest:
    """A request from the command line; the amount in K-AUS exactly (at most 6 decimals)."""
    params: dict[str, str] = {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: write KEY=VALUE")
        params[name] = value
    for name, path in (p.partition("=")[::2] for p in args.param_file or []):
        params[name] = Path(path).read_text()
    try:
        amount = g.kaus_units(args.amount)
    except ValueError as exc:
        raise CliError(f"--amount: {exc}") from None
    now = datetime.now(UTC)
    try:
        return m.GovernanceRequest(
            request_id=args.request_id or f"gov-{now:%Y%m%d}-{uuid.uuid4().hex[:10]}",
            operation=args.operation,
            amount_kaus_units=amount,
            params=params,
            nonce=args.nonce if args.nonce is not None else secrets.randbelow(2**63),
            expires_at=now + timedelta(hours=args.expires_in_hours),
            requested_by=args.requested_by,
            created_at=now,
        )
    except ValidationError as exc:
        raise CliError(f"invalid request: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streams.security.signer_cli", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", help="Kafka (default NEXUS_KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--deployment-id", help="the platform's (default NEXUS_SECURITY_GOVERNANCE_DEPLOYMENT_ID)")
    sub = p.add_subparsers(dest="command", required=True)
    pending = sub.add_parser("pending", help="requests awaiting signatures or in their timelock")
    pending.add_argument("--all", action="store_true", help="every request, final ones included")
    show = sub.add_parser("show", help="what a request does and its canonical hash, computed here")
    show.add_argument("request_id")
    sign = sub.add_parser("sign", help="sign a request's hash (computed here) with your key")
    sign.add_argument("request_id")
    sign.add_argument("--key", type=Path, required=True, help="your ECDSA P-256 private key (PEM, owner-only)")
    sign.add_argument("--signer", required=True, help="your signer id in the signer set")
    sign.add_argument("--password-env", help="the environment variable holding the key's passphrase")
    sign.add_argument("--out", type=Path, help="also write the approval (JSON) here")
    sign.add_argument("--submit", action="store_true", help="and send it to governance.approvals")
    submit = sub.add_parser("submit", help="send an approval (JSON from `sign`) to governance.approvals")
    submit.add_argument("file", nargs="?", default="-", help="the approval's file (default: stdin)")
    req = sub.add_parser("request", help="create a request for the signers")
    req.add_argument("--operation", required=True, choices=[o.value for o in g.Operation])
    req.add_argument("--amount", default="0", help="K-AUS, up to 6 decimals (e.g. 49999.999999)")
    req.add_argument("--param", action="append", metavar="KEY=VALUE", help="e.g. from_account=treasury")
    req.add_argument("--param-file", action="append", metavar="KEY=FILE", help="a param's value from a file (a PEM)")
    req.add_argument("--nonce", type=int, help="unique per request (default: random)")
    req.add_argument("--expires-in-hours", type=float, default=7 * 24.0, help="default 168 (a week)")
    req.add_argument("--request-id", help="default gov-<date>-<random>")
    req.add_argument("--requested-by", default=os.environ.get("USER", "operator"))
    return p


def run(args: argparse.Namespace, console: Console) -> Any:
    cli = Cli(args, console)
    if args.command == "pending":
        return cli.pending(args.all)
    if args.command == "show":
        return cli.show(args.request_id)
    if args.command == "sign":
        approval = cli.sign(args.request_id, args.key, args.signer, args.password_env)
        text = GOVERNANCE_APPROVALS.encode(approval).decode()
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
        if args.submit:
            produce(cli.bootstrap, GOVERNANCE_APPROVALS, approval)
            console.print(f"[green]submitted[/] {args.signer}'s approval of {args.request_id}", highlight=False)
        return approval
    if args.command == "submit":
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        try:
            approval = GOVERNANCE_APPROVALS.decode(raw.strip())
        except ValidationError as exc:
            raise CliError(f"not an approval: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        produce(cli.bootstrap, GOVERNANCE_APPROVALS, approval)
        console.print(f"[green]submitted[/] {approval.signer_id}'s approval of {approval.request_id}", highlight=False)
        return approval
    request = new_request(args)
    problem = g.check_request(to_request(request))
    if problem is not None:
        raise CliError(f"the platform would refuse it: {problem}")
    produce(cli.bootstrap, GOVERNANCE_REQUESTS, request)
    digest = g.request_hash(to_request(request), cli.deployment_id)
    console.print(f"[green]requested[/] {request.request_id} (nonce {request.nonce}), hash {digest}", highlight=False)
    return request


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    out = console or Console(stderr=True)
    args = parser().parse_args(argv)
    try:
        run(args, out)
    except CliError as exc:
        out.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
