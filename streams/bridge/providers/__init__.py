"""Payout provider adapters for the High-Speed Bridge (spec §3.1-3.2).

``build_adapters`` wires one adapter per provider (PayPal, Stripe, Wise, Toss, Alipay, PayPay, PayFort), so every
region's primary rail is available; ``providers`` narrows the set (a deployment without, say, PayPay credentials
then pays Japan over a fallback). Fees come from :mod:`domain.rails` (one schedule for the core, the adapters and
the simulator).

``build_reporters`` wires the report side (``settlements(day)``) for every provider with a report API; PayPay
publishes none (its merchant portal exports a transaction CSV), so its reports arrive as files.
"""

from __future__ import annotations

from collections.abc import Callable

from domain.rails import Provider
from streams.bridge.providers.alipay import AlipayAdapter
from streams.bridge.providers.base import (
    DerivedMerchantDirectory,
    MerchantDirectory,
    ProviderAdapter,
    ProviderSettings,
    ReportingAdapter,
    Transport,
    make_report_transport,
    make_transport,
)
from streams.bridge.providers.payfort import PayFortAdapter
from streams.bridge.providers.paypal import PayPalAdapter
from streams.bridge.providers.paypay import PayPayAdapter
from streams.bridge.providers.stripe import StripeAdapter
from streams.bridge.providers.toss import TossAdapter
from streams.bridge.providers.wise import WiseAdapter


def build_adapters(
    settings: ProviderSettings | None = None,
    transport: Transport | None = None,
    merchants: MerchantDirectory | None = None,
    providers: frozenset[Provider] | None = None,
) -> dict[Provider, ProviderAdapter]:
    settings = settings or ProviderSettings()
    transport = transport or make_transport(settings.transport, settings.max_connections, settings.ca_file)
    merchants = merchants or DerivedMerchantDirectory()
    classes = {
        Provider.PAYPAL: PayPalAdapter,
        Provider.STRIPE: StripeAdapter,
        Provider.WISE: WiseAdapter,
        Provider.TOSS: TossAdapter,
        Provider.ALIPAY: AlipayAdapter,
        Provider.PAYPAY: PayPayAdapter,
        Provider.PAYFORT: PayFortAdapter,
    }
    return {p: cls(settings, transport, merchants) for p, cls in classes.items() if providers is None or p in providers}


REPORTING_CLASSES: dict[Provider, Callable[[ProviderSettings, Transport, MerchantDirectory], ReportingAdapter]] = {
    Provider.PAYPAL: PayPalAdapter,
    Provider.STRIPE: StripeAdapter,
    Provider.WISE: WiseAdapter,
    Provider.TOSS: TossAdapter,
    Provider.ALIPAY: AlipayAdapter,
    Provider.PAYFORT: PayFortAdapter,
}
REPORT_APIS = frozenset(REPORTING_CLASSES)  # providers whose reports come through their API


def build_reporters(
    settings: ProviderSettings | None = None,
    transport: Transport | None = None,
    providers: frozenset[Provider] | None = None,
) -> dict[Provider, ReportingAdapter]:
    """One report client per provider with a report API (``providers`` narrows the set)."""
    settings = settings or ProviderSettings()
    transport = transport or make_report_transport(settings)
    merchants = DerivedMerchantDirectory()  # unused by reports; the adapters' constructor wants one
    return {
        p: cls(settings, transport, merchants)
        for p, cls in REPORTING_CLASSES.items()
        if providers is None or p in providers
    }


__all__ = [
    "REPORT_APIS",
    "ProviderAdapter",
    "ProviderSettings",
    "ReportingAdapter",
    "build_adapters",
    "build_reporters",
]
