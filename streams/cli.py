"""NEXUS-X operators' CLI (the ``nexus`` console script): one entry point for what operators run.

    nexus worker --role ROLE [--runtime faust|plain]   start a worker (replaces this process)
    nexus api [clients add|list ... | openapi]         the settlement API (python -m streams.api) and its clients
    nexus topics [--list]                              create the registry topics / show them on the cluster
    nexus deadletters show|fetch TOPIC PARTITION OFFSET  a dead letter / its original bytes (--out FILE)
    nexus demo [--runtime faust|plain] ...             the local demo (what `make run` does); `nexus stop` ends it
    nexus recon ... / nexus exceptions ...             daily reconciliation and its exception queue (warehouse)
    nexus schemas                                      regenerate contracts/schemas/*.schema.json

Every process-starting command replaces this process (os.execv), so signals and exit codes are the
started program's own. Settings come from NEXUS_* environment variables (streams/settings.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

ROLES = ("matching", "settlement", "bridge", "alerting")
P2P_ROLES = ("matching", "settlement")
ROLE_ALIASES = {"all": ROLES, "p2p": P2P_ROLES}
# Roles that are each their own process on a plain loop whatever the runtime (none is a throughput path, so one
# implementation each): money out, the security layer, the settlement API and the status read model it reads.
OWN_PROCESS_MODULES = {
    "payouts": "streams.payouts",
    "notifier": "streams.notifications",
    "kyc": "streams.kyc",
    "keys": "streams.security.keys",
    "audit": "streams.security.audit_log",
    "governance": "streams.security.governance",
    "status": "streams.status",
    "api": "streams.api",
}
RUNTIMES = ("faust", "plain")
FORWARDED = ("recon", "exceptions")  # their arguments belong to warehouse.cli, not to this parser
API_COMMAND = "api"  # its arguments belong to python -m streams.api
HELP_FLAGS = ("-h", "--help")
DEFAULT_TIMEOUT_S = 10.0


class CliError(Exception):
    """Something the operator can fix: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Launch:
    """A ``python -m MODULE ARGS`` to exec, with the environment changes it needs (None removes a variable)."""

    module: str
    args: tuple[str, ...] = ()
    env: dict[str, str | None] = field(default_factory=dict)


# ------------------------------------------------------------------------ worker


def parse_roles(text: str) -> tuple[str, ...]:
    """`matching,settlement` / `p2p` / `all` -> the roles, in registry order; unknown names are a CliError."""
    wanted: set[str] = set()
    for name in (n.strip().lower() for n in text.split(",")):
        if not name:
            continue
        if name in ROLE_ALIASES:
            wanted.update(ROLE_ALIASES[name])
        elif name in ROLES:
            wanted.add(name)
        else:
            choices = ", ".join((*ROLES, *ROLE_ALIASES))
            raise CliError(f"unknown role {name!r}; choose from {choices} (comma-separated for several)")
    if not wanted:
        raise CliError(f"no role given; choose from {', '.join((*ROLES, *ROLE_ALIASES))}")
    return tuple(r for r in ROLES if r in wanted)


def worker_launch(role: str, runtime: str) -> Launch:
    """Which module runs `role` on `runtime`, and the NEXUS_AGENTS it reads (see the `worker --help`)."""
    if role.strip().lower() in OWN_PROCESS_MODULES:
        return Launch(OWN_PROCESS_MODULES[role.strip().lower()])
    roles = parse_roles(role)
    env: dict[str, str | None] = {"NEXUS_RUNTIME": runtime}
    if runtime == "faust":
        env["NEXUS_AGENTS"] = "" if roles == ROLES else ",".join(roles)
        return Launch("streams.worker", env=env)
    if runtime != "plain":
        raise CliError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if roles == ("alerting",):
        raise CliError(
            "role alerting has no plain runtime; start it on Faust: nexus worker --runtime faust --role alerting"
        )
    if roles == ("bridge",):
        env["NEXUS_AGENTS"] = None
        return Launch("streams.bridge", env=env)
    if set(roles) <= set(P2P_ROLES):
        env["NEXUS_AGENTS"] = "" if roles == P2P_ROLES else roles[0]
        return Launch("streams.p2p", env=env)
    raise CliError(
        f"roles {','.join(roles)} run in separate processes on the plain runtime; start one per process: "
        "nexus worker --runtime plain --role p2p (or matching / settlement), nexus worker --runtime plain "
        "--role bridge, and alerting on Faust: nexus worker --runtime faust --role alerting"
    )


