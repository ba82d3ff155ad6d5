"""A local stand-in for a Sumsub-style KYC provider: its applicant API, and signed webhooks sent to the receiver.

Applicant API (what ``streams.kyc`` reads contacts from): ``GET /resources/applicants/{applicantId}/one``, answered
only to a request with the right ``X-App-Token`` and ``X-App-Access-Sig`` (401 otherwise), 404 for an applicant it
does not hold. Each applicant is an account with an e-mail, a phone and a push token; the applicant id is derived
from the account (``applicant_id``), as Sumsub keeps one applicant per externalUserId.

CLI (secrets from the environment only, the receiver's: NEXUS_KYC_WEBHOOK_SECRET, NEXUS_KYC_APP_TOKEN,
NEXUS_KYC_APP_SECRET_KEY; ``dev-secrets`` prints fresh dev-only values to export)::

    python -m devtools.kyc_sim dev-secrets
    python -m devtools.kyc_sim serve [--port 19486] [--accounts acct-1,acct-2] [--applicants FILE.json]
    python -m devtools.kyc_sim send --account acct-1 --status VERIFIED --receiver http://127.0.0.1:19485

Statuses are sent as Sumsub would: VERIFIED = applicantReviewed GREEN, REJECTED = applicantReviewed RED (FINAL),
PENDING = applicantPending, EXPIRED = applicantExpired (the receiver's default expiry type).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from infra.http_serving import QuietHandler, run_until_signalled, serve_in_background, shut_down, url_host
from streams.kyc import sumsub
from streams.kyc.receiver import WEBHOOK_PATH
from streams.kyc.settings import KycSettings, secret_bytes

DEFAULT_PORT = 19486
SIGNATURE_MAX_AGE_S = 300
STATUS_WEBHOOKS: dict[str, dict[str, Any]] = {
    "VERIFIED": {"type": "applicantReviewed", "reviewStatus": "completed", "reviewResult": {"reviewAnswer": "GREEN"}},
    "REJECTED": {
        "type": "applicantReviewed",
        "reviewStatus": "completed",
        "reviewResult": {"reviewAnswer": "RED", "reviewRejectType": "FINAL", "rejectLabels": ["DOCUMENT_PAGE_MISSING"]},
    },
    "PENDING": {"type": "applicantPending", "reviewStatus": "pending"},
    "EXPIRED": {"type": "applicantExpired", "reviewStatus": "completed"},
}


def applicant_id(account_id: str) -> str:
    """The provider's id of an account's applicant: 24 hex characters, like Sumsub's."""
    return hashlib.sha256(f"applicant:{account_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Applicant:
    account_id: str
    email: str | None
    phone: str | None
    push_token: str | None = None

    @classmethod
    def example(cls, account_id: str) -> Applicant:
        """Made-up contacts for a demo account (example.com, a Korean mobile number, a push token)."""
        digits = int(hashlib.sha256(account_id.encode()).hexdigest(), 16) % 10**8
        return cls(account_id, f"{account_id}@example.com", f"+8210{digits:08d}", f"push-{applicant_id(account_id)}")

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": applicant_id(self.account_id),
            "createdAt": "2026-01-01 00:00:00",
            "externalUserId": self.account_id,
            "type": "individual",
            "email": self.email,
            "phone": self.phone,
            "review": {"reviewStatus": "completed"},
        }
        if self.push_token:
            body["metadata"] = [{"key": "pushToken", "value": self.push_token}]
        return body


class KycSimulator:
    """The applicant API on ``host:port`` (0 = any free port); `fail_next` makes that many requests answer 503."""

    def __init__(self, app_token: str, app_secret_key: bytes, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app_token, self.app_secret_key, self.host, self._port = app_token, app_secret_key, host, port
        self._applicants: dict[str, Applicant] = {}
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self.fail_next = 0
        self.requests = 0  # applicant API calls answered 200

    def add(self, *applicants: Applicant) -> None:
        with self._lock:
            self._applicants.update({applicant_id(a.account_id): a for a in applicants})

    def lookup(self, applicant: str) -> Applicant | None:
        with self._lock:
            return self._applicants.get(applicant)

    @property
    def url(self) -> str:
        assert self._http is not None, "simulator not started"
        return f"http://{url_host(self.host)}:{self._http.server_address[1]}"

    def authorised(self, headers: Any, path: str) -> bool:
        token, ts, signature = (headers.get(h) for h in ("X-App-Token", "X-App-Access-Ts", "X-App-Access-Sig"))
        if token != self.app_token or not ts or not ts.isdigit() or signature is None:
            return False
        if abs(time.time() - int(ts)) > SIGNATURE_MAX_AGE_S:
            return False
        expected = sumsub.request_signature(self.app_secret_key, int(ts), "GET", path)
        return signature.isascii() and secrets.compare_digest(expected, signature.lower())

    def start(self) -> KycSimulator:
        sim = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["resources", "applicants"] or parts[3] != "one":
                    return self._json(404, {"description": "not found", "code": 404})
                if not sim.authorised(self.headers, self.path):
                    return self._json(401, {"description": "Invalid signature or app token", "code": 401})
                with sim._lock:
                    failing = sim.fail_next > 0
                    sim.fail_next -= 1 if failing else 0
                if failing:
                    return self._json(503, {"description": "unavailable (injected)", "code": 503})
                applicant = sim.lookup(parts[2])
                if applicant is None:
                    return self._json(404, {"description": f"Applicant {parts[2]} not found", "code": 404})
                with sim._lock:
                    sim.requests += 1
                self._json(200, applicant.as_json())

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self.send_body(status, json.dumps(body).encode(), "application/json")

        self._http = serve_in_background(self.host, self._port, Handler, "kyc-sim")
        return self

    def stop(self) -> None:
        shut_down(self._http)
        self._http = None

    def __enter__(self) -> KycSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- webhooks


def webhook_payload(
    account_id: str, status: str, correlation_id: str | None = None, created_at: datetime | None = None
) -> dict[str, Any]:
    """The webhook Sumsub sends when an account's applicant reaches `status` (VERIFIED / PENDING / ...)."""
    when = (created_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "applicantId": applicant_id(account_id),
        "inspectionId": hashlib.sha256(f"inspection:{account_id}".encode()).hexdigest()[:24],
        "correlationId": correlation_id or f"req-{uuid.uuid4()}",
        "levelName": "basic-kyc-level",
        "externalUserId": account_id,
        "sandboxMode": True,
        "createdAtMs": when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}",
        "clientId": "nexus-x-local",
        **STATUS_WEBHOOKS[status],
    }


