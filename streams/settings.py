"""Platform configuration from the environment (prefix NEXUS_), with defaults that run locally."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_", env_file=".env", extra="ignore")

    # Empty = start the local single-node broker from infra/kafka; set it to use an existing cluster.
    kafka_bootstrap_servers: str = ""
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_partitions_override: int | None = Field(default=None, description="force partition count for every topic")

    app_id: str = "nexus-settlement"
    worker_web_port: int = 6066
    metrics_port: int = 9464
    data_dir: Path = REPO_ROOT / ".local"

    # Ingress: messages above this size are dead-lettered (the registry may lower it per topic).
    max_ingress_message_bytes: int = 64 * 1024

    alertmanager_url: str = "http://127.0.0.1:19094"
    alertmanager_port: int = 19094

    @property
    def local_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