def default_runtime() -> str:
    """The runtime setting (NEXUS_RUNTIME, streams/settings.py): the one place the default lives."""
    from streams.settings import get_settings

    return get_settings().runtime  # validated by the settings: faust or plain


def exec_module(launch: Launch) -> int:
    """Replace this process with ``python -m launch.module launch.args`` (returns only if execv is patched)."""
    for key, value in launch.env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    argv = [sys.executable, "-m", launch.module, *launch.args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        raise CliError(f"could not start {' '.join(argv)}: {exc.strerror or exc}") from exc
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    return exec_module(worker_launch(args.role, args.runtime or default_runtime()))


# ------------------------------------------------------------------------ topics


def _model_name(value_type: Any) -> str:
    """`OrderEvent`; a discriminated union (Annotated[A | B, ...]) as `A | B`."""
    if typing.get_origin(value_type) is typing.Annotated:
        return _model_name(typing.get_args(value_type)[0])
    if typing.get_origin(value_type) in (typing.Union, types.UnionType):
        return " | ".join(_model_name(member) for member in typing.get_args(value_type))
    return str(getattr(value_type, "__name__", value_type))


def cmd_topics(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from contracts.topics import TOPICS
    from streams.kafka.topic_admin import ensure_topics
    from streams.settings import get_settings

    settings = get_settings()
    bootstrap = settings.bootstrap_servers
    try:
        before = _cluster_partitions(bootstrap, args.timeout)
        created = [] if args.list else ensure_topics(settings)
        after = _cluster_partitions(bootstrap, args.timeout) if created else before
    except KafkaException as exc:
        hint = (
            "start the local broker (python -m infra.kafka.broker start, or nexus demo)"
            if settings.local_kafka
            else "check NEXUS_KAFKA_BOOTSTRAP_SERVERS and the network"
        )
        raise CliError(f"Kafka at {bootstrap} is unreachable ({_kafka_reason(exc)}): {hint}") from exc
    except RuntimeError as exc:  # a topic breaks a registry rule, or could not be created / configured
        raise CliError(str(exc)) from exc
    table = Table(title=f"registry topics on {bootstrap}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    for col in ("key", "model", "status"):
        table.add_column(col)
    for t in TOPICS.values():
        have = after.get(t.name)
        status = "[green]created[/]" if t.name in created else ("exists" if have is not None else "[red]missing[/]")
        wanted = t.partitions_with(settings.topic_partitions_override)
        shown = str(wanted) if have is None else (str(have) if have == wanted else f"{have} (registry {wanted})")
        table.add_row(t.name, shown, t.key_field, _model_name(t.value_type), status)
    out = Console()
    out.print(table)
    missing = sum(1 for name in TOPICS if name not in after)
    out.print(f"{len(created)} created, {len(TOPICS) - len(created) - missing} existed, {missing} missing")
    if args.list and missing:
        out.print("run `nexus topics` (without --list) to create the missing ones")
    return 0


def _cluster_partitions(bootstrap: str, timeout_s: float) -> dict[str, int]:
    import logging

    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("nexus.cli.kafka")  # librdkafka's connection retries would drown the one-line error
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    admin = AdminClient(config)
    return {name: len(md.partitions) for name, md in admin.list_topics(timeout=timeout_s).topics.items()}


def _kafka_reason(exc: Exception) -> str:
    err = exc.args[0] if exc.args else exc
    return str(err.str() if hasattr(err, "str") else err)


# ------------------------------------------------------------------------ dead letters


def _records(bootstrap: str, topic: str, key: bytes, timeout_s: float) -> list[bytes]:
    """The values of every record of `topic` with `key`, all partitions, up to their current ends."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.kafka.partition_log import read_partition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "nexus-cli-probe", "enable.auto.commit": False})
    try:
        metadata = probe.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise CliError(f"{topic}: {metadata.error.str()}")
        ends = {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in metadata.partitions
        }
    finally:
        probe.close()
    return [
        v for p, end in ends.items() for _o, k, v, _ms in read_partition(bootstrap, topic, p, end) if k == key and v
    ]


def find_dead_letter(bootstrap: str, source_topic: str, partition: int, offset: int, timeout_s: float) -> Any:
    """The dead letter of `source_topic`[partition]@offset (the last one, if a restart wrote it again)."""
    from contracts.topics import PLATFORM_DEADLETTERS

    for value in reversed(_records(bootstrap, PLATFORM_DEADLETTERS.name, source_topic.encode(), timeout_s)):
        letter = PLATFORM_DEADLETTERS.decode(value)
        if (letter.source_partition, letter.source_offset) == (partition, offset):
            return letter
    raise CliError(f"no dead letter for {source_topic}[{partition}]@{offset} on {PLATFORM_DEADLETTERS.name}")


def original_bytes(bootstrap: str, letter: Any, part: str, timeout_s: float) -> bytes | None:
    """The whole original key or value of `letter`: inline, or its payload record, checked against its SHA-256."""
    import base64
    import hashlib

    from contracts.topics import PLATFORM_DEADLETTER_PAYLOADS as PAYLOADS

    inline, truncated, ref, sha256 = (getattr(letter, f"{part}_{n}") for n in ("b64", "truncated", "ref", "sha256"))
    if inline is None:
        return None
    data = base64.b64decode(inline)
    if truncated:
        if ref is None:
            raise CliError(f"only the first {len(data)} bytes of the {part} were kept: it was too large to store")
        records = _records(bootstrap, PAYLOADS.name, ref.encode(), timeout_s)
        if not records:
            raise CliError(f"{ref} is not on {PAYLOADS.name} (kept 30 days, like the dead letters)")
        data = PAYLOADS.decode(records[-1]).data
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CliError(f"the {part} bytes found do not match the dead letter's SHA-256 {sha256}")
    return data


def cmd_deadletters(args: argparse.Namespace) -> int:
    from streams.settings import get_settings

    bootstrap = get_settings().bootstrap_servers
    letter = find_dead_letter(bootstrap, args.topic, args.partition, args.offset, args.timeout)
    out = Console()
    if args.action == "show":
        shown = letter.model_dump(mode="json", exclude={"key_b64", "value_b64"})
        out.print_json(data=shown)
        return 0
    if args.out is None:
        raise CliError("fetch needs --out FILE (the original value bytes are written there)")
    value = original_bytes(bootstrap, letter, "value", args.timeout)
    with open(args.out, "wb") as file:
        file.write(value or b"")
    out.print(f"wrote {len(value or b'')} bytes (SHA-256 verified) to {args.out}")
    if args.key_out is not None:
        key = original_bytes(bootstrap, letter, "key", args.timeout) or b""
        with open(args.key_out, "wb") as file:
            file.write(key)
        out.print(f"wrote the {len(key)}-byte key to {args.key_out}")
    return 0


# ------------------------------------------------------------------------ demo, schemas, warehouse


def cmd_demo(args: argparse.Namespace) -> int:
    # devtools is never imported by production code: the demo runs as its own program.
    forwarded = ["--runtime", args.runtime or default_runtime()]
    if args.duration is not None:
        forwarded += ["--duration", str(args.duration)]
    if args.rate is not None:
        forwarded += ["--rate", str(args.rate)]
    return exec_module(Launch("devtools.demo", tuple(forwarded)))


def cmd_api(args: argparse.Namespace) -> int:
    return exec_module(Launch("streams.api", tuple(args.args)))


def cmd_stop(args: argparse.Namespace) -> int:
    return exec_module(Launch("devtools.demo", ("--stop",)))


def cmd_schemas(args: argparse.Namespace) -> int:
    return exec_module(Launch("contracts"))


def warehouse_argv(command: str, rest: Sequence[str]) -> list[str]:
    """`nexus recon [run] ...` and `nexus exceptions ...` as warehouse.cli arguments."""
    if command == "exceptions":
        return ["exceptions", *rest]
    if rest and rest[0] == "run":
        return list(rest)
    return ["run", *rest]


def run_warehouse(command: str, rest: Sequence[str]) -> int:
    from warehouse.cli import main as warehouse_main

    return warehouse_main(warehouse_argv(command, rest))


# ------------------------------------------------------------------------ parser

WORKER_HELP = """\
Start one worker; this process becomes it (signals and exit status are the worker's own).

  runtime  role(s)                         runs                      NEXUS_AGENTS
  faust    any of matching, settlement,    python -m streams.worker  the roles (empty = all)
           bridge, alerting (or all)
  plain    matching | settlement | p2p     python -m streams.p2p     matching | settlement | "" (both)
  plain    bridge                          python -m streams.bridge  -
  plain    alerting                        (none: run alerting on faust)
  any      payouts | notifier | kyc        python -m streams.payouts | streams.notifications | streams.kyc
  any      keys | audit | governance       python -m streams.security.keys | .audit_log | .governance
  any      status                          python -m streams.status   the settlement status read model
  any      api                             python -m streams.api      the settlement API (start status first)

--role takes one role, several comma-separated (faust), or an alias: p2p = matching,settlement,
all = every role. The default runtime is the `runtime` setting (NEXUS_RUNTIME, streams/settings.py).
Example: nexus worker --runtime plain --role p2p

The API and the status service share the read model's file: give both the same NEXUS_DATA_DIR and NEXUS_APP_ID
(or the same NEXUS_STATUS_DB_PATH). Register the API's clients with `nexus api clients add` (docs/api.md).
"""

TOPICS_HELP = """\
Create the registry topics (contracts/topics.py) on the configured cluster (NEXUS_KAFKA_BOOTSTRAP_SERVERS,
empty = the local broker) and print each topic: partitions, key, model, and whether it was created now,
existed already, or is missing. Idempotent; existing topics get the registry's correctness configs.
--list only reads the cluster and creates nothing.
"""

DEADLETTERS_HELP = """\
Find the dead letter of one rejected record on platform.deadletters (kept 30 days) by where the record was:
SOURCE_TOPIC PARTITION OFFSET.

  nexus deadletters show energy.orders 2 1187                  the dead letter: reason, errors, sizes, SHA-256
  nexus deadletters fetch energy.orders 2 1187 --out rec.bin   the original value bytes, for a fixed replay
                                               [--key-out key.bin]

A dead letter holds a value whole up to 16 KiB (a key up to 1 KiB); a larger one is a prefix, and the whole bytes
are on platform.deadletters.payloads (gzip, kept 30 days like the dead letters) under the letter's value_ref /
key_ref. fetch reads them from there and checks them against the letter's SHA-256. A payload over 960 KiB
compressed was not stored: fetch then says so (only the prefix exists).
"""

API_HELP = """\
The settlement API (docs/api.md): HTTP over the streams for merchants and operators, OAuth2 client credentials,
idempotency keys. Arguments go to python -m streams.api unchanged:

  nexus api                                           serve on NEXUS_API_HOST:NEXUS_API_PORT (127.0.0.1:19100);
                                                      the same as nexus worker --role api
  nexus api clients add cafe --role merchant --subject merchant-cafe-9   register a client (prints its secret once)
  nexus api clients list                              the clients, roles and subjects (never a secret)
  nexus api openapi [--check]                         write (or check) streams/api/openapi.json

It reads the status read model: start nexus worker --role status first, with the same NEXUS_DATA_DIR and
NEXUS_APP_ID (or NEXUS_STATUS_DB_PATH).
"""

DEMO_HELP = """\
Run the local demo (what `make run` does: python -m devtools.demo): start Kafka unless
NEXUS_KAFKA_BOOTSTRAP_SERVERS is set, the workers, seeded traffic, with a live view. Ctrl-C stops it all.
The runtime defaults to the `runtime` setting (NEXUS_RUNTIME).
"""

RECON_HELP = """\
Run the daily reconciliation for one day, in process (warehouse.cli run): snapshot, provider sync,
data quality, variance analysis, exception review, report. Arguments go to warehouse.cli unchanged:

  nexus recon --date 2026-11-01 [--no-email]          = python -m warehouse.cli run --date ...
  python -m devtools.recon_demo seed --date 2026-11-01 [--days 2]   seeded test data (a dev tool, not nexus)
  nexus recon run --help                              the full options
"""

EXCEPTIONS_HELP = """\
Review the reconciliation exception queue (warehouse.cli exceptions). Arguments go to warehouse.cli unchanged:

  nexus exceptions list [--state open|correction_requested|...|all] [--class fee_variance] [--limit 50]
  nexus exceptions show EXCEPTION_ID
  nexus exceptions approve|correct|write-off EXCEPTION_ID --reason "..." [--actor NAME]
  nexus exceptions correct K:SETTLEMENT_ID --reason "..." [--from-account A] [--to-account B] [--amount K-AUS]
                                                    [--expiry-hours 168]
  nexus exceptions check-corrections                  close the corrections governance decided (governance.multisig)
  nexus exceptions publish                            send the queued audit records and correction requests

Every review action needs --reason and is kept in the audit trail with the actor (default $USER): an audit record
on audit.records (queued in the warehouse while Kafka cannot be reached). Correcting a ledger break (K:..., the
payer owes K-AUS) asks the signers for a multi-sig LEDGER_CORRECTION instead of closing it (docs/reconciliation.md).
"""


def _sub(sub: Any, name: str, summary: str, description: str, handler: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = _sub(sub, "worker", "start a worker for a role (faust or plain runtime)", WORKER_HELP, cmd_worker)
    worker.add_argument(
        "--role",
        required=True,
        help="matching, settlement, bridge, alerting, p2p or all; or, each its own process, one of "
        + ", ".join(OWN_PROCESS_MODULES),
    )
    worker.add_argument("--runtime", choices=RUNTIMES, default=None, help="default: the runtime setting")
    api = _sub(sub, API_COMMAND, "the settlement API and its clients (python -m streams.api)", API_HELP, cmd_api)
    api.add_argument("args", nargs=argparse.REMAINDER, metavar="...", help="arguments for python -m streams.api")
    topics = _sub(sub, "topics", "create the registry topics on the cluster and show them", TOPICS_HELP, cmd_topics)
    topics.add_argument("--list", action="store_true", help="only show the topics; create nothing")
    topics.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the cluster")
    dead = _sub(sub, "deadletters", "show a dead letter / fetch its original bytes", DEADLETTERS_HELP, cmd_deadletters)
    dead.add_argument("action", choices=("show", "fetch"))
    dead.add_argument("topic", metavar="SOURCE_TOPIC", help="the topic the rejected record was on")
    dead.add_argument("partition", type=int, metavar="PARTITION")
    dead.add_argument("offset", type=int, metavar="OFFSET")
    dead.add_argument("--out", default=None, help="fetch: file for the original value bytes")
    dead.add_argument("--key-out", default=None, help="fetch: file for the original key bytes")
    dead.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the cluster")
    demo = _sub(sub, "demo", "run the local demo with live progress (make run)", DEMO_HELP, cmd_demo)
    demo.add_argument("--runtime", choices=RUNTIMES, default=None, help="default: the runtime setting")
    demo.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rate", type=int, default=None, help="orders per second to produce (default 500)")
    _sub(
        sub,
        "stop",
        "stop what a demo left running (broker, workers)",
        "Stop what an earlier demo left running: workers, monitoring, provider simulator, the local broker\n"
        "(python -m devtools.demo --stop; what `make stop` does).\n",
        cmd_stop,
    )
    for name, summary, description in (
        ("recon", "run the daily reconciliation for a day (warehouse)", RECON_HELP),
        ("exceptions", "review the reconciliation exception queue (warehouse)", EXCEPTIONS_HELP),
    ):
        _sub(sub, name, summary, description, None).add_argument(
            "args", nargs=argparse.REMAINDER, metavar="...", help="arguments for warehouse.cli"
        )
    _sub(
        sub,
        "schemas",
        "regenerate the JSON Schemas and contracts/README.md",
        "Regenerate contracts/schemas/*.schema.json and contracts/README.md from the models\n"
        "(python -m contracts; what `make schemas` does). Run it after changing a model.\n",
        cmd_schemas,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    err = Console(stderr=True, highlight=False)
    try:
        # recon / exceptions take warehouse.cli's arguments as they are; only their own --help is ours.
        if argv and argv[0] in FORWARDED and not (len(argv) > 1 and argv[1] in HELP_FLAGS):
            return run_warehouse(argv[0], argv[1:])
        if argv and argv[0] == API_COMMAND and not (len(argv) > 1 and argv[1] in HELP_FLAGS):
            return exec_module(Launch("streams.api", tuple(argv[1:])))
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except CliError as exc:
        err.print(f"[red]nexus: error:[/] {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:  # a NEXUS_* variable the settings refuse
        first = exc.errors()[0]
        where = "_".join(str(p) for p in first["loc"]).upper()
        err.print(f"[red]nexus: error:[/] setting NEXUS_{where}: {first['msg']}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
