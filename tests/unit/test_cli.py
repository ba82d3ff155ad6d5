"""The operators' CLI (`nexus`, streams/cli.py): help texts, what each worker role starts, actionable errors."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from streams import cli
from streams.settings import Settings


class Exec:
    """Stands in for os.execv: records what would have replaced the process, and the env it would inherit."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, argv: list[str]) -> None:
        self.calls.append((path, list(argv), dict(os.environ)))

    @property
    def module(self) -> str:
        [(_, argv, _)] = self.calls
        assert argv[:2] == [sys.executable, "-m"]
        return argv[2]

    @property
    def args(self) -> list[str]:
        return self.calls[0][1][3:]

    @property
    def env(self) -> dict[str, str]:
        return self.calls[0][2]


@pytest.fixture
def execv(monkeypatch: pytest.MonkeyPatch) -> Exec:
    fake = Exec()
    monkeypatch.setattr(os, "execv", fake)
    # set through monkeypatch so what the CLI writes into os.environ is undone after the test
    monkeypatch.setenv("NEXUS_RUNTIME", "")
    monkeypatch.delenv("NEXUS_RUNTIME")
    monkeypatch.setenv("NEXUS_AGENTS", "left-over")  # an operator's own value: each role sets (or drops) its own
    return fake


@pytest.mark.parametrize(
    ("argv", "purpose"),
    [
        ([], "operators' CLI"),
        (["worker"], "Start one worker"),
        (["topics"], "Create the registry topics"),
        (["demo"], "Run the local demo"),
        (["stop"], "Stop what an earlier demo left running"),
        (["recon"], "daily reconciliation"),
        (["exceptions"], "exception queue"),
        (["schemas"], "Regenerate contracts/schemas"),
        (["api"], "The settlement API"),
    ],
)
def test_help_exits_zero_and_says_what_the_command_is_for(
    argv: list[str], purpose: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert purpose in out
    assert f"usage: nexus {' '.join(argv)}".rstrip() in out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["-h"])
    out = capsys.readouterr().out
    for command in ("worker", "topics", "demo", "stop", "recon", "exceptions", "schemas", "api"):
        assert f"    {command}" in out


@pytest.mark.parametrize(
    ("runtime", "role", "module", "agents"),
    [
        ("faust", "matching", "streams.worker", "matching"),
        ("faust", "bridge", "streams.worker", "bridge"),
        ("faust", "alerting", "streams.worker", "alerting"),
        ("faust", "settlement,matching", "streams.worker", "matching,settlement"),
        ("faust", "p2p", "streams.worker", "matching,settlement"),
        ("faust", "all", "streams.worker", ""),
        ("plain", "matching", "streams.p2p", "matching"),
        ("plain", "settlement", "streams.p2p", "settlement"),
        ("plain", "p2p", "streams.p2p", ""),
        ("plain", "matching,settlement", "streams.p2p", ""),
        ("plain", "bridge", "streams.bridge", None),
    ],
)
def test_worker_role_starts_its_module_with_its_agents(
    execv: Exec, runtime: str, role: str, module: str, agents: str | None
) -> None:
    assert cli.main(["worker", "--runtime", runtime, "--role", role]) == 0
    assert execv.calls[0][0] == sys.executable
    assert execv.module == module
    assert execv.args == []
    assert execv.env.get("NEXUS_AGENTS") == agents
    assert execv.env["NEXUS_RUNTIME"] == runtime


@pytest.mark.parametrize("runtime", ["faust", "plain"])
@pytest.mark.parametrize(
    ("role", "module"),
    [
        ("payouts", "streams.payouts"),
        ("notifier", "streams.notifications"),
        ("KYC", "streams.kyc"),
        ("keys", "streams.security.keys"),
        ("audit", "streams.security.audit_log"),
        ("governance", "streams.security.governance"),
        ("status", "streams.status"),
        ("api", "streams.api"),
    ],
)
def test_own_process_roles_run_their_own_process_on_either_runtime(
    execv: Exec, runtime: str, role: str, module: str
) -> None:
    assert cli.main(["worker", "--runtime", runtime, "--role", role]) == 0
    assert execv.module == module and execv.args == []


def test_worker_help_says_how_the_api_and_its_read_model_share_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["worker", "--help"])
    out = capsys.readouterr().out
    assert "python -m streams.status" in out and "python -m streams.api" in out
    assert "NEXUS_STATUS_DB_PATH" in out


@pytest.mark.parametrize(
    "argv",
    [[], ["clients", "add", "cafe", "--role", "merchant", "--subject", "merchant-cafe-9"], ["openapi", "--check"]],
)
def test_api_arguments_go_to_the_api_unchanged(execv: Exec, argv: list[str]) -> None:
    assert cli.main(["api", *argv]) == 0
    assert execv.module == "streams.api" and execv.args == argv


def test_worker_runtime_defaults_to_the_runtime_setting(execv: Exec, monkeypatch: pytest.MonkeyPatch) -> None:
    class WithRuntime:
        runtime = "faust"

    monkeypatch.setattr("streams.settings.get_settings", lambda: WithRuntime())
    assert cli.main(["worker", "--role", "bridge"]) == 0
    assert execv.module == "streams.worker"


