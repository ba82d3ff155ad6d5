"""The adapters' report calls without a server: each provider's request (path, query, auth), its paging, and how
its answer (shaped as the provider documents it) becomes statement lines; failures become ReportError.

Answers are written here by hand in each provider's shape; signatures (Alipay, PayFort, Wise SCA) are computed
independently of the adapters' own code."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from domain.money import Currency
from domain.rails import Provider
from domain.statements import StatementLine
from streams.bridge.providers import REPORT_APIS, build_reporters, payfort, toss
from streams.bridge.providers.alipay import ensure_dev_keys
from streams.bridge.providers.base import (
    ConnectFailed,
    HttpRequest,
    HttpResponse,
    ProviderSettings,
    ReportError,
)

DAY = date(2026, 11, 2)
START = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
END = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp())
BASE = "https://providers.test"


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, {"content-type": "application/json", **(headers or {})}, raw)


class RoutedTransport:
    """Answers each request through ``route``; keeps the requests."""

    def __init__(self, route: Callable[[HttpRequest], HttpResponse]) -> None:
        self.route = route
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        self.requests.append(request)
        return self.route(request)

    async def aclose(self) -> None:
        pass


def query(request: HttpRequest) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query, keep_blank_values=True)


def path(request: HttpRequest) -> str:
    return urlsplit(request.url).path


@pytest.fixture
def settings(tmp_path: Path) -> ProviderSettings:
    return ProviderSettings(sim_url=BASE, keys_dir=tmp_path)


def settlements(settings: ProviderSettings, provider: Provider, transport: RoutedTransport) -> list[StatementLine]:
    reporter = build_reporters(settings, transport, frozenset({provider}))[provider]
    return asyncio.run(reporter.settlements(DAY))


def test_every_provider_but_paypay_has_a_report_api() -> None:
    assert frozenset(Provider) - REPORT_APIS == {Provider.PAYPAY}


# --------------------------------------------------------------------------- Stripe


def stripe_txn(txn_id: str, payout_id: str, amount: int, fee: int, created: int, **extra: Any) -> dict[str, Any]:
    """A payout balance transaction as the API reference shows it, with ``expand[]=data.source``."""
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": -amount,
        "available_on": created + 86_400,
        "created": created,
        "currency": "usd",
        "description": "STRIPE PAYOUT",
        "exchange_rate": None,
        "fee": fee,
        "fee_details": [{"amount": fee, "currency": "usd", "type": "stripe_fee"}],
        "net": -amount - fee,
        "reporting_category": "payout",
        "source": {"id": payout_id, "object": "payout", "metadata": {"nexus_tx_id": f"BRIDGE-{payout_id}"}},
        "status": "available",
        "type": "payout",
        **extra,
    }


def test_stripe_lists_accounts_then_each_accounts_payouts_page_by_page(settings: ProviderSettings) -> None:
    pages = {
        ("accounts", None): ([{"id": "acct_A", "object": "account"}], True),
        ("accounts", "acct_A"): ([{"id": "acct_B", "object": "account"}], False),
        ("acct_A", None): ([stripe_txn("txn_1", "po_1", 150_00, 63, START + 5)], True),
        ("acct_A", "txn_1"): (
            [stripe_txn("txn_2", "po_2", 20_00, 30, START + 60, exchange_rate=1.0876, currency="eur")],
            False,
        ),
        ("acct_B", None): ([], False),
    }

    def route(req: HttpRequest) -> HttpResponse:
        assert (
            req.method == "GET"
            and req.header("Authorization") == f"Bearer {settings.stripe_secret_key.get_secret_value()}"
        )
        q = query(req)
        after = q.get("starting_after", [None])[0]
        key = ("accounts" if path(req) == "/v1/accounts" else req.header("Stripe-Account"), after)
        data, more = pages[key]  # type: ignore[index]
        return response(200, {"object": "list", "url": path(req), "has_more": more, "data": data})

    transport = RoutedTransport(route)
    lines = settlements(settings, Provider.STRIPE, transport)

    txn_requests = [r for r in transport.requests if path(r) == "/v1/balance_transactions"]
    assert sorted((r.header("Stripe-Account"), query(r).get("starting_after", [""])[0]) for r in txn_requests) == [
        ("acct_A", ""),
        ("acct_A", "txn_1"),
        ("acct_B", ""),
    ]
    q = query(txn_requests[0])
    assert q["type"] == ["payout"] and q["limit"] == ["100"] and q["expand[]"] == ["data.source"]
    assert (q["created[gte]"], q["created[lt]"]) == ([str(START)], [str(END)])
    assert all(r.header("Stripe-Account") is None for r in transport.requests if path(r) == "/v1/accounts")
    assert sorted(lines, key=lambda ln: ln.provider_reference) == [
        StatementLine("po_1", "BRIDGE-po_1", 150_00, 63, Currency.USD, None, date(2026, 11, 3),
                      datetime(2026, 11, 2, 0, 0, 5, tzinfo=UTC), "acct_A"),
        StatementLine("po_2", "BRIDGE-po_2", 20_00, 30, Currency.EUR, Decimal("1.0876"), date(2026, 11, 3),
                      datetime(2026, 11, 2, 0, 1, tzinfo=UTC), "acct_A"),
    ]  # fmt: skip


def test_stripe_error_status_is_a_report_error(settings: ProviderSettings) -> None:
    transport = RoutedTransport(lambda req: response(500, {"error": {"type": "api_error"}}))
    with pytest.raises(ReportError, match="HTTP 500"):
        settlements(settings, Provider.STRIPE, transport)


# --------------------------------------------------------------------------- PayPal


def paypal_detail(txn: str, batch: str, value: str, fee: str, ccy: str = "USD", **info: Any) -> dict[str, Any]:
    return {
        "transaction_info": {
            "paypal_account_id": "NEXUSXMERCHANT",
            "transaction_id": txn,
            "paypal_reference_id": batch,
            "paypal_reference_id_type": "TXN",
            "transaction_event_code": "T0001",
            "transaction_initiation_date": "2026-11-02T10:00:00+0000",
            "transaction_updated_date": "2026-11-02T10:05:00+0000",
            "transaction_amount": {"currency_code": ccy, "value": value},
            "fee_amount": {"currency_code": ccy, "value": fee},
            "transaction_status": "S",
            "invoice_id": f"BRIDGE-{batch}",
            **info,
        },
        "payer_info": {"email_address": "cafe@merchants.test"},
    }


def test_paypal_searches_mass_payments_of_the_day_page_by_page(settings: ProviderSettings) -> None:
    pages = {
        "1": [
            paypal_detail("T1", "B1", "-150.00", "-3.75"),
            paypal_detail("T2", "B2", "-1500", "-38", "JPY"),
            paypal_detail("T3", "B3", "-9.00", "-0.23", transaction_status="D"),  # denied: nothing left
        ],
        "2": [paypal_detail("T4", "B4", "-7.00", "-0.18", transaction_event_code="T0006")],  # not a payout
    }
    tokens = iter(["tok-1", "tok-2"])
    seen_401: list[bool] = []

    def route(req: HttpRequest) -> HttpResponse:
        if path(req) == "/v1/oauth2/token":
            return response(200, {"access_token": next(tokens), "token_type": "Bearer", "expires_in": 32_400})
        if req.header("Authorization") == "Bearer tok-1" and query(req)["page"] == ["2"] and not seen_401:
            seen_401.append(True)
            return response(401, {"error": "invalid_token"})  # expired mid-report: refreshed once
        page = query(req)["page"][0]
        return response(200, {"transaction_details": pages[page], "page": int(page), "total_pages": 2})

    transport = RoutedTransport(route)
    lines = settlements(settings, Provider.PAYPAL, transport)

    searches = [r for r in transport.requests if path(r) == "/v1/reporting/transactions"]
    assert [query(r)["page"] for r in searches] == [["1"], ["2"], ["2"]]
    q = query(searches[0])
    assert q["start_date"] == ["2026-11-02T00:00:00+0000"] and q["end_date"] == ["2026-11-02T23:59:59+0000"]
    assert q["transaction_type"] == ["T0001"] and q["page_size"] == ["500"]
    assert searches[-1].header("Authorization") == "Bearer tok-2"
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    cp = "cafe@merchants.test"
    assert lines == [
        StatementLine("B1", "BRIDGE-B1", 150_00, 375, Currency.USD, None, DAY, at, cp),
        StatementLine("B2", "BRIDGE-B2", 1500, 38, Currency.JPY, None, DAY, at, cp),
    ]


# --------------------------------------------------------------------------- Wise


def wise_tx(ref: int, total: str, fee: str, at: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "DEBIT",
        "date": at,
        "amount": {"value": Decimal(total), "currency": "EUR"},
        "totalFees": {"value": Decimal(fee), "currency": "EUR"},
        "details": {
            "type": "TRANSFER",
            "description": "Sent money to Cafe",
            "recipient": {"name": "Cafe", "bankAccount": "DE89370400440532013000"},
            "paymentReference": f"NX{ref}",
        },
        "exchangeDetails": None,
        "runningBalance": {"value": Decimal("1000.00"), "currency": "EUR"},
        "referenceNumber": f"TRANSFER-{ref}",
        **extra,
    }


def decimal_json(obj: Any) -> bytes:
    return json.dumps(obj, default=lambda d: float(d) if isinstance(d, Decimal) else d).encode()


def test_wise_reads_each_balance_statement_signing_the_sca_challenge(settings: ProviderSettings) -> None:
    eur = [
        wise_tx(11, "-10.50", "0.50", "2026-11-02T09:00:00.123456Z"),
        wise_tx(12, "-20.10", "0.10", "2026-11-02T09:30:00Z", exchangeDetails={"rate": Decimal("0.8612")}),
        wise_tx(13, "-5.00", "0", "2026-11-03T00:00:00Z"),  # the next day: outside, however the end is read
        {**wise_tx(14, "100.00", "0", "2026-11-02T10:00:00Z"), "type": "CREDIT"},
        {**wise_tx(15, "-3.00", "0", "2026-11-02T11:00:00Z"), "details": {"type": "CARD"}},
    ]
    signing_key = settings.wise_signing_key.get_secret_value()
    challenged = []

    def route(req: HttpRequest) -> HttpResponse:
        assert req.header("Authorization") == f"Bearer {settings.wise_api_token.get_secret_value()}"
        if path(req) == f"/v4/profiles/{settings.wise_profile_id}/balances":
            return response(200, [{"id": 7, "currency": "EUR", "type": "STANDARD"}, {"id": 8, "currency": "GBP"}])
        if "/balance-statements/7/" in path(req) and req.header("x-2fa-approval") is None:
            challenged.append(req)
            return response(403, {"status": 403}, {"x-2fa-approval": "ott-123"})
        if "/balance-statements/7/" in path(req):
            mac = base64.b64encode(hmac.new(signing_key.encode(), b"ott-123", hashlib.sha256).digest()).decode()
            assert (req.header("x-2fa-approval"), req.header("X-Signature")) == ("ott-123", mac)
            return HttpResponse(200, {}, decimal_json({"transactions": eur, "query": {"currency": "EUR"}}))
        return response(200, {"transactions": [], "query": {"currency": "GBP"}})

    transport = RoutedTransport(route)
    lines = settlements(settings, Provider.WISE, transport)

    q = query(challenged[0])
    assert path(challenged[0]) == f"/v1/profiles/{settings.wise_profile_id}/balance-statements/7/statement.json"
    assert q == {
        "currency": ["EUR"],
        "intervalStart": ["2026-11-02T00:00:00.000Z"],
        "intervalEnd": ["2026-11-03T00:00:00.000Z"],
        "type": ["COMPACT"],
    }
    iban = "DE89370400440532013000"
    assert lines == [
        StatementLine("11", "NX11", 10_00, 50, Currency.EUR, None, DAY,
                      datetime(2026, 11, 2, 9, 0, 0, 123456, tzinfo=UTC), iban),
        StatementLine("12", "NX12", 20_00, 10, Currency.EUR, Decimal("0.8612"), DAY,
                      datetime(2026, 11, 2, 9, 30, tzinfo=UTC), iban),
    ]  # fmt: skip


# --------------------------------------------------------------------------- Toss


def toss_row(key: str, amount: int, payout: int, approved: str) -> dict[str, Any]:
    return {
        "mId": "tvivarepublica",
        "paymentKey": key,
        "transactionKey": f"tr_{key}",
        "orderId": f"BRIDGE-{key}",
        "currency": "KRW",
        "method": "TRANSFER",
        "amount": amount,
        "interestFee": 0,
        "fees": [{"type": "BASE", "fee": amount - payout}],
        "supplyAmount": amount - payout,
        "vat": 0,
        "payOutAmount": payout,
        "approvedAt": approved,
        "soldDate": approved[:10],
        "paidOutDate": "2026-11-04",
    }


def test_toss_asks_both_kst_dates_pages_until_short_and_keeps_the_utc_day(
    settings: ProviderSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toss, "PAGE_SIZE", 2)
    pages = {
        "1": [
            toss_row("k0", 1_000, 977, "2026-11-02T08:59:59+09:00"),  # 2026-11-01 23:59:59 UTC: the day before
            toss_row("k1", 150_000, 146_550, "2026-11-02T09:00:00+09:00"),
        ],
        "2": [toss_row("k2", 2_000, 1_954, "2026-11-03T08:59:59+09:00")],
    }
    transport = RoutedTransport(lambda req: response(200, pages[query(req)["page"][0]]))
    lines = settlements(settings, Provider.TOSS, transport)

    secret = settings.toss_secret_key.get_secret_value()
    first = transport.requests[0]
    assert path(first) == "/v1/settlements"
    assert first.header("Authorization") == "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    assert query(first)["startDate"] == ["2026-11-02"] and query(first)["endDate"] == ["2026-11-03"]
    assert [query(r)["page"] for r in transport.requests] == [["1"], ["2"]]
    assert [(ln.provider_reference, ln.amount_minor, ln.fee_minor) for ln in lines] == [
        ("k1", 150_000, 3_450),
        ("k2", 2_000, 46),
    ]
    assert lines[1].created_at == datetime(2026, 11, 2, 23, 59, 59, tzinfo=UTC)


# --------------------------------------------------------------------------- Alipay

BILL_HEADER = (
    "账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,"
    "收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注"
)


def bill_zip(rows: list[str]) -> bytes:
    text = "\r\n".join(
        [
            "#支付宝账务明细查询",
            "#账号：[20880000000000010156]",
            "#起始日期：[2026年11月02日 00:00:00]   终止日期：[2026年11月03日 00:00:00]",
            "#-----------------------------------------账务明细列表----------------------------------------",
            BILL_HEADER,
            *rows,
            "#-----------------------------------------账务明细列表结束------------------------------------",
            "#导出时间：[2026年11月03日 09:12:00]",
        ]
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("20880000000000010156_20261102_账务明细.csv", text.encode("gbk"))
        z.writestr("20880000000000010156_20261102_账务明细(汇总).csv", "#汇总\r\n".encode("gbk"))
    return out.getvalue()


def signed_answer(private: rsa.RSAPrivateKey, method: str, value: dict[str, Any]) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    sig = base64.b64encode(private.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return ('{"' + method.replace(".", "_") + '_response":' + text + ',"sign":"' + sig + '"}').encode()


def test_alipay_downloads_both_beijing_days_bills_and_pairs_fees(settings: ProviderSettings) -> None:
    keys = ensure_dev_keys(settings.keys_dir)
    alipay_private = serialization.load_pem_private_key((keys / "alipay_private.pem").read_bytes(), None)
    app_public = serialization.load_pem_public_key((keys / "app_public.pem").read_bytes())
    assert isinstance(alipay_private, rsa.RSAPrivateKey) and isinstance(app_public, rsa.RSAPublicKey)
    bills = {
        "2026-11-02": bill_zip(
            [
                "1001,ORD1,BRIDGE-1,NEXUS-X,2026-11-02 07:59:59,a@x.cn,,-88.00,10.00,OPENAPI,转账,",  # 11-01 UTC
                "1002,ORD2,BRIDGE-2,NEXUS-X,2026-11-02 08:00:00,b@x.cn,,-150.00,10.00,OPENAPI,转账,",
                "1003,ORD2,BRIDGE-2,服务费,2026-11-02 08:00:00,,,-2.25,10.00,OPENAPI,收费,",
                "1004,ORD9,,退款,2026-11-02 09:00:00,c@x.cn,5.00,,10.00,OPENAPI,退款,",
            ]
        ),
        "2026-11-03": bill_zip(
            [
                "2001,ORD3,BRIDGE-3,NEXUS-X,2026-11-03 07:59:59,b@x.cn,,-10.00,10.00,OPENAPI,转账,",
                "2002,ORD3,BRIDGE-3,服务费,2026-11-03 07:59:59,,,-0.15,10.00,OPENAPI,收费,",
                "2003,ORD4,BRIDGE-4,NEXUS-X,2026-11-03 08:00:00,b@x.cn,,-10.00,10.00,OPENAPI,转账,",  # 11-03 UTC
            ]
        ),
    }

    def route(req: HttpRequest) -> HttpResponse:
        if req.method == "GET":
            return HttpResponse(200, {"content-type": "application/oct-stream"}, bills[query(req)["bizDates"][0]])
        params = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        unsigned = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k])
        app_public.verify(base64.b64decode(params["sign"]), unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
        assert params["method"] == "alipay.data.dataservice.bill.downloadurl.query"
        biz = json.loads(params["biz_content"])
        assert biz["bill_type"] == "signcustomer"
        url = f"https://dwbillcenter.test/downloadBillFile.resource?bizDates={biz['bill_date']}&fileType=csv.zip"
        value = {"code": "10000", "msg": "Success", "bill_download_url": url}
        return HttpResponse(200, {}, signed_answer(alipay_private, params["method"], value))

    transport = RoutedTransport(route)
    lines = settlements(settings, Provider.ALIPAY, transport)

    assert [
        json.loads(parse_qs(r.body.decode())["biz_content"][0])["bill_date"] for r in transport.requests if r.body
    ] == [
        "2026-11-02",
        "2026-11-03",
    ]
    assert [(ln.provider_reference, ln.our_reference, ln.amount_minor, ln.fee_minor) for ln in lines] == [
        ("ORD2", "BRIDGE-2", 150_00, 2_25),
        ("ORD3", "BRIDGE-3", 10_00, 15),
    ]
    assert lines[0].created_at == datetime(2026, 11, 2, 0, 0, tzinfo=UTC) and lines[0].currency is Currency.CNY


def test_alipay_unsigned_bill_url_is_refused(settings: ProviderSettings) -> None:
    value = {"code": "10000", "msg": "Success", "bill_download_url": "https://evil.test/bill.zip"}
    body = ('{"alipay_data_dataservice_bill_downloadurl_query_response":' + json.dumps(value) + "}").encode()
    transport = RoutedTransport(lambda req: HttpResponse(200, {}, body))
    with pytest.raises(ReportError, match="signature"):
        settlements(settings, Provider.ALIPAY, transport)
    assert len(transport.requests) == 1  # nothing downloaded from an unverified URL


# --------------------------------------------------------------------------- PayFort


def aps_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(aps_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={aps_text(value[k])}" for k in sorted(value)) + "}"
    return str(value)


def aps_sign(params: dict[str, Any], phrase: str) -> str:
    text = "".join(f"{k}={aps_text(params[k])}" for k in sorted(params) if k != "signature")
    return hashlib.sha256(f"{phrase}{text}{phrase}".encode()).hexdigest()


def test_payfort_generates_then_downloads_the_report_polling_while_pending(
    settings: ProviderSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payfort, "REPORT_POLL_S", 0.0)
    req_phrase = settings.payfort_sha_request_phrase.get_secret_value()
    resp_phrase = settings.payfort_sha_response_phrase.get_secret_value()
    rows = [
        {"fort_id": "1699", "merchant_reference": "BRIDGE-1", "command": "PAYOUT", "amount": "55000",
         "currency": "AED", "status": "14", "transaction_date": "2026-11-02T04:00:00+04:00", "total_fees": "1210"},
        {"fort_id": "1700", "merchant_reference": "BUY-1", "command": "PURCHASE", "amount": "100",
         "currency": "AED", "status": "14", "transaction_date": "2026-11-02T05:00:00+04:00", "total_fees": "3"},
        {"fort_id": "1701", "merchant_reference": "BRIDGE-2", "command": "PAYOUT", "amount": "700",
         "currency": "AED", "status": "13", "transaction_date": "2026-11-02T05:00:00+04:00", "total_fees": "15"},
    ]  # fmt: skip
    downloads = iter(["19000", "12000"])

    def route(req: HttpRequest) -> HttpResponse:
        params = json.loads(req.body)
        assert params["signature"] == aps_sign(params, req_phrase)
        out = {k: v for k, v in params.items() if k != "signature"}
        if params["query_command"] == "GENERATE_REPORT":
            out.update(response_code="12000", response_message="Success.", status="12")
        else:
            code = next(downloads)
            out.update(response_code=code, response_message="Success.", status=code[:2])
            if code == "12000":
                out["report_data"] = rows
        out["signature"] = aps_sign(out, resp_phrase)
        return response(200, out)

    transport = RoutedTransport(route)
    lines = settlements(settings, Provider.PAYFORT, transport)

    generate, *downloads_sent = (json.loads(r.body) for r in transport.requests)
    assert path(transport.requests[0]) == "/FortAPI/reportingApi"
    assert (generate["from_date"], generate["to_date"]) == ("2026-11-02T00:00:00+00:00", "2026-11-02T23:59:59+00:00")
    assert generate["columns"][:4] == ["fort_id", "merchant_reference", "command", "amount"]
    assert [d["query_command"] for d in downloads_sent] == ["DOWNLOAD_REPORT", "DOWNLOAD_REPORT"]
    assert {d["merchant_reference"] for d in downloads_sent} == {generate["merchant_reference"]}
    assert lines == [
        StatementLine("1699", "BRIDGE-1", 55_000, 1_210, Currency.AED, None, DAY, datetime(2026, 11, 2, tzinfo=UTC))
    ]


def test_payfort_forged_report_is_refused(settings: ProviderSettings) -> None:
    def route(req: HttpRequest) -> HttpResponse:
        out = {**json.loads(req.body), "response_code": "12000", "status": "12", "signature": "0" * 64}
        return response(200, out)

    with pytest.raises(ReportError, match="signature"):
        settlements(settings, Provider.PAYFORT, RoutedTransport(route))


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("provider", sorted(REPORT_APIS))
def test_no_connection_is_a_report_error(settings: ProviderSettings, provider: Provider) -> None:
    def refuse(req: HttpRequest) -> HttpResponse:
        raise ConnectFailed("connection refused")

    with pytest.raises(ReportError, match="CONNECT_FAILED"):
        settlements(settings, provider, RoutedTransport(refuse))


@pytest.mark.parametrize("provider", [Provider.STRIPE, Provider.TOSS, Provider.WISE])
def test_an_answer_out_of_shape_is_a_report_error(settings: ProviderSettings, provider: Provider) -> None:
    transport = RoutedTransport(lambda req: response(200, {"unexpected": True}))
    with pytest.raises(ReportError, match=r"unexpected shape|expected"):
        settlements(settings, provider, transport)


def test_the_csv_header_constant_matches_the_adapter() -> None:
    from streams.bridge.providers.alipay import BILL_COLUMNS

    assert next(csv.reader([BILL_HEADER])) == BILL_COLUMNS
