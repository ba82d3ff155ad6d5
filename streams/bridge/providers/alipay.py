"""Alipay transfers (CNY rail): the OpenAPI gateway with RSA2 (SHA256withRSA) signed parameters.

Every call is a form POST to the gateway (``https://openapi.alipay.com/gateway.do``) with the common
parameters ``app_id, method, format=JSON, charset=utf-8, sign_type=RSA2, timestamp ("yyyy-MM-dd
HH:mm:ss", Beijing time), version=1.0, biz_content`` (a JSON string) and ``sign``: the base64 PKCS#1 v1.5
SHA-256 signature, with the app's private key, of all other non-empty parameters sorted by name and
joined as ``k1=v1&k2=v2`` (raw values, not URL-encoded).

* Pay: ``alipay.fund.trans.uni.transfer`` with ``{"out_biz_no", "trans_amount": "150.00",
  "product_code": "TRANS_ACCOUNT_NO_PWD", "biz_scene": "DIRECT_TRANSFER", "order_title", "payee_info":
  {"identity", "identity_type": "ALIPAY_LOGON_ID", "name"}}``. ``out_biz_no`` is the idempotency key:
  Alipay answers a repeat with the original order.
* Look up: ``alipay.fund.trans.common.query`` by ``out_biz_no`` — a real read-only lookup, so a payout
  Alipay never received comes back as ``NOT_FOUND`` (sub_code ``ORDER_NOT_EXIST``).
* Answer: ``{"<method with _>_response": {"code": "10000", "msg": "Success", ...}, "sign": "..."}``. The
  ``sign`` covers the exact JSON text of the ``*_response`` value and is verified with Alipay's public
  key. ``code`` 10000 success; 20000 (service unavailable, outcome unknown); 20001/40006 (auth,
  permissions: rail unusable); 40001/40002 (bad parameters); 40004 business failure with ``sub_code``.

Report (``settlements(day)``): ``alipay.data.dataservice.bill.downloadurl.query`` with ``{"bill_type":
"signcustomer", "bill_date": "yyyy-MM-dd"}`` (the account bill: every movement of our Alipay balance, per Beijing
day) answers a signed ``bill_download_url``; a GET of it returns a zip of GBK CSV files, the detail one named
``..._账务明细.csv``: ``#`` comment lines around a header ``账务流水号, 业务流水号, 商户订单号, 商品名称, 发生时间,
对方账号, 收入金额（+元）, 支出金额（-元）, 账户余额（元）, 交易渠道, 业务类型, 备注``. A transfer is a 转账 row
(业务流水号 = the order id the bridge recorded, 商户订单号 = our out_biz_no) and its fee a 收费 row under the
same 业务流水号. A UTC day spans two Beijing days, so both bills are read and the rows outside the day dropped.
Alipay publishes a day's bill after 09:00 the next Beijing day (``isp.bill_not_exist`` before), so a UTC day's
report is complete from 01:00 UTC two days later.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import io
import json
import re
import zipfile
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency, Money
from domain.rails import Provider
from domain.statements import StatementLine, booked_on, day_window
from streams.bridge.providers.base import (
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    ProviderSettings,
    ReportError,
    classify_status,
    report_field,
)

CST = timezone(timedelta(hours=8))
TRANSFER = "alipay.fund.trans.uni.transfer"
QUERY = "alipay.fund.trans.common.query"
BILL_URL_QUERY = "alipay.data.dataservice.bill.downloadurl.query"
_RAIL_LEVEL_SUB = {
    "PAYER_BALANCE_NOT_ENOUGH",
    "BALANCE_IS_NOT_ENOUGH",
    "PERMIT_CHECK_PERM_LIMITED",
    "EXCEED_LIMIT_DC_RECEIVED",
    "INVALID_APP_AUTH_TOKEN",
    # our app id / key is refused: every payout on the rail would fail the same way
    "isv.invalid-signature",
    "isv.invalid-app-id",
    "isv.missing-signature",
}
_UNKNOWN_SUB = {"SYSTEM_ERROR", "ISP.UNKNOW_ERROR", "AQC.SYSTEM_ERROR"}


# --------------------------------------------------------------------------- signing


def sign_content(params: dict[str, str]) -> str:
    """The string Alipay signs: non-empty params except ``sign``, sorted by name, ``k=v`` joined by ``&``."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "")


