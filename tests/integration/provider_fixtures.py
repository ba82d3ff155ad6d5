"""Fixtures for the payout adapters: the provider simulator (a real HTTP server process), stripe-mock, intents.

Import the fixtures into a test module (``from tests.integration.provider_fixtures import ...``); they are
kept out of tests/conftest.py on purpose.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import CardPayment, PayoutIntent, bridge_tx_id_for
from domain.cashback import PayerTier
from domain.money import Currency
from domain.rails import RAILS, Rail, Region, fee_minor
from streams.bridge.providers.base import ProviderSettings

T = TypeVar("T")
NOW_MS = time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def sim_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("provider-keys")


@pytest.fixture(scope="session")
def provider_sim(tmp_path_factory: pytest.TempPathFactory, sim_keys_dir: Path) -> Iterator[ProviderSimProcess]:
    """One simulator process for the session (its own port, keys and pid file)."""
    sim = ProviderSimProcess(
        port=free_port(),
        state_dir=tmp_path_factory.mktemp("provider-sim"),
        env={"NEXUS_PROVIDER_KEYS_DIR": str(sim_keys_dir)},
    )
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim(provider_sim: ProviderSimProcess) -> ProviderSimProcess:
    """The session simulator, reset: no payouts, no injected faults."""
    provider_sim.reset()
    return provider_sim


def settings_for(sim: ProviderSimProcess, keys_dir: Path, **overrides: Any) -> ProviderSettings:
    return ProviderSettings(**{"sim_url": sim.url, "keys_dir": keys_dir, **overrides})


@pytest.fixture
def sim_settings(sim: ProviderSimProcess, sim_keys_dir: Path) -> ProviderSettings:
    return settings_for(sim, sim_keys_dir, timeout_ms=2_000)


def sim_env(sim: ProviderSimProcess, keys_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess talking to this simulator."""
    return {**os.environ, "NEXUS_PROVIDER_SIM_URL": sim.url, "NEXUS_PROVIDER_KEYS_DIR": str(keys_dir), **extra}


def make_payment(
    request_id: str,
    amount_minor: int,
    currency: Currency,
    region: Region = Region.US,
    quoted: str = "0.15",
    payer: str = "acct-payer-1",
    merchant: str = "merchant-cafe-9",
    tier: PayerTier = PayerTier.GOLD,
) -> CardPayment:
    return CardPayment(request_id, payer, merchant, None, amount_minor, currency, region, tier, Decimal(quoted), NOW_MS)


def make_intent(
    rail: Rail, amount_minor: int, currency: Currency, request_id: str = "card-it-1", send_no: int = 1
) -> PayoutIntent:
    spec = RAILS[rail]
    tx = bridge_tx_id_for(request_id)
    payment = make_payment(request_id, amount_minor, currency, spec.region or Region.US)
    now = time.time_ns() // 1_000_000
    return PayoutIntent(
        bridge_tx_id=tx,
        idempotency_key=tx,
        provider_attempt=1,
        send_no=send_no,
        rail=rail,
        provider=spec.provider,
        amount_minor=amount_minor,
        currency=currency,
        fee_minor=fee_minor(spec.provider, amount_minor, currency),
        kaus_units=1_000_000_000,
        rate=Decimal("0.15"),
        lock_id=f"{tx}:fx",
        locked_at_ms=now,
        lock_expires_at_ms=now + 5_000,
        hold_id=f"{tx}:hold",
        hold_units=1_003_009_028,
        tried_providers=(spec.provider,),
        payment=payment,
        created_at_ms=now,
    )


def stripe_mock_binary() -> str | None:
    found = shutil.which("stripe-mock")
    if found:
        return found
    for base in (
        os.environ.get("GOBIN"),
        os.environ.get("GOPATH") and os.path.join(os.environ["GOPATH"], "bin"),
        os.path.expanduser("~/go/bin"),
    ):
        if base and os.path.isfile(os.path.join(base, "stripe-mock")):
            return os.path.join(base, "stripe-mock")
    return None


@pytest.fixture(scope="session")
def stripe_mock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Stripe's official mock server, if installed (``go install github.com/stripe/stripe-mock@latest``)."""
    binary = stripe_mock_binary()
    if binary is None:
        pytest.skip("stripe-mock is not installed (go install github.com/stripe/stripe-mock@latest)")
    port = free_port()
    log = tmp_path_factory.mktemp("stripe-mock") / "stripe-mock.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [binary, "-http-addr", f"127.0.0.1:{port}"], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip(f"stripe-mock exited at start: {log.read_text()[-500:]}")
                time.sleep(0.1)
        else:
            pytest.skip("stripe-mock did not start listening within 20 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
