"""The simulated providers' report endpoints, served from the payouts the simulator made (breaks applied).

=========  =====================================================================================================
Stripe     ``GET /v1/accounts`` (the connected accounts paid), ``GET /v1/balance_transactions`` on a
           ``Stripe-Account`` (``type``, ``created[gte|gt|lt|lte]``, ``limit`` ≤ 100, ``starting_after``,
           ``expand[]=data.source``); newest first, ``has_more``
PayPal     ``GET /v1/reporting/transactions`` (bearer token; ``start_date``/``end_date`` ≤ 31 days apart, end
           inclusive; ``transaction_type``, ``page_size`` ≤ 500, ``page``; ``total_pages``, ``links``)
Wise       ``GET /v4/profiles/{pid}/balances``, ``GET /v1/profiles/{pid}/balance-statements/{balanceId}/
           statement.json`` (``currency`` of that balance, ``intervalStart``/``intervalEnd``; SCA: 403 with a
           one-time token until the call is signed)
Toss       ``GET /v1/settlements`` (Basic ``secret:``; ``startDate``/``endDate`` KST dates of ``dateType`` soldDate
           or paidOutDate, ``page``, ``size`` ≤ 10,000)
Alipay     gateway method ``alipay.data.dataservice.bill.downloadurl.query`` (signcustomer bills) and ``GET
           /downloadBillFile.resource`` (the zip)
PayFort    ``POST /FortAPI/reportingApi`` ``GENERATE_REPORT`` then ``DOWNLOAD_REPORT`` under one merchant_reference
=========  =====================================================================================================

PayPay publishes no report API; its reports are the files ``POST /_admin/statements`` writes.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web

from devtools.provider_sim.reports import (
    ALIPAY_ACCOUNT,
    Entry,
    PayoutRecord,
    alipay_bill_zip,
    booked_between,
    entries,
    payfort_row,
    paypal_transaction,
)
from domain.money import Currency
from domain.rails import Provider
from streams.bridge.providers import alipay as alipay_api
from streams.bridge.providers import payfort as payfort_api
from streams.bridge.providers.base import ProviderSettings, basic_auth, dumps, json_number
from streams.bridge.providers.toss import KST
from streams.bridge.providers.wise import sign_sca_token
from warehouse.provider_statements import json_text, toss_settlement_row, wise_statement


class ProviderSim(Protocol):
    """What these handlers use of the simulator (devtools/provider_sim/server.py): its state and its providers'
    own credential checks and error answers."""

    settings: ProviderSettings
    payouts: list[PayoutRecord]
    stats: Counter[str]
    stripe_payouts: dict[str, tuple[str, bytes]]
    wise_statement_otts: dict[str, int]
    alipay_bills: dict[str, tuple[str, date]]
    payfort_reports: dict[str, list[dict[str, str]]]

    def _stripe_error(
        self, status: int, type_: str, message: str, code: str | None = None, param: str | None = None
    ) -> web.Response: ...
    def _stripe_auth(self, request: web.Request) -> web.Response | None: ...
    def _paypal_authorized(self, request: web.Request) -> bool: ...
    def _paypal_error(
        self,
        status: int,
        name: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        links: list[dict[str, str]] | None = None,
    ) -> web.Response: ...
    def _wise_auth(self, request: web.Request) -> web.Response | None: ...
    def _wise_profile(self, request: web.Request) -> web.Response | None: ...
    def _wise_error(self, status: int, code: str, message: str, path: str | None = None) -> web.Response: ...
    def _toss_error(self, status: int, code: str, message: str) -> web.Response: ...
    def _alipay_failure(self, method: str, code: str, sub_code: str, sub_msg: str) -> web.Response: ...
    def _alipay_answer(self, method: str, value: dict[str, Any]) -> web.Response: ...
    def _payfort_answer(self, params: dict[str, Any], code: str, message: str, **extra: Any) -> web.Response: ...
    def _payfort_denied(self, params: dict[str, Any]) -> web.Response | None: ...


Handler = Callable[[web.Request], Awaitable[web.Response]]
WISE_BALANCE_BASE = 200_000_000
TOSS_MAX_SIZE = 10_000
PAYPAL_MAX_DAYS = 31
PAYPAL_TS = "%Y-%m-%dT%H:%M:%S%z"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)


def routes(sim: ProviderSim) -> list[web.RouteDef]:
    def bound(handler: Callable[[ProviderSim, web.Request], Awaitable[web.Response]]) -> Handler:
        async def call(request: web.Request) -> web.Response:
            return await handler(sim, request)

        return call

    return [
        web.get("/v1/accounts", bound(stripe_accounts)),
        web.get("/v1/balance_transactions", bound(stripe_balance_transactions)),
        web.get("/v1/reporting/transactions", bound(paypal_transactions)),
        web.get("/v4/profiles/{profile_id}/balances", bound(wise_balances)),
        web.get("/v1/profiles/{profile_id}/balance-statements/{balance_id}/statement.json", bound(wise_statement_json)),
        web.get("/v1/settlements", bound(toss_settlements)),
        web.get("/downloadBillFile.resource", bound(alipay_bill_download)),
        web.post("/FortAPI/reportingApi", bound(payfort_reporting)),
    ]


# --------------------------------------------------------------------------- Stripe


def _stripe_list(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def _stripe_page(request: web.Request, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool] | str:
    """The page after ``starting_after`` of at most ``limit`` items, or the error message."""
    q = request.query
    try:
        limit = int(q.get("limit", "10"))
    except ValueError:
        return "Invalid integer: limit"
    if not 1 <= limit <= 100:
        return "limit must be between 1 and 100"
    after = q.get("starting_after")
    if after:
        ids = [str(i["id"]) for i in items]
        if after not in ids:
            return f"No such object: '{after}'"
        items = items[ids.index(after) + 1 :]
    return items[:limit], len(items) > limit


async def stripe_accounts(sim: ProviderSim, request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {sim.settings.stripe_secret_key.get_secret_value()}":
        return sim._stripe_error(401, "invalid_request_error", "Invalid API Key provided: sk_test_****")
    first_seen: dict[str, str] = {}
    for p in sim.payouts:
        if p.provider == Provider.STRIPE.value:
            first_seen.setdefault(p.counterparty, p.created_at)
    accounts = [
        {
            "id": acct,
            "object": "account",
            "type": "custom",
            "charges_enabled": True,
            "payouts_enabled": True,
            "created": int(datetime.fromisoformat(at).timestamp()),
        }
        for acct, at in sorted(first_seen.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    ]
    page = _stripe_page(request, accounts)
    if isinstance(page, str):
        return sim._stripe_error(400, "invalid_request_error", page)
    return _json(200, _stripe_list("/v1/accounts", *page))


def _stripe_window(request: web.Request) -> tuple[int, int]:
    """[gte, lt) in Unix seconds from Stripe's created[...] filters (ValueError for a bad one)."""
    q = request.query
    low, high = 0, 2**62
    if "created[gte]" in q:
        low = int(q["created[gte]"])
    if "created[gt]" in q:
        low = int(q["created[gt]"]) + 1
    if "created[lt]" in q:
        high = int(q["created[lt]"])
    if "created[lte]" in q:
        high = int(q["created[lte]"]) + 1
    return low, high


