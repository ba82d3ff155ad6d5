"""Platform configuration from the environment (prefix NEXUS_), with defaults that run locally."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.kafka.event_loop import LoopKind

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_", env_file=".env", extra="ignore")

    # Empty = start the local single-node broker from infra/kafka; set it to use an existing cluster.
    kafka_bootstrap_servers: str = ""
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    # The demo's standby region (devtools/standby_demo.py): a second local broker MirrorMaker 2 copies to.
    standby_kafka_port: int = 19192
    standby_kafka_controller_port: int = 19193
    # ... and its replication monitor's /metrics (infra.kafka.replication_monitor, scraped by the demo's Prometheus)
    standby_monitor_port: int = 19194
    # Replication of the topics streams.kafka.topic_admin creates. None = from the cluster's size: min(3, brokers),
    # and min.insync.replicas 2 from 3 replicas on (1 below), so the single local broker and a 3-broker cluster
    # both work unchanged (docs/disaster-recovery.md).
    topic_replication_factor: int | None = Field(default=None, ge=1)
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    topic_partitions_override: int | None = Field(default=None, description="force partition count for every topic")
    # librdkafka batching, for every client from streams.kafka.clients (docs/performance.md has the trade-off):
    # a producer waits up to kafka_linger_ms to fill a batch; a fetch returns once kafka_fetch_min_bytes are
    # there or kafka_fetch_wait_max_ms passed. Defaults favour latency (send and return at once).
    kafka_linger_ms: float = Field(default=0.0, ge=0)
    kafka_fetch_min_bytes: int = Field(default=1, ge=1)
    kafka_fetch_wait_max_ms: int = Field(default=100, ge=0)
    # librdkafka debug contexts for the plain loop's consumer (e.g. "cgrp"): the group protocol in its log.
    plain_kafka_debug: str = ""

    # The runtime `make run`, `nexus worker` and `nexus demo` use. Faust is the platform's design (every agent,
    # alerting included); "plain" drives the same processors on confluent-kafka loops where throughput matters.
    runtime: Literal["faust", "plain"] = "faust"

    app_id: str = "nexus-settlement"
    # Comma-separated agent modules to run in this worker (e.g. "matching,settlement"); empty = all.
    agents: str = ""
    worker_web_port: int = 6066
    # Listen addresses: every server we start binds loopback unless its *_host says otherwise (0.0.0.0 = all).
    worker_web_host: str = "127.0.0.1"  # the Faust worker's web server (Faust's web_bind)
    # Static group membership: a restarted worker takes its predecessor's partitions at once, no rebalance.
    worker_instance_id: str = "worker-1"
    broker_session_timeout_s: float = 10.0  # the Faust worker's group session
    # The plain loops' group session (librdkafka static members). It must outlast a group coordinator's move: the
    # cluster fences a dead broker after its broker.session.timeout.ms (Kafka's default 9 s, ours 4 s), then another
    # node loads the group. If the session runs out first, librdkafka rejoins and fences itself (FENCED_INSTANCE_ID,
    # fatal: librdkafka issue 3437) and the worker exits. A restarted worker (same instance id) takes its partitions
    # back at once whatever this is; only a worker gone for good holds them this long.
    static_session_timeout_s: float = Field(default=30.0, ge=6.0)  # the brokers' group.min.session.timeout.ms
    metrics_port: int = 9464  # /metrics and /healthz of this process (streams/ops); 0 = not served
    metrics_lag_interval_s: float = Field(default=15.0, gt=0)  # consumer-lag gauges refreshed this often
    log_format: Literal["json", "text"] = "json"  # streams/ops/logs.py: JSON lines, or the classic text line
    data_dir: Path = REPO_ROOT / ".local"
    # Collect-and-freeze period of the worker's garbage-collector policy (streams/kafka/gc_policy.py); 0 = off.
    gc_freeze_interval_s: float = Field(default=0.5, ge=0)
    gc_full_collection_every_s: float = Field(default=3600.0, ge=0)  # reclaims cycles that died while frozen

    # The plain ledger loop writes a snapshot of the ledger this often (streams/p2p/snapshots.py), so a
    # restart replays ledger.commands from there instead of from the beginning; 0 = never.
    ledger_snapshot_every_s: float = Field(default=600.0, ge=0)

    # Dividend epochs (spec §2.1): the ledger declares each closed epoch once; its timer appends the epoch's
    # DECLARE_DIVIDENDS to ledger.commands this often (0 = no timer). Default: one UTC day from 00:00.
    dividend_epoch_minutes: int = Field(default=1440, ge=1)
    dividend_epoch_offset_minutes: int = Field(default=0, ge=0)
    dividend_timer_every_s: float = Field(default=10.0, ge=0)
    # The staking vault (spec §1): a stake is locked this long, then unbonds this long before it is released.
    # Placeholders: the spec gives no figures.
    staking_lock_minutes: int = Field(default=7 * 24 * 60, ge=0)
    staking_unbonding_minutes: int = Field(default=2 * 24 * 60, ge=0)

    # Ingress: messages above this size are dead-lettered (the registry may lower it per topic).
    max_ingress_message_bytes: int = 64 * 1024
    # The demo starts a local schema registry (infra/schema_registry) holding contracts/schemas, for producers whose
    # Confluent serializers fetch or register schemas. Ingress never asks it (streams/kafka/wire_format.py).
    local_schema_registry: bool = False

    # Event loop of the asyncio processes we run ourselves (the bridge's plain runtime, the provider simulator):
    # uvloop spends less CPU per socket event than asyncio's own loop (docs/performance.md); "asyncio" is the fallback.
    event_loop: LoopKind = "uvloop"

    # High-Speed Bridge agent: settlements in flight at once (a slow rail holds one slot) and admitted in total.
    bridge_max_in_flight: int = Field(default=512, ge=1)
    bridge_max_queued: int = Field(default=4096, ge=1)
    # A (re)started bridge answers no request until its FX book holds fresh quotes, waiting at most this long.
    bridge_fx_ready_timeout_s: float = Field(default=15.0, ge=0)
    # How long the bridge waits for the ledger's answer to one hold, capture or void (then LEDGER_TIMEOUT; an
    # unanswered capture after payout is re-sent, then parked: never failed). Lowered only by tests.
    bridge_ledger_timeout_s: float = Field(default=10.0, gt=0)

    @property
    def bridge_result_index_path(self) -> Path:
        """The bridge's local result index (streams/bridge/result_index.py): one file per worker instance."""
        return self.data_dir / "bridge" / f"results-{self.app_id}-{self.worker_instance_id}.sqlite3"

    provider_sim_port: int = 19480  # the local payout-provider simulator (infra/provider_sim) in the demo
    provider_sim_host: str = "127.0.0.1"
    alertmanager_url: str = "http://127.0.0.1:19094"
    alertmanager_port: int = 19094
    alertmanager_host: str = "127.0.0.1"  # the local Alertmanager's web/API listener (clustering is off)

    # --- monitoring & alerting (streams/alerting/, infra/alertmanager/, dashboards/)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus scrapes from another host
    metrics_from_topics: bool = True  # settlement/DLQ metrics derived from the registry topics by the monitoring agent
    alerting_rules_file: Path = REPO_ROOT / "streams" / "alerting" / "rules.toml"
    alerting_post_timeout_s: float = 2.0  # one POST to Alertmanager
    alerting_post_attempts: int = 3  # per delivery round; undelivered alerts are retried on the next round
    alerting_lag_interval_s: float = 15.0  # consumer-lag gauge refresh
    alerting_clock_control: bool = False  # tests only: POST /alerting/clock/ shifts the rule engine's clock
    # Alertmanager receivers. Defaults point at the local sink (python -m devtools.alert_sink) for the demo.
    alert_sink_port: int = 19096
    alert_smtp_port: int = 19097
    alert_sink_host: str = "127.0.0.1"  # the local sink's HTTP and SMTP listeners
    alert_slack_webhook_url: str = "http://127.0.0.1:19096/slack"
    alert_slack_channel: str = "#settlement-alerts"
    alert_pagerduty_url: str = "http://127.0.0.1:19096/pagerduty"  # real: https://events.pagerduty.com/v2/enqueue
    alert_pagerduty_routing_key: str = "nexus-local-routing-key"
    alert_sms_webhook_url: str = "http://127.0.0.1:19096/sms"
    alert_smtp_smarthost: str = "127.0.0.1:19097"
    alert_smtp_require_tls: bool = False
    alert_email_from: str = "alertmanager@nexus-x.io"
    alert_email_to: str = "settlement@nexus-x.io"
    # The dead man's switch (Watchdog, always firing): its receiver pages when it stops hearing it (e.g. a
    # healthchecks.io or PagerDuty dead-man URL); locally the sink.
    alert_deadmansswitch_url: str = "http://127.0.0.1:19096/deadmansswitch"
    prometheus_port: int = 19090  # the local Prometheus (infra/prometheus)
    prometheus_host: str = "127.0.0.1"
    dashboard_port: int = 19098
    dashboard_host: str = "127.0.0.1"

    @property
    def local_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"


def pick_roles(agents: str, known: list[str], runtime: str) -> list[str]:
    """The roles named in NEXUS_AGENTS ("matching,settlement"; empty = every known role), in `known`'s order."""
    wanted = [name.strip() for name in agents.split(",") if name.strip()] or known
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"the {runtime} runs {sorted(known)}; not {unknown}")
    return [name for name in known if name in wanted]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