def test_worker_runtime_plain_from_the_setting(execv: Exec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_RUNTIME", "plain")
    monkeypatch.setattr("streams.settings.get_settings", lambda: Settings())
    assert cli.main(["worker", "--role", "bridge"]) == 0
    assert execv.module == "streams.bridge"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--role", "ledger"], "unknown role 'ledger'; choose from matching, settlement, bridge, alerting"),
        (["worker", "--role", " , "], "no role given"),
        (["worker", "--runtime", "plain", "--role", "alerting"], "role alerting has no plain runtime"),
        (["worker", "--runtime", "plain", "--role", "p2p,bridge"], "run in separate processes"),
        (["worker", "--runtime", "plain", "--role", "all"], "alerting on Faust"),
    ],
)
def test_actionable_errors_are_one_line_and_fail(
    execv: Exec, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert execv.calls == []
    err = capsys.readouterr().err
    assert err.startswith("nexus: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_alerting_on_plain_says_how_to_run_it() -> None:
    with pytest.raises(cli.CliError, match="nexus worker --runtime faust --role alerting"):
        cli.worker_launch("alerting", "plain")


def test_unknown_runtime_is_refused_by_the_parser(execv: Exec, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["worker", "--runtime", "kstreams", "--role", "matching"])
    assert exit_.value.code == 2
    assert "invalid choice: 'kstreams'" in capsys.readouterr().err


def test_demo_and_stop_run_devtools_as_a_program_never_imported(execv: Exec, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "devtools" or m.startswith("devtools.")]:
        monkeypatch.delitem(sys.modules, name)  # another test may have imported it; the CLI must not
    assert cli.main(["demo", "--runtime", "plain", "--duration", "30", "--rate", "100"]) == 0
    assert cli.main(["stop"]) == 0
    [demo, stop] = execv.calls
    assert demo[1][2:] == ["devtools.demo", "--runtime", "plain", "--duration", "30.0", "--rate", "100"]
    assert stop[1][2:] == ["devtools.demo", "--stop"]
    assert "devtools" not in sys.modules
    assert not any(m.startswith("devtools.") for m in sys.modules)


def test_demo_runtime_defaults_to_the_runtime_setting(execv: Exec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_RUNTIME", "plain")
    monkeypatch.setattr("streams.settings.get_settings", lambda: Settings())
    assert cli.main(["demo"]) == 0
    assert execv.args == ["--runtime", "plain"]


def test_schemas_runs_the_contracts_generator(execv: Exec) -> None:
    assert cli.main(["schemas"]) == 0
    assert execv.module == "contracts"


@pytest.mark.parametrize(
    ("argv", "forwarded"),
    [
        (["recon", "--date", "2026-11-01", "--no-email"], ["run", "--date", "2026-11-01", "--no-email"]),
        (["recon", "run", "--date", "2026-11-01"], ["run", "--date", "2026-11-01"]),
        # no seeding through nexus: test data is a dev tool's (devtools.recon_demo)
        (["recon", "seed"], ["run", "seed"]),
        (["recon", "run", "--help"], ["run", "--help"]),
        (["exceptions", "list", "--state", "all"], ["exceptions", "list", "--state", "all"]),
        (
            ["exceptions", "approve", "S:BR-1", "--reason", "late booking"],
            ["exceptions", "approve", "S:BR-1", "--reason", "late booking"],
        ),
    ],
)
def test_recon_and_exceptions_forward_to_the_warehouse_cli(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], forwarded: list[str]
) -> None:
    seen: list[Any] = []

    def fake_main(args: list[str]) -> int:
        seen.append(args)
        return 7

    monkeypatch.setattr("warehouse.cli.main", fake_main)
    assert cli.main(argv) == 7
    assert seen == [forwarded]


def test_topics_reports_an_unreachable_broker_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.settings import get_settings

    monkeypatch.setenv("NEXUS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # discard port: nothing listens
    get_settings.cache_clear()
    try:
        assert cli.main(["topics", "--list", "--timeout", "1"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("nexus: error: Kafka at 127.0.0.1:9 is unreachable")
    assert "NEXUS_KAFKA_BOOTSTRAP_SERVERS" in err
    assert err.count("\n") == 1


def test_topics_creates_the_registry_and_shows_each_topic(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from contracts.topics import TOPICS

    on_cluster = {"energy.orders": 4}
    created: list[str] = []

    def fake_ensure(settings: Any) -> list[str]:
        created.extend(name for name in TOPICS if name not in on_cluster)
        on_cluster.update({name: 4 for name in created})
        return list(created)

    monkeypatch.setattr(cli, "_cluster_partitions", lambda bootstrap, timeout_s: dict(on_cluster))
    monkeypatch.setattr("streams.kafka.topic_admin.ensure_topics", fake_ensure)
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["topics"]) == 0
    out = capsys.readouterr().out
    assert f"{len(TOPICS) - 1} created, 1 existed, 0 missing" in out
    assert "SubmitOrder | CancelOrder" in out  # a union's members, not "Annotated"
    assert "ledger.commands" in out and "command_id" in out