def stripe_balance_transaction(sim: ProviderSim, e: Entry, expand: bool) -> dict[str, Any]:
    ln = e.line
    ccy = ln.currency.value.lower()
    payout_id = ln.provider_reference
    stored = sim.stripe_payouts.get(payout_id)
    source: Any = payout_id
    if expand:
        source = json.loads(stored[1]) if stored else {"id": payout_id, "object": "payout", "metadata": {}}
    available_on = datetime.combine(ln.value_date, datetime.min.time(), UTC)
    return {
        "id": "txn_" + e.row_id,
        "object": "balance_transaction",
        "amount": -ln.amount_minor,
        "available_on": int(available_on.timestamp()),
        "created": int(ln.created_at.timestamp()),
        "currency": ccy,
        "description": "STRIPE PAYOUT",
        "exchange_rate": None if ln.fx_rate is None else json_number(ln.fx_rate),
        "fee": ln.fee_minor,
        "fee_details": [
            {
                "amount": ln.fee_minor,
                "application": None,
                "currency": ccy,
                "description": "Payout fee",
                "type": "stripe_fee",
            }
        ],
        "net": -ln.amount_minor - ln.fee_minor,
        "reporting_category": "payout",
        "source": source,
        "status": "available",
        "type": "payout",
    }


async def stripe_balance_transactions(sim: ProviderSim, request: web.Request) -> web.Response:
    denied = sim._stripe_auth(request)
    if denied:
        return denied
    account = request.headers["Stripe-Account"]
    try:
        low, high = _stripe_window(request)
    except ValueError:
        return sim._stripe_error(400, "invalid_request_error", "Invalid integer: created", param="created")
    wanted = request.query.get("type")
    rows = [
        e
        for e in entries(sim.payouts, Provider.STRIPE)
        if e.record.counterparty == account and low <= int(e.line.created_at.timestamp()) < high
    ]
    if wanted not in (None, "payout"):
        rows = []
    expand = "data.source" in request.query.getall("expand[]", [])
    items = [stripe_balance_transaction(sim, e, expand) for e in reversed(rows)]  # Stripe lists newest first
    page = _stripe_page(request, items)
    if isinstance(page, str):
        return sim._stripe_error(400, "invalid_request_error", page)
    sim.stats["STRIPE.report_pages"] += 1
    return _json(200, _stripe_list("/v1/balance_transactions", *page))


