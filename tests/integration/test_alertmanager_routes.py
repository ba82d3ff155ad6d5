"""The rendered Alertmanager config routes each rule where spec §5.2 says, checked with `amtool config routes test`.

amtool resolves the receiver (the authority on Alertmanager routing); the route path it prints is then
looked up in the rendered YAML for the effective repeat interval / group wait (the escalation level).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from domain.alert_rules import load_rules
from infra.alertmanager.launcher import Timings, check_config, render_config
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (infra/install-system-deps.sh)"
)

RULES = load_rules((REPO_ROOT / "streams" / "alerting" / "rules.toml").read_text())

# Spec §5.2: channel and escalation per alert type.
SPEC = {
    "SettlementDelay": ("slack", "5m"),  # L1 -> 5min
    "SettlementFailed": ("pagerduty", "immediate"),  # Immediate
    "HighVolume": ("email", "15m"),  # L2 -> 15min
    "FxSlippage": ("slack", "5m"),  # L1 -> 5min
    "HsmKeyExpiry": ("email", "24h"),  # L3 -> 24h
    "MultisigPending": ("sms", "30m"),  # L2 -> 30min
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("am") / "alertmanager.yml"
    path.write_text(render_config(Settings(), Timings()))
    check_config(path)
    return path


def amtool(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["amtool", "config", "routes", "test", f"--config.file={config}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def route_path(config: Path, labels: list[str]) -> list[str]:
    """The matchers of each route amtool walks, e.g. ['{channel="email"}', '{escalation="L3"}']."""
    out = amtool(config, "--tree", *labels).stdout
    return re.findall(r"(\{[^}]*\})", out.split("Matching routes:")[1])


def effective(config: Path, path: list[str], key: str) -> Any:
    """A route setting as Alertmanager applies it: the deepest route on the path that sets it."""
    route = YAML(typ="safe").load(config.read_text())["route"]
    value = route.get(key)
    for matchers in path:
        route = next(r for r in route["routes"] if "{" + ",".join(r["matchers"]) + "}" == matchers)
        value = route.get(key, value)
    return value


def labels_of(rule_name: str) -> list[str]:
    rule = RULES.rule(rule_name)
    return [
        f"alertname={rule.name}",
        f"severity={rule.severity}",
        f"channel={rule.channel}",
        f"escalation={rule.escalation}",
        "fingerprint=0123456789abcdef",
        "region=KR",
    ]


def test_rules_file_matches_the_spec_channels() -> None:
    assert {r.name: r.channel for r in RULES.rules} == {name: channel for name, (channel, _) in SPEC.items()}


@pytest.mark.parametrize("rule_name", sorted(SPEC))
def test_each_rule_routes_to_its_channel_with_its_escalation(config_file: Path, rule_name: str) -> None:
    channel, escalation = SPEC[rule_name]
    labels = labels_of(rule_name)
    done = amtool(config_file, f"--verify.receivers={channel}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == channel  # one receiver: nobody is notified twice for one alert
    path = route_path(config_file, labels)
    if escalation == "immediate":
        assert effective(config_file, path, "group_wait") == "0s"
        assert effective(config_file, path, "repeat_interval") == "5m"
    else:
        assert effective(config_file, path, "repeat_interval") == escalation
        assert effective(config_file, path, "group_wait") == "10s"


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "pagerduty"), ("warning", "slack"), ("info", "email")])
def test_alerts_without_a_channel_route_by_severity(config_file: Path, severity: str, receiver: str) -> None:
    done = amtool(config_file, f"--verify.receivers={receiver}", "alertname=External", f"severity={severity}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_pagerduty_groups_by_fingerprint_and_email_by_rule(config_file: Path) -> None:
    assert effective(config_file, route_path(config_file, labels_of("SettlementFailed")), "group_by") == [
        "alertname",
        "fingerprint",
    ]
    assert effective(config_file, route_path(config_file, labels_of("HsmKeyExpiry")), "group_by") == ["alertname"]
    assert effective(config_file, route_path(config_file, labels_of("MultisigPending")), "group_by") == ["alertname"]


def test_receiver_urls_come_from_settings_and_are_quoted(tmp_path: Path) -> None:
    settings = Settings(
        alert_slack_webhook_url="https://hooks.slack.com/services/T0/B0/x'y#z",
        alert_pagerduty_url="https://events.pagerduty.com/v2/enqueue",
        alert_pagerduty_routing_key="R0UT1NGKEY",
        alert_email_to="oncall@nexus-x.io",
        alert_sms_webhook_url="https://sms.example/send?to=+8210",
    )
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_config(settings, Timings.fast()))
    check_config(path)
    config = YAML(typ="safe").load(path.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["slack"]["slack_configs"][0]["api_url"] == "https://hooks.slack.com/services/T0/B0/x'y#z"
    assert receivers["pagerduty"]["pagerduty_configs"][0]["routing_key"] == "R0UT1NGKEY"
    assert receivers["sms"]["webhook_configs"][0]["url"] == "https://sms.example/send?to=+8210"
    assert receivers["email"]["email_configs"][0]["to"] == "oncall@nexus-x.io"
    assert config["route"]["group_wait"] == "1s" and config["route"]["group_interval"] == "1s"
    assert config["global"]["resolve_timeout"] == "5m"
    assert config["inhibit_rules"] == [
        {"source_matchers": ['alertname="SettlementFailed"'], "target_matchers": ['alertname="SettlementDelay"']}
    ]
