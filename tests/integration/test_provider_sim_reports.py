"""The provider simulator's report side, in-process: listings page the way each provider pages (Stripe newest first
with has_more/starting_after, PayPal and Toss by page), refuse what the provider refuses (credentials, Wise's SCA),
and the report-break admin endpoint accepts what it documents and refuses the rest."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from devtools.provider_sim.server import SIM, ProviderSim, serve
from domain.bridge import PayoutStatus
from domain.money import Currency
from domain.rails import Provider, Rail
from domain.statements import StatementLine
from streams.bridge.providers import build_adapters, build_reporters, paypal, stripe, toss
from streams.bridge.providers.base import ProviderSettings, ReportError
from tests.integration.provider_fixtures import make_intent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Body = Callable[[ProviderSim, ProviderSettings, aiohttp.ClientSession], Awaitable[None]]


def with_sim(keys_dir: Path, body: Body) -> None:
    async def go() -> None:
        port = free_port()
        settings = ProviderSettings(sim_url=f"http://127.0.0.1:{port}", keys_dir=keys_dir)
        runner = await serve("127.0.0.1", port, settings)
        try:
            async with aiohttp.ClientSession(base_url=settings.sim_url) as http:
                await body(runner.app[SIM], settings, http)
        finally:
            await runner.cleanup()

    asyncio.run(go())


async def pay(settings: ProviderSettings, rail: Rail, ccy: Currency, amounts: list[int], tag: str) -> list[str]:
    adapters = build_adapters(settings)
    refs = []
    for i, amount in enumerate(amounts):
        intent = make_intent(rail, amount, ccy, request_id=f"sim-{tag}-{i}")
        outcome = await adapters[intent.provider].payout(intent)
        assert outcome.status is PayoutStatus.PAID
        assert outcome.provider_reference is not None
        refs.append(outcome.provider_reference)
    return refs


async def report(settings: ProviderSettings, provider: Provider) -> list[StatementLine]:
    reporter = build_reporters(settings, providers=frozenset({provider}))[provider]
    return await reporter.settlements(datetime.now(UTC).date())


def test_stripe_lists_newest_first_and_pages_with_starting_after(tmp_path: Path) -> None:
    async def body(sim: ProviderSim, settings: ProviderSettings, http: aiohttp.ClientSession) -> None:
        refs = await pay(settings, Rail.STRIPE_INSTANT, Currency.USD, [100, 200, 300, 400, 500], "stripe")
        account = sim.payouts[0].counterparty
        headers = {
            "Authorization": f"Bearer {settings.stripe_secret_key.get_secret_value()}",
            "Stripe-Account": account,
        }
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            params = {"limit": "2", "type": "payout", **({"starting_after": after} if after else {})}
            async with http.get("/v1/balance_transactions", params=params, headers=headers) as resp:
                page = await resp.json()
            pages += 1
            seen.extend(t["source"] for t in page["data"])
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        assert pages == 3 and seen == list(reversed(refs))  # newest first, each payout once

    with_sim(tmp_path, body)


@pytest.mark.parametrize(
    ("module", "attr", "rail", "ccy", "provider"),
    [
        (stripe, "PAGE_LIMIT", Rail.STRIPE_INSTANT, Currency.USD, Provider.STRIPE),
        (paypal, "PAGE_SIZE", Rail.PAYPAL, Currency.USD, Provider.PAYPAL),
        (toss, "PAGE_SIZE", Rail.TOSS_PAYMENTS, Currency.KRW, Provider.TOSS),
    ],
)
def test_adapters_read_every_page_the_simulator_serves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    attr: str,
    rail: Rail,
    ccy: Currency,
    provider: Provider,
) -> None:
    monkeypatch.setattr(module, attr, 2)

    async def body(sim: ProviderSim, settings: ProviderSettings, http: aiohttp.ClientSession) -> None:
        refs = await pay(settings, rail, ccy, [1_000, 2_000, 3_000, 4_000, 5_000], provider.value)
        lines = await report(settings, provider)
        assert sorted(ln.provider_reference for ln in lines) == sorted(refs)
        assert sorted(ln.amount_minor for ln in lines) == [1_000, 2_000, 3_000, 4_000, 5_000]
        assert sim.stats[f"{provider.value}.report_pages"] == 3

    with_sim(tmp_path, body)


BAD: dict[Provider, dict[str, Any]] = {
    Provider.STRIPE: {"stripe_secret_key": SecretStr("sk_test_wrong")},
    Provider.PAYPAL: {"paypal_client_secret": SecretStr("wrong")},
    Provider.WISE: {"wise_api_token": SecretStr("wrong")},
    Provider.TOSS: {"toss_secret_key": SecretStr("test_sk_wrong")},
    Provider.ALIPAY: {"alipay_app_id": "2021000000009999"},
    Provider.PAYFORT: {"payfort_sha_request_phrase": SecretStr("wrong")},
}


@pytest.mark.parametrize("provider", sorted(BAD))
def test_reports_refuse_wrong_credentials(tmp_path: Path, provider: Provider) -> None:
    async def body(sim: ProviderSim, settings: ProviderSettings, http: aiohttp.ClientSession) -> None:
        bad = settings.model_copy(update=BAD[provider])
        with pytest.raises(ReportError):
            await report(bad, provider)
        assert await report(settings, provider) == []  # the right credentials: an empty day

    with_sim(tmp_path, body)


def test_wise_statements_need_the_signed_sca_token(tmp_path: Path) -> None:
    async def body(sim: ProviderSim, settings: ProviderSettings, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {settings.wise_api_token.get_secret_value()}"}
        url = f"/v1/profiles/{settings.wise_profile_id}/balance-statements/200000001/statement.json"
        params = {
            "currency": "EUR",
            "intervalStart": "2026-11-02T00:00:00.000Z",
            "intervalEnd": "2026-11-03T00:00:00.000Z",
        }
        async with http.get(url, params=params, headers=headers) as resp:
            assert resp.status == 403
            token = resp.headers["x-2fa-approval"]
        forged = {**headers, "x-2fa-approval": token, "X-Signature": "bm90IGEgc2lnbmF0dXJl"}
        async with http.get(url, params=params, headers=forged) as resp:
            assert resp.status == 403 and (await resp.json())["errors"][0]["code"] == "sca.signature.invalid"

    with_sim(tmp_path, body)


def test_report_break_admin_validates_and_applies(tmp_path: Path) -> None:
    async def body(sim: ProviderSim, settings: ProviderSettings, http: aiohttp.ClientSession) -> None:
        (toss_ref,) = await pay(settings, Rail.TOSS_PAYMENTS, Currency.KRW, [150_000], "brk-toss")
        (wise_ref,) = await pay(settings, Rail.WISE, Currency.EUR, [99_00], "brk-wise")

        async def inject(reference: str, kind: str, value: Any = None) -> tuple[int, Any]:
            async with http.post(
                "/_admin/report_breaks", json={"reference": reference, "kind": kind, "value": value}
            ) as r:
                return r.status, await r.json()

        assert (await inject("no-such-payout", "drop"))[0] == 404
        assert (await inject(toss_ref, "vanish"))[0] == 400
        assert (await inject(toss_ref, "fx_rate", "1.1"))[0] == 400  # Toss reports no rate
        assert (await inject(toss_ref, "amount", -1))[0] == 400
        assert (await inject(toss_ref, "late", "2026-11-03T02:00:00"))[0] == 400  # no offset
        assert (await inject(wise_ref, "fx_rate", "0"))[0] == 400

        status, answer = await inject(toss_ref, "late")
        assert status == 200 and answer["breaks"] == {"late": None}
        status, _ = await inject(sim.payouts[1].our_reference, "fx_rate", "0.8612")  # any of the payout's references
        assert status == 200
        async with http.get("/_admin/report_breaks") as r:
            assert set((await r.json())["breaks"]) == {f"TOSS:{toss_ref}", f"WISE:{wise_ref}"}

        today = datetime.now(UTC).date()
        assert await report(settings, Provider.TOSS) == []  # booked tomorrow, 01:00 UTC
        reporter = build_reporters(settings, providers=frozenset({Provider.TOSS}))[Provider.TOSS]
        (late,) = await reporter.settlements(today + timedelta(days=1))
        assert late.created_at == datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC) + timedelta(
            hours=1
        )
        (wise,) = await report(settings, Provider.WISE)
        assert str(wise.fx_rate) == "0.8612"

    with_sim(tmp_path, body)
