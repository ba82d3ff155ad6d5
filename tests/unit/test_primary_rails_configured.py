"""With the default adapter set every region's primary rail is configured: Japan pays over PayPay and the UAE over
PayFort, not over the Wise fallback; a deployment without one of them still falls back."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

from devtools.bridge_stand_ins import InMemoryHoldLedger
from devtools.fx_feed import domain_quotes
from domain.bridge import CardPayment, Settled
from domain.cashback import PayerTier
from domain.fx import FxBook
from domain.money import Currency
from domain.rails import PRIMARY_RAIL, Provider, Rail, RailChoice, Region, new_breakers, select_rail
from streams.bridge.providers import build_adapters, payfort
from streams.bridge.providers.base import HttpRequest, HttpResponse, ProviderSettings
from streams.bridge.runner import BridgeRunner


class ProviderStub:
    """Accepts every PayPay cashback and PayFort payout (a signed APS success); records what was sent where."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.response_phrase = settings.payfort_sha_response_phrase.get_secret_value()
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        self.requests.append(request)
        if request.url.endswith("/v2/cashback"):
            body: Any = {"resultInfo": {"code": "REQUEST_ACCEPTED", "message": "Request accepted"}, "data": None}
            return HttpResponse(202, {}, json.dumps(body).encode())
        if request.url.endswith("/FortAPI/paymentApi"):
            params = {k: v for k, v in json.loads(request.body).items() if k != "signature"}
            params.update(response_code="14000", response_message="Success.", status="14", fort_id="169000001")
            params["signature"] = payfort.signature(params, self.response_phrase)
            return HttpResponse(200, {}, json.dumps(params).encode())
        return HttpResponse(503, {}, b"not stubbed")

    async def aclose(self) -> None:
        pass


def _runner_rails(adapters: dict[Provider, Any]) -> frozenset[Rail]:
    async def build() -> frozenset[Rail]:
        runner = BridgeRunner(ledger=InMemoryHoldLedger(), adapters=adapters, fx_book=FxBook)
        assert runner.cfg.enabled_rails is not None
        return runner.cfg.enabled_rails

    return asyncio.run(build())


def test_the_default_adapter_set_configures_every_primary_rail(tmp_path: Path) -> None:
    settings = ProviderSettings(keys_dir=tmp_path)
    enabled = _runner_rails(build_adapters(settings, ProviderStub(settings)))
    assert set(PRIMARY_RAIL.values()) <= enabled
    for region, currency, rail in (
        (Region.JP, Currency.JPY, Rail.PAYPAY_BUSINESS),
        (Region.AE, Currency.AED, Rail.PAYFORT),
    ):
        choice = select_rail(region, currency, 10_000, new_breakers(), 0, enabled=enabled)
        assert isinstance(choice, RailChoice) and choice.rail is rail and not choice.is_fallback, choice


def test_without_the_paypay_adapter_japan_falls_back_to_wise(tmp_path: Path) -> None:
    settings = ProviderSettings(keys_dir=tmp_path)
    some = frozenset(p for p in Provider if p is not Provider.PAYPAY)
    enabled = _runner_rails(build_adapters(settings, ProviderStub(settings), providers=some))
    choice = select_rail(Region.JP, Currency.JPY, 10_000, new_breakers(), 0, enabled=enabled)
    assert isinstance(choice, RailChoice) and choice.rail is Rail.WISE
    assert choice.skipped == ((Rail.PAYPAY_BUSINESS, "no adapter configured"),)


def test_jpy_in_japan_and_aed_in_the_uae_settle_on_their_own_rails(tmp_path: Path) -> None:
    settings = ProviderSettings(sim_url="https://providers.test", keys_dir=tmp_path)
    stub = ProviderStub(settings)
    now = time.time_ns() // 1_000_000
    book = FxBook().with_quotes(domain_quotes(date(2026, 10, 30), 0, now))
    payments = [
        CardPayment(f"card-{region}", "acct-payer-1", "merchant-9", None, amount, ccy, region, PayerTier.GOLD,
                    book.combined_rate(ccy, now).rate, now)
        for region, ccy, amount in ((Region.JP, Currency.JPY, 2_300), (Region.AE, Currency.AED, 15_000))
    ]  # fmt: skip
    ledger = InMemoryHoldLedger()
    ledger.deposit("seed", "acct-payer-1", 10**12)

    async def settle() -> list[Any]:
        runner = BridgeRunner(ledger=ledger, adapters=build_adapters(settings, stub), fx_book=lambda: book)
        return [await runner.settle(p) for p in payments]

    results = asyncio.run(settle())
    assert all(isinstance(r, Settled) for r in results), results
    assert [r.rail for r in results] == [Rail.PAYPAY_BUSINESS, Rail.PAYFORT]
    assert [r.url for r in stub.requests] == [
        "https://providers.test/v2/cashback",
        "https://providers.test/FortAPI/paymentApi",
    ]
    assert json.loads(stub.requests[0].body)["amount"] == {"amount": 2_300, "currency": "JPY"}
    assert json.loads(stub.requests[1].body)["amount"] == "15000"
