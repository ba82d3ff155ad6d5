"""The settlement API's process: its composition root and command line.

    python -m streams.api                    serve (uvicorn; NEXUS_API_HOST / NEXUS_API_PORT, default 127.0.0.1:19100)
    python -m streams.api clients add ID --role merchant [--role ...] [--subject MERCHANT_ID]
                                             register a client; prints its secret once
    python -m streams.api clients list       the clients (no secrets)
    python -m streams.api openapi [--check]  write streams/api/openapi.json (--check: fail if it differs)

Reads the status read model that ``python -m streams.status`` writes (``streams.status.settings.status_db_path``);
run both. State under ``$NEXUS_DATA_DIR/api/``: the token-signing key, the clients, the idempotency keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import uvicorn
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI

from streams.api import openapi
from streams.api.airflow import AirflowClient
from streams.api.app import Services, assemble, create_app
from streams.api.auth import ROLE_SCOPES, Clients, TokenIssuer
from streams.api.follower import Follower, RulesView, Waiters
from streams.api.idempotency import IdempotencyStore
from streams.api.middleware import ApiMetrics
from streams.api.settings import ApiSettings, get_api_settings
from streams.kafka import event_loop
from streams.kafka.clients import LOW_LATENCY, AsyncProducer
from streams.ops import logs
from streams.settings import Settings, get_settings
from streams.status.settings import status_db_path
from streams.status.store import StatusStore

log = logging.getLogger("nexus.api")

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"
REACHABLE_CACHE_S = 2.0
METADATA_TIMEOUT_S = 2.0
PURGE_EVERY_S = 60.0
FOLLOWER_READY_WAIT_S = 30.0
READY_MARK = "Worker ready"  # what the platform's processes log once they serve (tests/support/workers.py)
STARTUP_WAIT_S = 60.0


class KafkaProducer:
    """acks=all, idempotent (streams.kafka.clients.producer_config); each send awaits the broker's ack."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AsyncProducer(bootstrap, max_queued=10_000)
        self._admin = AdminClient({"bootstrap.servers": bootstrap, **LOW_LATENCY})
        self._checked_at = -REACHABLE_CACHE_S
        self._reachable = False

    async def send(self, topic: str, key: bytes, value: bytes | None) -> int:
        return await self._producer.send(topic, key, value)  # type: ignore[arg-type]  # None: a tombstone

    async def reachable(self) -> bool:
        if time.monotonic() - self._checked_at >= REACHABLE_CACHE_S:
            try:
                await asyncio.to_thread(self._admin.list_topics, timeout=METADATA_TIMEOUT_S)
                self._reachable = True
            except Exception:
                self._reachable = False
            self._checked_at = time.monotonic()
        return self._reachable

    def close(self) -> None:
        self._producer.close(10.0)


def build(settings: Settings, api: ApiSettings) -> tuple[FastAPI, Follower]:
    """Every dependency, handed in; the app wrapped in its middleware. Nothing runs until the app starts."""
    directory = api.data_dir(settings.data_dir)
    waiters, rules, metrics = Waiters(api.bridge_waiters_max), RulesView(api.rules_view_max), ApiMetrics()
    follower = Follower(settings.bootstrap_servers, waiters, rules)
    tokens = TokenIssuer(directory, api.token_ttl_s)
    services = Services(
        settings=api,
        tokens=tokens,
        keys=IdempotencyStore(directory / "idempotency.sqlite3", api.idempotency_ttl_s, api.idempotency_lock_s),
        status=StatusStore(status_db_path(settings), readonly=True),
        producer=KafkaProducer(settings.bootstrap_servers),
        waiters=waiters,
        rules=rules,
        rules_ready=follower.ready.is_set,
        follower_error=lambda: follower.error,
        airflow=AirflowClient(api),
        metrics=metrics,
        max_ingress_bytes=settings.max_ingress_message_bytes,
    )
    app = assemble(services)
    app.router.lifespan_context = _lifespan(services, follower)
    return app, follower


def _lifespan(services: Services, follower: Follower) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        follower.start()
        purger = asyncio.create_task(_purge_forever(services))
        deadline = time.monotonic() + FOLLOWER_READY_WAIT_S
        while not follower.ready.is_set() and follower.error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not follower.ready.is_set():
            log.warning(
                "the rules view is not loaded (%s); serving, GET /auto-payout answers 503 meanwhile",
                follower.error or "still reading",
            )
        try:
            yield
        finally:
            purger.cancel()
            follower.stop()
            await services.airflow.close()
            cast(KafkaProducer, services.producer).close()
            services.keys.close()

    return lifespan


async def _purge_forever(services: Services) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_S)
        removed = services.keys.purge(time.time())
        if removed:
            log.info("forgot %d expired idempotency keys and accepted requests", removed)


def openapi_document() -> str:
    """The document of the routes alone (no service is built or called)."""
    return openapi.dumps(openapi.document(create_app(cast(Services, None))))


def serve(settings: Settings, api: ApiSettings) -> int:
    app, _ = build(settings, api)
    config = uvicorn.Config(
        app,
        host=api.host,
        port=api.port,
        loop="none",  # the loop is streams.kafka.event_loop's (NEXUS_EVENT_LOOP)
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    event_loop.run(_serve_and_tell(server, api), settings.event_loop)
    return 0


async def _serve_and_tell(server: uvicorn.Server, api: ApiSettings) -> None:
    """Serve; log the ready mark once the socket listens (uvicorn runs the lifespan's startup before it binds)."""
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + STARTUP_WAIT_S
    while not server.started and not serving.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if server.started:
        log.info("%s (settlement API on http://%s:%d)", READY_MARK, api.host, api.port)
    await serving


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    parser = argparse.ArgumentParser(prog="python -m streams.api", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API (the default)")
    clients = sub.add_parser("clients", help="the OAuth2 clients").add_subparsers(dest="action", required=True)
    add = clients.add_parser("add", help="register a client (or give it a new secret); prints the secret once")
    add.add_argument("client_id")
    add.add_argument("--role", action="append", choices=sorted(ROLE_SCOPES), required=True)
    add.add_argument("--subject", help="the merchant_id a merchant client settles for (default: the client id)")
    clients.add_parser("list", help="the clients, their roles and subjects")
    doc = sub.add_parser("openapi", help=f"write {OPENAPI_PATH.name}")
    doc.add_argument("--check", action="store_true", help="exit 1 if the committed document differs")
    args = parser.parse_args(argv)
    settings, api = get_settings(), get_api_settings()
    registry = Clients(api.data_dir(settings.data_dir))
    if args.command == "clients" and args.action == "add":
        secret = registry.add(args.client_id, tuple(args.role), args.subject)
        print(f"client_id={args.client_id}\nclient_secret={secret}")
        return 0
    if args.command == "clients":
        for client in registry.listing():
            print(f"{client['client_id']}\troles={','.join(client['roles'])}\tsubject={client['subject']}")
        return 0
    if args.command == "openapi":
        text = openapi_document()
        if args.check:
            same = OPENAPI_PATH.exists() and OPENAPI_PATH.read_text() == text
            print(f"{OPENAPI_PATH}: {'up to date' if same else 'differs: run python -m streams.api openapi'}")
            return 0 if same else 1
        OPENAPI_PATH.write_text(text)
        print(f"wrote {OPENAPI_PATH}")
        return 0
    return serve(settings, api)


if __name__ == "__main__":
    sys.exit(main())
