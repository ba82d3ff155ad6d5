"""The platform alerts (what watches the platform itself), rendered as a Prometheus rule file.

The business alerts (spec §5.2) come from the alerting agent; these come from Prometheus, scraping every worker's
``/metrics`` (``streams/ops``). Both reach the same Alertmanager and its routing tree
(``infra/alertmanager/alertmanager.yml.tmpl``): ``channel`` picks the receiver and ``escalation`` the repeat
interval, as for the business alerts; ``Watchdog`` has a route of its own, to the dead man's switch.
Every alert's ``runbook_url`` is ``docs/runbooks/<alertname>.md`` under a base URL.

Thresholds and ``for:`` durations are :class:`Tuning` fields, so tests shorten them without another file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JOB = "nexus-workers"


@dataclass(frozen=True)
class Tuning:
    """Durations (Prometheus syntax) and thresholds of the platform alerts; the defaults are production's."""

    worker_down_for: str = "1m"
    lag_messages_max: int = 10_000  # a consumer group this far behind on one partition
    lag_for: str = "5m"
    deadletter_window: str = "5m"
    deadletters_per_window_max: int = 10  # dead letters of one source topic within the window
    deadletter_for: str = "0m"
    breaker_open_for: str = "0m"  # an open breaker pages at once; it half-opens after its 30 s cool-down
    snapshot_age_max_s: int = 1_800  # three missed snapshots at the default 600 s period
    snapshot_for: str = "5m"
    standby_delay_max_s: int = 60  # spec §9.1: RPO < 1 minute
    standby_delay_for: str = "2m"  # MM2 pauses copying while its tasks rebalance (a restart): tens of seconds


@dataclass(frozen=True)
class PlatformAlert:
    name: str
    expr: str
    for_: str
    labels: dict[str, str]
    summary: str
    description: str


def alerts(t: Tuning) -> list[PlatformAlert]:
    """The platform alerts under tuning ``t``."""
    return [
        PlatformAlert(
            "Watchdog",
            "vector(1)",
            "0m",
            {"severity": "none", "channel": "deadmansswitch"},
            "Always firing: the alerting pipeline is alive",
            "Prometheus evaluates its rules and Alertmanager delivers. The dead man's switch pages when this stops.",
        ),
        PlatformAlert(
            "NexusWorkerDown",
            f'up{{job="{JOB}"}} == 0',
            t.worker_down_for,
            {"severity": "critical", "channel": "pagerduty", "escalation": "immediate"},
            "Worker {{ $labels.component }} at {{ $labels.instance }} is down",
            "Prometheus cannot scrape {{ $labels.instance }}: the process is gone or its /metrics does not answer.",
        ),
        PlatformAlert(
            "NexusConsumerLagHigh",
            f"max by (topic, partition) (nexus_consumer_lag_messages) > {t.lag_messages_max}",
            t.lag_for,
            {"severity": "warning", "channel": "slack", "escalation": "L1"},
            "{{ $labels.topic }}[{{ $labels.partition }}] is {{ $value }} messages behind",
            f"A consumer group is more than {t.lag_messages_max} messages behind on one partition.",
        ),
        PlatformAlert(
            "NexusDeadLetterRate",
            f"sum by (source_topic) (increase(nexus_deadletters_written_total[{t.deadletter_window}]))"
            f" > {t.deadletters_per_window_max}",
            t.deadletter_for,
            {"severity": "warning", "channel": "slack", "escalation": "L1"},
            "{{ $value }} dead letters from {{ $labels.source_topic }} in " + t.deadletter_window,
            "Workers reject this topic's records into platform.deadletters faster than usual.",
        ),
        PlatformAlert(
            "NexusBreakerOpen",
            "max by (rail) (nexus_rail_breaker_state) == 2",
            t.breaker_open_for,
            {"severity": "warning", "channel": "slack", "escalation": "L1"},
            "The circuit breaker of rail {{ $labels.rail }} is open",
            "Three calls in a row to this rail failed; payments fail over to the region's next rail.",
        ),
        PlatformAlert(
            "NexusLedgerSnapshotTooOld",
            f"max by (topic, partition) (nexus_ledger_snapshot_age_seconds) > {t.snapshot_age_max_s}",
            t.snapshot_for,
            {"severity": "warning", "channel": "email", "escalation": "L2"},
            "The newest ledger snapshot of {{ $labels.topic }}[{{ $labels.partition }}] is {{ $value }} s old",
            "A restart would replay ledger.commands from an old snapshot (a long recovery).",
        ),
        PlatformAlert(
            "NexusStandbyReplicationBehind",
            f"max by (topic) (nexus_standby_replication_delay_seconds) > {t.standby_delay_max_s}",
            t.standby_delay_for,
            {"severity": "critical", "channel": "pagerduty", "escalation": "immediate"},
            "The standby region lacks {{ $labels.topic }} records older than {{ $value }} s",
            f"MirrorMaker 2 is not keeping the standby within the {t.standby_delay_max_s} s RPO: losing the primary "
            "now would lose more than that.",
        ),
    ]


def rule_file(t: Tuning, runbook_base_url: str) -> str:
    """The rule file's text (JSON, which is YAML): one group, every alert with its ``runbook_url``."""
    rules: list[dict[str, Any]] = []
    for a in alerts(t):
        fingerprint = "{{ $labels.instance }}{{ $labels.topic }}{{ $labels.partition }}{{ $labels.rail }}"
        rules.append(
            {
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": {**a.labels, "source": "prometheus", "fingerprint": f"{a.name}:{fingerprint}"},
                "annotations": {
                    "summary": a.summary,
                    "description": a.description,
                    "runbook_url": f"{runbook_base_url.rstrip('/')}/{a.name}.md",
                },
            }
        )
    return json.dumps({"groups": [{"name": "nexus-platform", "rules": rules}]}, indent=2) + "\n"


__all__ = ["JOB", "PlatformAlert", "Tuning", "alerts", "rule_file"]