def signed(payload: dict[str, Any], secret: bytes, alg: str = sumsub.DEFAULT_ALG) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook as the provider sends it."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        sumsub.DIGEST_HEADER: sumsub.sign(secret, body, alg),
        sumsub.DIGEST_ALG_HEADER: alg,
    }
    return body, headers


def send_webhook(receiver: str, body: bytes, headers: dict[str, str], timeout_s: float = 10.0) -> httpx.Response:
    """POST a webhook to the receiver (its base URL, or the webhook URL itself)."""
    url = receiver if receiver.rstrip("/").endswith(WEBHOOK_PATH) else receiver.rstrip("/") + WEBHOOK_PATH
    return httpx.post(url, content=body, headers=headers, timeout=timeout_s)


def dev_secrets() -> dict[str, str]:
    """Fresh random values for the receiver and the simulator, for a local run only (the demo exports them)."""
    return {
        "NEXUS_KYC_WEBHOOK_SECRET": f"dev-only-{secrets.token_hex(16)}",
        "NEXUS_KYC_APP_TOKEN": f"dev-only-{secrets.token_hex(16)}",
        "NEXUS_KYC_APP_SECRET_KEY": f"dev-only-{secrets.token_hex(16)}",
    }


# ----------------------------------------------------------------------------- CLI


def _serve(args: argparse.Namespace, kyc: KycSettings) -> int:
    assert kyc.app_token is not None
    sim = KycSimulator(kyc.app_token.get_secret_value(), secret_bytes(kyc.app_secret_key), args.host, args.port)
    sim.add(*(Applicant.example(a.strip()) for a in args.accounts.split(",") if a.strip()))
    if args.applicants:
        rows = json.loads(Path(args.applicants).read_text())
        sim.add(*(Applicant(r["account_id"], r.get("email"), r.get("phone"), r.get("push_token")) for r in rows))
    sim.start()
    return run_until_signalled(f"KYC simulator: applicant API on {sim.url}", sim.stop)


def _send(args: argparse.Namespace, kyc: KycSettings) -> int:
    payload = webhook_payload(args.account, args.status, args.correlation_id)
    body, headers = signed(payload, secret_bytes(kyc.webhook_secret))
    try:
        answer = send_webhook(args.receiver, body, headers)
    except httpx.HTTPError as error:
        print(f"receiver {args.receiver} not reached: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"{args.status} for {args.account}: receiver answered {answer.status_code} {answer.text}")
    return 0 if answer.status_code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.kyc_sim", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev-secrets", help="print dev-only secrets to export (a local run only)")
    serve = commands.add_parser("serve", help="serve the applicant API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--accounts", default="", help="comma-separated accounts given example contacts")
    serve.add_argument("--applicants", help='JSON file: [{"account_id", "email", "phone", "push_token"}, ...]')
    send = commands.add_parser("send", help="send a signed webhook for an account's new status")
    send.add_argument("--account", required=True)
    send.add_argument("--status", required=True, choices=sorted(STATUS_WEBHOOKS))
    send.add_argument("--receiver", default=f"http://127.0.0.1:{KycSettings().port}")
    send.add_argument("--correlation-id", help="re-send a webhook: the same correlationId gives the same event_id")
    args = parser.parse_args(argv)
    if args.command == "dev-secrets":
        print("\n".join(f"export {name}={value}" for name, value in dev_secrets().items()))
        return 0
    kyc = KycSettings()
    needed = (
        ["NEXUS_KYC_WEBHOOK_SECRET"] if args.command == "send" else ["NEXUS_KYC_APP_TOKEN", "NEXUS_KYC_APP_SECRET_KEY"]
    )
    missing = [name for name in kyc.missing_secrets() if name in needed]
    if missing:
        print(f"set {', '.join(missing)} (the receiver's; `dev-secrets` makes dev-only ones)", file=sys.stderr)
        return 2
    return _serve(args, kyc) if args.command == "serve" else _send(args, kyc)


if __name__ == "__main__":
    sys.exit(main())