# --------------------------------------------------------------------------- PayPal


def _paypal_query(request: web.Request) -> tuple[datetime, datetime, int, int] | str:
    q = request.query
    try:
        start = datetime.strptime(q["start_date"], PAYPAL_TS)
        end = datetime.strptime(q["end_date"], PAYPAL_TS)
        page_size, page = int(q.get("page_size", "100")), int(q.get("page", "1"))
    except KeyError as exc:
        return f"Missing required parameter {exc}"
    except ValueError as exc:
        return f"Invalid parameter: {exc}"
    if end < start or end - start > timedelta(days=PAYPAL_MAX_DAYS):
        return f"Date range is greater than {PAYPAL_MAX_DAYS} days or end_date is before start_date"
    if not 1 <= page_size <= 500 or page < 1:
        return "page_size must be 1..500 and page at least 1"
    return start, end, page_size, page


async def paypal_transactions(sim: ProviderSim, request: web.Request) -> web.Response:
    if not sim._paypal_authorized(request):
        return _json(401, {"error": "invalid_token", "error_description": "Token signature verification failed"})
    parsed = _paypal_query(request)
    if isinstance(parsed, str):
        issue = {"field": "query", "location": "query", "issue": parsed}
        return sim._paypal_error(
            400, "INVALID_REQUEST", "Request is not well-formed or syntactically incorrect.", [issue]
        )
    start, end, page_size, page = parsed
    rows = booked_between(entries(sim.payouts, Provider.PAYPAL), start, end + timedelta(seconds=1), to_second=True)
    details = [paypal_transaction(e, "NEXUSXMERCHANT") for e in rows]
    wanted = request.query.get("transaction_type")
    if wanted:
        details = [d for d in details if d["transaction_info"]["transaction_event_code"] == wanted]
    pages = max(1, -(-len(details) // page_size))
    base = f"http://{request.host}{request.path}"
    links = [{"href": f"{base}?{request.query_string}", "rel": "self", "method": "GET"}]
    if page < pages:
        links.append({"href": str(request.url.update_query(page=str(page + 1))), "rel": "next", "method": "GET"})
    sim.stats["PAYPAL.report_pages"] += 1
    return _json(
        200,
        {
            "transaction_details": details[(page - 1) * page_size : page * page_size],
            "account_number": "NEXUSXMERCHANT",
            "start_date": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
            "end_date": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
            "last_refreshed_datetime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
            "page": page,
            "total_items": len(details),
            "total_pages": pages,
            "links": links,
        },
    )


# --------------------------------------------------------------------------- Wise


def wise_balance_id(currency: Currency) -> int:
    return WISE_BALANCE_BASE + list(Currency).index(currency)


def _wise_checks(sim: ProviderSim, request: web.Request) -> web.Response | None:
    return sim._wise_auth(request) or sim._wise_profile(request)


async def wise_balances(sim: ProviderSim, request: web.Request) -> web.Response:
    denied = _wise_checks(sim, request)
    if denied:
        return denied
    held = {Currency(p.currency) for p in sim.payouts if p.provider == Provider.WISE.value} | {Currency.EUR}
    created = datetime(2026, 1, 5, tzinfo=UTC).isoformat()
    return _json(
        200,
        [
            {
                "id": wise_balance_id(c),
                "currency": c.value,
                "type": "STANDARD",
                "name": None,
                "amount": {"value": 0, "currency": c.value},
                "reservedAmount": {"value": 0, "currency": c.value},
                "creationTime": created,
                "modificationTime": created,
                "visible": True,
            }
            for c in sorted(held)
        ],
    )


def _wise_sca(sim: ProviderSim, request: web.Request, balance_id: int) -> web.Response | None:
    """Wise's SCA on statements: a 403 with a one-time token until the call comes back with it signed."""
    ott = request.headers.get("x-2fa-approval")
    if not ott or sim.wise_statement_otts.get(ott) != balance_id:
        token = secrets.token_hex(16)
        sim.wise_statement_otts[token] = balance_id
        body = {"status": 403, "error": "Forbidden", "message": "You are forbidden to send this request"}
        return _json(
            403, {**body, "path": request.path}, {"x-2fa-approval-result": "REJECTED", "x-2fa-approval": token}
        )
    expected = sign_sca_token(sim.settings.wise_signing_key.get_secret_value(), ott)
    if request.headers.get("X-Signature") != expected:
        return sim._wise_error(403, "sca.signature.invalid", "The signature of the one-time token is invalid")
    del sim.wise_statement_otts[ott]
    return None


async def wise_statement_json(sim: ProviderSim, request: web.Request) -> web.Response:
    denied = _wise_checks(sim, request)
    if denied:
        return denied
    q = request.query
    try:
        balance_id = int(request.match_info["balance_id"])
        currency = Currency(q["currency"])
        start = datetime.fromisoformat(q["intervalStart"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(q["intervalEnd"].replace("Z", "+00:00"))
    except (KeyError, ValueError) as exc:
        return sim._wise_error(400, "NOT_VALID", f"Invalid statement query: {exc}", "query")
    if balance_id != wise_balance_id(currency):
        return sim._wise_error(404, "balance.not.found", f"No {currency} balance {balance_id}")
    denied = _wise_sca(sim, request, balance_id)
    if denied:
        return denied
    rows = [e for e in booked_between(entries(sim.payouts, Provider.WISE), start, end) if e.line.currency is currency]
    query = {"intervalStart": q["intervalStart"], "intervalEnd": q["intervalEnd"], "accountId": balance_id}
    statement = wise_statement(currency, [e.line for e in reversed(rows)], query)  # newest first
    sim.stats["WISE.report_pages"] += 1
    return web.Response(status=200, text=json_text(statement), content_type="application/json")


# --------------------------------------------------------------------------- Toss


async def toss_settlements(sim: ProviderSim, request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != basic_auth(sim.settings.toss_secret_key.get_secret_value(), ""):
        return sim._toss_error(401, "UNAUTHORIZED_KEY", "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.")
    q = request.query
    try:
        first, last = date.fromisoformat(q["startDate"]), date.fromisoformat(q["endDate"])
        page, size = int(q.get("page", "1")), int(q.get("size", "100"))
        by_paid_out = {"soldDate": False, "paidOutDate": True}[q.get("dateType", "soldDate")]
    except (KeyError, ValueError) as exc:
        return sim._toss_error(400, "INVALID_REQUEST", f"잘못된 요청입니다. ({exc})")
    if not 1 <= size <= TOSS_MAX_SIZE or page < 1 or last < first:
        return sim._toss_error(400, "INVALID_REQUEST", "잘못된 요청입니다. (page, size, dates)")
    rows = []
    for e in entries(sim.payouts, Provider.TOSS):
        on = e.line.value_date if by_paid_out else e.line.created_at.astimezone(KST).date()
        if first <= on <= last:
            rows.append(toss_settlement_row(e.line, "tr_" + e.row_id))
    sim.stats["TOSS.report_pages"] += 1
    return web.Response(
        status=200, text=json_text(rows[(page - 1) * size : page * size]), content_type="application/json"
    )


# --------------------------------------------------------------------------- Alipay


def alipay_bill_url(sim: ProviderSim, biz: dict[str, Any], request: web.Request) -> web.Response:
    """The gateway's answer to bill.downloadurl.query: a one-off download URL for that day's bill."""
    method = alipay_api.BILL_URL_QUERY
    bill_type, bill_date = biz.get("bill_type"), str(biz.get("bill_date", ""))
    if bill_type not in ("trade", "signcustomer"):
        return sim._alipay_failure(method, "40004", "isv.invalid-bill-type", "账单类型不正确")
    try:
        day = date.fromisoformat(bill_date)
    except ValueError:
        return sim._alipay_failure(method, "40004", "isv.invalid-bill-date", "账单时间格式不正确")
    token = secrets.token_urlsafe(16)
    sim.alipay_bills[token] = (str(bill_type), day)
    name = f"{day:%Y%m%d}"
    url = (
        f"http://{request.host}/downloadBillFile.resource?bizType={bill_type}&userId={ALIPAY_ACCOUNT}"
        f"&fileType=csv.zip&bizDates={name}&downloadFileName={name}.csv.zip&fileId={token}"
    )
    return sim._alipay_answer(method, {"code": "10000", "msg": "Success", "bill_download_url": url})


async def alipay_bill_download(sim: ProviderSim, request: web.Request) -> web.Response:
    found = sim.alipay_bills.get(request.query.get("fileId", ""))
    if found is None:
        return web.Response(status=404, text="file not found")
    bill_type, day = found
    rows: list[Entry] = []
    if bill_type == "signcustomer":  # the account bill; payouts are no trade (acquiring) bill rows
        rows = [
            e
            for e in entries(sim.payouts, Provider.ALIPAY)
            if e.line.created_at.astimezone(alipay_api.CST).date() == day
        ]
    sim.stats["ALIPAY.report_pages"] += 1
    return web.Response(status=200, body=alipay_bill_zip(rows, day), content_type="application/oct-stream")


# --------------------------------------------------------------------------- PayFort


async def payfort_reporting(sim: ProviderSim, request: web.Request) -> web.Response:
    try:
        params = json.loads(await request.read())
        if not isinstance(params, dict):
            raise ValueError("expected one JSON object")
    except ValueError:
        return sim._payfort_answer({}, "00073", "Invalid request format.")
    denied = sim._payfort_denied(params)
    if denied:
        sim.stats["PAYFORT.unauthorized"] += 1
        return denied
    command, reference = params.get("query_command"), str(params.get("merchant_reference") or "")
    if command == payfort_api.GENERATE_REPORT:
        return _payfort_generate(sim, params, reference)
    if command == payfort_api.DOWNLOAD_REPORT:
        report = sim.payfort_reports.get(reference)
        if report is None:
            return sim._payfort_answer(params, "11036", "Order not found.")
        sim.stats["PAYFORT.report_pages"] += 1
        return sim._payfort_answer(params, "12000", "Success.", report_data=report)
    return sim._payfort_answer(params, "00004", "Invalid command.")


def _payfort_generate(sim: ProviderSim, params: dict[str, Any], reference: str) -> web.Response:
    columns = params.get("columns")
    try:
        start = datetime.fromisoformat(str(params["from_date"]))
        end = datetime.fromisoformat(str(params["to_date"]))
        if start.tzinfo is None or end.tzinfo is None or not reference:
            raise ValueError("dates need an offset and the report a merchant_reference")
    except (KeyError, ValueError):
        return sim._payfort_answer(params, "00001", "Missing parameter.")
    if not isinstance(columns, list) or not columns or not set(columns) <= set(payfort_api.REPORT_COLUMNS):
        return sim._payfort_answer(params, "00002", "Invalid parameter format.")
    if reference in sim.payfort_reports:
        return sim._payfort_answer(params, "00007", "Duplicate order number.")
    command = sim.settings.payfort_payout_command
    rows = booked_between(entries(sim.payouts, Provider.PAYFORT), start, end + timedelta(seconds=1), to_second=True)
    sim.payfort_reports[reference] = [{c: payfort_row(e, command)[c] for c in columns} for e in rows]
    return sim._payfort_answer(params, "12000", "Success.")
