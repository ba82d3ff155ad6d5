"""The KYC webhook receiver: a Sumsub-style provider's signed webhooks in, ``KycStatusChanged`` on ``kyc.status`` out.

    python -m streams.kyc        (settings: NEXUS_KYC_* — the secrets have no default — and NEXUS_* for Kafka)

``POST /webhooks/sumsub``: the body's digest is checked first (401, nothing produced, when it is missing or wrong);
the webhook is mapped to VERIFIED / PENDING / REJECTED / EXPIRED (``streams.kyc.sumsub``); the holder's contacts
are fetched from the provider's applicant API; the status is produced keyed by account (the webhook's
externalUserId) and the webhook is answered 200 only once the broker acknowledged it. Anything that may pass on a
retry (applicant API down, broker slow) is answered 503 so the provider sends the webhook again; a re-sent webhook
gives the same event_id, which consumers deduplicate on.

Answers: 200 accepted or ignored (a type that sets no status), 400 a signed webhook the receiver cannot read, 401
bad signature, 404 other paths, 411/413 no or too large a body, 422 the applicant API named another holder, 503
retry later.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
from confluent_kafka import Producer
from pydantic import ValidationError

from contracts.models import KycStatusChanged
from contracts.topics import KYC_STATUS
from domain.payouts import KycStatus
from infra.http_serving import QuietHandler, run_until_signalled, serve_in_background, shut_down, url_host
from streams.kafka.clients import produce_bounded, producer_config
from streams.kafka.topic_admin import ensure_topics
from streams.kyc import sumsub
from streams.kyc.settings import KycSettings, secret_bytes
from streams.ops import logs
from streams.security.envelope import Sealer, platform_sealer, seal_json
from streams.settings import get_settings

log = logging.getLogger("nexus.kyc")

WEBHOOK_PATH = "/webhooks/sumsub"


class Unavailable(Exception):
    """Something the webhook needs is not there now (applicant API, broker): answered 503, the provider retries."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class KycReceiver:
    """One webhook in, one answer out; the applicant API and the broker are passed in (tests give fakes)."""

    def __init__(
        self,
        webhook_secret: bytes,
        fetch_applicant: Callable[[str], dict[str, Any]],
        publish: Callable[[KycStatusChanged], None],
        expired_types: Iterable[str] = sumsub.DEFAULT_EXPIRED_TYPES,
        sealer: Sealer | None = None,
    ) -> None:
        assert webhook_secret, "a receiver without a webhook secret would accept anyone's webhook"
        self.secret, self.fetch_applicant, self.publish = webhook_secret, fetch_applicant, publish
        self.expired_types = tuple(expired_types)
        self.sealer = sealer  # set: the contacts go out sealed (contacts_sealed), never plain

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """`headers`: names in lower case."""
        digest, alg = headers.get(sumsub.DIGEST_HEADER.lower()), headers.get(sumsub.DIGEST_ALG_HEADER.lower())
        if not sumsub.digest_ok(self.secret, body, digest, alg):
            log.warning("webhook refused: bad or missing %s (alg %r)", sumsub.DIGEST_HEADER, alg)
            return Answer(401, {"error": f"bad or missing {sumsub.DIGEST_HEADER}"})
        try:
            webhook = sumsub.parse_webhook(body)
            status = sumsub.map_status(webhook, self.expired_types)
        except sumsub.BadWebhook as bad:
            log.warning("signed webhook unreadable: %s", bad)
            return Answer(400, {"error": str(bad)})
        if status is None:
            log.info(
                "webhook %s %s for %s: sets no status, ignored", webhook.event_id, webhook.type, webhook.account_id
            )
            return Answer(200, {"status": "ignored", "type": webhook.type})
        try:
            applicant = self.fetch_applicant(webhook.applicant_id)
        except Unavailable as failure:
            log.warning("webhook %s: applicant API: %s (answered 503)", webhook.event_id, failure)
            return Answer(503, {"error": "applicant API unavailable, send again later"})
        if applicant.get("externalUserId") != webhook.account_id:
            log.warning(
                "webhook %s: the applicant API names another holder for %s", webhook.event_id, webhook.applicant_id
            )
            return Answer(422, {"error": "the applicant's externalUserId differs from the webhook's"})
        return self._publish(webhook, status, sumsub.contacts(applicant))

    def _publish(self, webhook: sumsub.Webhook, status: KycStatus, contacts: sumsub.Contacts) -> Answer:
        try:
            event = KycStatusChanged(
                account_id=webhook.account_id,
                status=status,
                provider="SUMSUB",
                applicant_id=webhook.applicant_id,
                event_id=webhook.event_id,
                email=contacts.email,
                phone=contacts.phone,
                push_token=contacts.push_token,
                occurred_at=webhook.occurred_at,
            )
        except ValidationError as invalid:
            return Answer(400, {"error": f"not a KYC status: {invalid.errors(include_url=False)[0]['msg']}"})
        try:
            event = self._sealed(event)
        except Exception as failure:  # the HSM is unreachable or refuses: nothing goes out plain, the provider retries
            log.warning("webhook %s: contacts not sealed: %s (answered 503)", webhook.event_id, type(failure).__name__)
            return Answer(503, {"error": "not recorded, send again later"})
        try:
            self.publish(event)
        except Unavailable as failure:
            log.warning("webhook %s: not acknowledged by the broker: %s (answered 503)", webhook.event_id, failure)
            return Answer(503, {"error": "not recorded, send again later"})
        log.info("KYC %s for %s (event %s, %s)", status, webhook.account_id, webhook.event_id, webhook.type)
        return Answer(200, {"status": "accepted", "eventId": webhook.event_id, "kycStatus": status})

    def _sealed(self, event: KycStatusChanged) -> KycStatusChanged:
        """The contacts (validated plain above) as one sealed JSON object, the plain fields emptied."""
        contacts = {"email": event.email, "phone": event.phone, "push_token": event.push_token}
        if self.sealer is None or not any(contacts.values()):
            return event
        sealed = seal_json(self.sealer, contacts)
        return event.model_copy(update={"email": None, "phone": None, "push_token": None, "contacts_sealed": sealed})