def rsa2_sign(private_key: rsa.RSAPrivateKey, content: str) -> str:
    return base64.b64encode(private_key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(public_key: rsa.RSAPublicKey, content: str, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64), content.encode(), padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


DEV_KEY_FILES = ("app_private.pem", "app_public.pem", "alipay_private.pem", "alipay_public.pem")


def ensure_dev_keys(keys_dir: Path) -> Path:
    """Create the development key pairs (app and 'Alipay') the adapter and the simulator share, once."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    with open(keys_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((keys_dir / f).is_file() for f in DEV_KEY_FILES):
            return keys_dir
        for who in ("app", "alipay"):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            (keys_dir / f"{who}_private.pem").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            (keys_dir / f"{who}_public.pem").write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
    return keys_dir


@lru_cache(maxsize=8)
def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey), f"{path} is not an RSA private key"
    return key


@lru_cache(maxsize=8)
def load_public_key(path: Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    assert isinstance(key, rsa.RSAPublicKey), f"{path} is not an RSA public key"
    return key


def response_key(method: str) -> str:
    return method.replace(".", "_") + "_response"


def extract_signed_response(body: str, method: str) -> tuple[str, dict[str, Any], str | None]:
    """(exact JSON text of the ``*_response`` value, that value parsed, the ``sign``) — Alipay signs the text."""
    key = f'"{response_key(method)}"'
    start = body.find(key)
    if start < 0:
        raise ValueError(f"no {response_key(method)} in the answer")
    colon = body.index(":", start + len(key))
    value_start = colon + 1
    while body[value_start] in " \t\r\n":
        value_start += 1
    value, end = json.JSONDecoder().raw_decode(body, value_start)
    sign_match = re.search(r'"sign"\s*:\s*"([^"]*)"', body[end:]) or re.search(r'"sign"\s*:\s*"([^"]*)"', body[:start])
    return body[value_start:end], value, sign_match.group(1) if sign_match else None


def out_biz_no(key: str) -> str:
    # Alipay: at most 64 characters of letters, digits, '_' and '-'.
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        return key
    return "NX" + hashlib.sha256(key.encode()).hexdigest()[:40]


# --------------------------------------------------------------------------- requests


def build_gateway_request(
    gateway_url: str,
    app_id: str,
    private_key: rsa.RSAPrivateKey,
    method: str,
    biz_content: dict[str, Any],
    now: datetime,
) -> HttpRequest:
    params = {
        "app_id": app_id,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": now.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "1.0",
        "biz_content": json.dumps(biz_content, separators=(",", ":"), ensure_ascii=False),
    }
    params["sign"] = rsa2_sign(private_key, sign_content(params))
    return HttpRequest(
        "POST",
        gateway_url,
        (("Content-Type", "application/x-www-form-urlencoded;charset=utf-8"),),
        urlencode(params).encode(),
    )


def transfer_biz_content(intent: PayoutIntent, identity: str, name: str) -> dict[str, Any]:
    assert intent.currency is Currency.CNY, "Alipay pays CNY only"
    return {
        "out_biz_no": out_biz_no(intent.idempotency_key),
        "trans_amount": str(Money(intent.amount_minor, intent.currency).to_decimal()),
        "product_code": "TRANS_ACCOUNT_NO_PWD",
        "biz_scene": "DIRECT_TRANSFER",
        "order_title": "NEXUS-X settlement",
        "payee_info": {"identity": identity, "identity_type": "ALIPAY_LOGON_ID", "name": name},
        "remark": intent.bridge_tx_id[:200],
    }


def parse_gateway_response(
    resp: HttpResponse, method: str, alipay_public_key: rsa.RSAPublicKey | None
) -> PayoutOutcome:
    kind = classify_status(resp.status)
    if kind is not None:
        return PayoutOutcome(kind, http_status=resp.status, error_code=f"HTTP_{resp.status}")
    try:
        text, value, signature = extract_signed_response(resp.body.decode("utf-8"), method)
    except (ValueError, UnicodeDecodeError):
        return HttpAdapter.unparseable(resp, "Alipay gateway")
    code = str(value.get("code", ""))
    if (
        code == "10000"
        and alipay_public_key is not None
        and not (signature and rsa2_verify(alipay_public_key, text, signature))
    ):
        # An unsigned or forged success is not evidence of a payout; treat the outcome as unknown.
        return PayoutOutcome(PayoutStatus.TIMEOUT, http_status=resp.status, error_code="INVALID_RESPONSE_SIGNATURE")
    sub_code = str(value.get("sub_code") or "")
    message = " ".join(str(x) for x in (value.get("msg"), value.get("sub_msg")) if x)
    if code == "10000":
        status = str(value.get("status", "SUCCESS"))
        reference = str(value.get("order_id") or value.get("pay_fund_order_id") or "")
        if status in ("SUCCESS", "DEALING", "WAIT_PAY"):
            return PayoutOutcome(PayoutStatus.PAID, provider_reference=reference, http_status=resp.status)
        return PayoutOutcome(
            PayoutStatus.DECLINED,
            provider_reference=reference,
            http_status=resp.status,
            error_code=f"STATUS_{status}",
            error_message=message,
        )
    if sub_code in ("ORDER_NOT_EXIST",):
        return PayoutOutcome(
            PayoutStatus.NOT_FOUND, http_status=resp.status, error_code=sub_code, error_message=message
        )
    if code == "20000" or sub_code in _UNKNOWN_SUB:
        kind = PayoutStatus.TIMEOUT
    elif code in ("20001", "40006") or sub_code in _RAIL_LEVEL_SUB:
        kind = PayoutStatus.UNAVAILABLE
    else:
        kind = PayoutStatus.DECLINED
    return PayoutOutcome(kind, http_status=resp.status, error_code=sub_code or code, error_message=message)


# --------------------------------------------------------------------------- report (account bill)

BILL_COLUMNS = [
    "账务流水号",
    "业务流水号",
    "商户订单号",
    "商品名称",
    "发生时间",
    "对方账号",
    "收入金额（+元）",
    "支出金额（-元）",
    "账户余额（元）",
    "交易渠道",
    "业务类型",
    "备注",
]
BILL_DETAIL_SUFFIX = "_账务明细.csv"
TRANSFER_TYPE = "转账"
FEE_TYPE = "收费"
BILL_ENCODING = "gbk"
_BILL_TS = "%Y-%m-%d %H:%M:%S"


def bill_dates(day: date) -> list[str]:
    """The Beijing days whose bills hold the UTC ``day``."""
    start, end = day_window(day)
    first, last = start.astimezone(CST).date(), (end - timedelta(microseconds=1)).astimezone(CST).date()
    return [first.isoformat()] if first == last else [first.isoformat(), last.isoformat()]


def bill_detail_rows(zipped: bytes) -> list[dict[str, str]]:
    """The data rows of the detail CSV in a bill zip (comment lines dropped, values stripped)."""
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        names = [n for n in archive.namelist() if n.endswith(BILL_DETAIL_SUFFIX)]
        if len(names) != 1:
            raise ValueError(f"expected one {BILL_DETAIL_SUFFIX} in the bill, found {archive.namelist()}")
        text = archive.read(names[0]).decode(BILL_ENCODING)
    data = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.reader(data))
    header = [h.strip() for h in rows[0]]
    missing = [c for c in BILL_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"bill detail lacks column(s) {missing}")
    return [{k: v.strip() for k, v in zip(header, row, strict=False)} for row in rows[1:]]


def _cny(text: str) -> int:
    return Money.from_decimal(abs(Decimal(text)), Currency.CNY).minor_units


def bill_lines(rows: list[dict[str, str]]) -> list[StatementLine]:
    """Transfers of an account bill as statement lines; the n-th fee row of an order goes to its n-th transfer."""
    fees: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row["业务类型"] == FEE_TYPE and row["支出金额（-元）"]:
            fees[row["业务流水号"]].append(_cny(row["支出金额（-元）"]))
    seen: dict[str, int] = defaultdict(int)
    out = []
    for row in rows:
        if row["业务类型"] != TRANSFER_TYPE or not row["支出金额（-元）"]:
            continue
        order = row["业务流水号"]
        own_fees = fees.get(order, [])
        n = seen[order]
        seen[order] += 1
        created = datetime.strptime(row["发生时间"], _BILL_TS).replace(tzinfo=CST).astimezone(UTC)
        out.append(
            StatementLine(
                provider_reference=order,
                our_reference=row["商户订单号"] or None,
                amount_minor=_cny(row["支出金额（-元）"]),
                fee_minor=own_fees[n] if n < len(own_fees) else 0,
                currency=Currency.CNY,
                fx_rate=None,
                value_date=created.date(),
                created_at=created,
                counterparty=row["对方账号"] or None,
            )
        )
    return out


def parse_bill_url_response(resp: HttpResponse, alipay_public_key: rsa.RSAPublicKey) -> str:
    """The bill's download URL from a verified answer; :class:`ReportError` otherwise."""
    if resp.status != 200:
        raise ReportError(f"ALIPAY bill url: HTTP {resp.status}")
    try:
        text, value, signature = extract_signed_response(resp.body.decode("utf-8"), BILL_URL_QUERY)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"ALIPAY bill url: unreadable answer ({exc})") from exc
    if str(value.get("code")) != "10000":
        raise ReportError(f"ALIPAY bill url: {value.get('code')} {value.get('sub_code')} {value.get('sub_msg')}")
    if not (signature and rsa2_verify(alipay_public_key, text, signature)):
        raise ReportError("ALIPAY bill url: the answer's signature does not verify")
    url = value.get("bill_download_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ReportError(f"ALIPAY bill url: no bill_download_url in {value}")
    return url


class AlipayAdapter(HttpAdapter):
    provider = Provider.ALIPAY

    def __init__(self, settings: ProviderSettings, *args: Any, **kwargs: Any) -> None:
        super().__init__(settings, *args, **kwargs)
        private_file, public_file = settings.alipay_app_private_key_file, settings.alipay_public_key_file
        if private_file is None or public_file is None:
            keys = ensure_dev_keys(settings.keys_dir)
            private_file = private_file or keys / "app_private.pem"
            public_file = public_file or keys / "alipay_public.pem"
        self._private = load_private_key(Path(private_file))
        self._alipay_public = load_public_key(Path(public_file))

    def _request(self, method: str, biz: dict[str, Any]) -> HttpRequest:
        return build_gateway_request(
            self.base_url, self.settings.alipay_app_id, self._private, method, biz, datetime.now(UTC)
        )

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        acct = self.merchants.account(intent.payment.merchant_id)
        req = self._request(TRANSFER, transfer_biz_content(intent, acct.alipay_identity, acct.alipay_name))
        resp = await self.send(req)
        return resp if isinstance(resp, PayoutOutcome) else parse_gateway_response(resp, TRANSFER, self._alipay_public)

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        biz = {
            "out_biz_no": out_biz_no(intent.idempotency_key),
            "product_code": "TRANS_ACCOUNT_NO_PWD",
            "biz_scene": "DIRECT_TRANSFER",
        }
        resp = await self.send(self._request(QUERY, biz))
        return resp if isinstance(resp, PayoutOutcome) else parse_gateway_response(resp, QUERY, self._alipay_public)

    async def settlements(self, day: date) -> list[StatementLine]:
        lines: list[StatementLine] = []
        for bill_date in bill_dates(day):
            req = self._request(BILL_URL_QUERY, {"bill_type": "signcustomer", "bill_date": bill_date})
            url = parse_bill_url_response(await self.fetch(req, "bill url"), self._alipay_public)
            resp = await self.fetch(HttpRequest("GET", url, ()), f"bill {bill_date}")
            if resp.status != 200:
                raise ReportError(f"{self.provider} bill {bill_date}: HTTP {resp.status}")
            rows = report_field(self.provider, f"bill {bill_date}", bill_detail_rows, resp.body)
            found = report_field(self.provider, f"bill {bill_date}", bill_lines, rows)
            lines.extend(ln for ln in found if booked_on(ln, day))
        return lines