class ApplicantApi:
    """The provider's applicant API (``GET /resources/applicants/{id}/one``), requests signed with the app's key."""

    def __init__(self, base_url: str, app_token: str, secret_key: bytes, timeout_s: float) -> None:
        self.base_url, self.app_token, self.secret_key = base_url.rstrip("/"), app_token, secret_key
        self.client = httpx.Client(timeout=timeout_s)  # thread-safe: shared by the request threads

    def fetch(self, applicant_id: str) -> dict[str, Any]:
        path = sumsub.applicant_path(applicant_id)
        ts = int(time.time())
        headers = {
            "Accept": "application/json",
            "X-App-Token": self.app_token,
            "X-App-Access-Ts": str(ts),
            "X-App-Access-Sig": sumsub.request_signature(self.secret_key, ts, "GET", path),
        }
        try:
            answer = self.client.get(self.base_url + path, headers=headers)
        except httpx.HTTPError as error:
            raise Unavailable(f"{type(error).__name__}: {error}") from None
        if answer.status_code != 200:
            raise Unavailable(f"answered {answer.status_code}")
        try:
            applicant = answer.json()
        except ValueError:
            raise Unavailable("answered something that is not JSON") from None
        if not isinstance(applicant, dict):
            raise Unavailable("answered JSON that is not an applicant object")
        return applicant

    def close(self) -> None:
        self.client.close()


class AckedProducer:
    """Produce one record and wait for the broker's ack (or raise Unavailable); a thread serves the callbacks."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self.producer = Producer(producer_config(bootstrap))
        self.timeout_s = timeout_s
        self._closed = threading.Event()
        threading.Thread(target=self._poll, name="kyc-producer-poller", daemon=True).start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.05)

    def publish(self, event: KycStatusChanged) -> None:
        acked = threading.Event()
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)
            acked.set()

        produce_bounded(
            self.producer, KYC_STATUS.name, KYC_STATUS.encode(event), KYC_STATUS.key_of(event), on_delivery=delivered
        )
        if not acked.wait(self.timeout_s):
            raise Unavailable(f"no ack within {self.timeout_s}s")
        if errors:
            raise Unavailable(str(errors[0]))

    def close(self) -> None:
        self.producer.flush(10)
        self._closed.set()


def serve(receiver: KycReceiver, host: str, port: int, max_body_bytes: int, max_concurrent: int) -> ThreadingHTTPServer:
    """Bind and serve in the background (port 0: any free port)."""
    slots = threading.BoundedSemaphore(max_concurrent)

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            if self.path.split("?")[0] != WEBHOOK_PATH:
                return self._answer(Answer(404, {"error": f"POST {WEBHOOK_PATH}"}))
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                return self._answer(Answer(411, {"error": "Content-Length required"}))
            if int(length) > max_body_bytes:
                return self._answer(Answer(413, {"error": f"body above {max_body_bytes} bytes"}))
            body = self.rfile.read(int(length))
            if not slots.acquire(blocking=False):
                return self._answer(Answer(503, {"error": "busy, send again later"}))
            try:
                answer = receiver.handle(body, {k.lower(): v for k, v in self.headers.items()})
            finally:
                slots.release()
            self._answer(answer)

        def do_GET(self) -> None:
            found = self.path == "/healthz"
            self._answer(Answer(200, {"status": "ok"}) if found else Answer(404, {"error": "not found"}))

        def _answer(self, answer: Answer) -> None:
            self.send_body(answer.status, json.dumps(answer.body).encode(), "application/json")

    return serve_in_background(host, port, Handler, "kyc-webhooks")


def main() -> int:
    logs.setup()
    kyc = KycSettings()
    missing = kyc.missing_secrets()
    if missing:
        print(f"refusing to start: set {', '.join(missing)} (no defaults: never in the repository)", file=sys.stderr)
        return 2
    settings = get_settings()
    ensure_topics(settings, [KYC_STATUS])
    assert kyc.app_token is not None
    api = ApplicantApi(
        kyc.applicant_api_url, kyc.app_token.get_secret_value(), secret_bytes(kyc.app_secret_key), kyc.api_timeout_s
    )
    producer = AckedProducer(settings.bootstrap_servers, kyc.produce_timeout_s)
    receiver = KycReceiver(
        secret_bytes(kyc.webhook_secret), api.fetch, producer.publish, kyc.expired_type_names, platform_sealer()
    )
    server = serve(receiver, kyc.host, kyc.port, kyc.max_body_bytes, kyc.max_concurrent)
    url = f"http://{url_host(kyc.host)}:{server.server_address[1]}{WEBHOOK_PATH}"

    def stop() -> None:
        shut_down(server)
        producer.close()
        api.close()

    return run_until_signalled(f"Worker ready (KYC webhook receiver on {url})", stop)


if __name__ == "__main__":
    sys.exit(main())
