"""The KYC webhook receiver (streams/kyc): the signature check, the status mapping, the contacts, and what one
webhook becomes, with the applicant API and the broker faked (and once with the simulator's real applicant API)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.models import KycStatusChanged
from contracts.topics import KYC_STATUS
from devtools.kyc_sim import Applicant, KycSimulator, applicant_id, signed, webhook_payload
from domain.payouts import KycStatus
from streams.kyc import receiver as kyc_receiver
from streams.kyc import sumsub
from streams.kyc.receiver import ApplicantApi, KycReceiver, Unavailable, serve
from streams.kyc.settings import KycSettings
from streams.security.envelope import LocalSealer, open_json

SECRET = b"test-webhook-secret"
BODY = b'{"type":"applicantReviewed"}'
WHEN = datetime(2026, 3, 1, 9, 30, 0, 123000, tzinfo=UTC)


# ----------------------------------------------------------------------------- signature


def test_a_good_digest_is_accepted_with_either_accepted_algorithm() -> None:
    assert sumsub.digest_ok(SECRET, BODY, hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(), "HMAC_SHA256_HEX")
    assert sumsub.digest_ok(SECRET, BODY, hmac.new(SECRET, BODY, hashlib.sha512).hexdigest(), "HMAC_SHA512_HEX")
    assert sumsub.digest_ok(SECRET, BODY, sumsub.sign(SECRET, BODY).upper(), "HMAC_SHA256_HEX")  # hex in any case


@pytest.mark.parametrize(
    ("digest", "alg"),
    [
        (None, "HMAC_SHA256_HEX"),  # missing digest
        ("", "HMAC_SHA256_HEX"),
        (hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(), None),  # missing algorithm
        (hmac.new(SECRET, BODY, hashlib.sha1).hexdigest(), "HMAC_SHA1_HEX"),  # right digest, refused algorithm
        (hmac.new(SECRET, BODY, hashlib.sha512).hexdigest(), "HMAC_SHA256_HEX"),  # algorithm mislabelled
        (hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(), "NONE"),
        (hmac.new(b"another-secret", BODY, hashlib.sha256).hexdigest(), "HMAC_SHA256_HEX"),  # wrong secret
        (hmac.new(SECRET, BODY + b" ", hashlib.sha256).hexdigest(), "HMAC_SHA256_HEX"),  # another body
        ("é" * 64, "HMAC_SHA256_HEX"),  # not ASCII: refused, not an exception
    ],
)
def test_a_bad_or_missing_digest_is_refused(digest: str | None, alg: str | None) -> None:
    assert not sumsub.digest_ok(SECRET, BODY, digest, alg)


def test_no_secret_accepts_nothing() -> None:
    assert not sumsub.digest_ok(b"", BODY, hmac.new(b"", BODY, hashlib.sha256).hexdigest(), "HMAC_SHA256_HEX")


# ----------------------------------------------------------------------------- mapping


def hook(kind: str, answer: str | None = None, **extra: Any) -> sumsub.Webhook:
    payload: dict[str, Any] = {
        "type": kind,
        "applicantId": "65f0c0ffee0000000000abcd",
        "externalUserId": "acct-1",
        "correlationId": "req-1",
        "createdAtMs": "2026-03-01 09:30:00.123",
        **extra,
    }
    if answer is not None:
        payload["reviewResult"] = {"reviewAnswer": answer}
    return sumsub.parse_webhook(json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("kind", "answer", "status"),
    [
        ("applicantReviewed", "GREEN", KycStatus.VERIFIED),
        ("applicantReviewed", "RED", KycStatus.REJECTED),
        ("applicantPending", None, KycStatus.PENDING),
        ("applicantOnHold", None, KycStatus.PENDING),
        ("applicantReset", None, KycStatus.PENDING),
        ("applicantCreated", None, KycStatus.PENDING),
        ("applicantExpired", None, KycStatus.EXPIRED),
        ("applicantPersonalInfoChanged", None, None),
        ("applicantTagsChanged", None, None),
    ],
)
def test_status_mapping(kind: str, answer: str | None, status: KycStatus | None) -> None:
    assert sumsub.map_status(hook(kind, answer)) == status


def test_the_expiry_types_are_configured() -> None:
    assert sumsub.map_status(hook("applicantLevelChanged"), ["applicantLevelChanged"]) == KycStatus.EXPIRED
    assert sumsub.map_status(hook("applicantExpired"), ["applicantLevelChanged"]) is None
    assert KycSettings(expired_types=" a, b ,").expired_type_names == ("a", "b")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"type": "applicantReviewed", "applicantId": "a1", "createdAtMs": "2026-03-01 09:30:00.123"}',
        b'{"type": "applicantPending", "applicantId": "a1", "externalUserId": "acct 1", "createdAtMs": "2026-03-01"}',
        b'{"type": "applicantPending", "applicantId": "a1", "externalUserId": "acct-1"}',
        b'{"type": "applicantPending", "applicantId": "a1", "externalUserId": "acct-1", "createdAtMs": "yesterday"}',
    ],
)
def test_an_unreadable_webhook_is_refused(body: bytes) -> None:
    with pytest.raises(sumsub.BadWebhook):
        sumsub.parse_webhook(body)


def test_a_review_without_an_answer_sets_no_guessed_status() -> None:
    with pytest.raises(sumsub.BadWebhook):
        sumsub.map_status(hook("applicantReviewed", "YELLOW"))


def test_the_event_id_and_time_are_the_webhooks() -> None:
    reviewed = hook("applicantReviewed", "GREEN")
    assert reviewed.event_id == "req-1:applicantReviewed" and reviewed.occurred_at == WHEN
    assert hook("applicantPending").event_id == "req-1:applicantPending"  # one request, two webhooks: two ids
    body = b'{"type":"applicantPending","applicantId":"a1","externalUserId":"acct-1","createdAtMs":"2026-03-01"}'
    fallback = sumsub.parse_webhook(body)
    assert fallback.event_id == "sumsub:" + hashlib.sha256(body).hexdigest()[:40] == sumsub.parse_webhook(body).event_id
    zoned = hook("applicantPending", createdAtMs="2026-03-01T18:30:00.123+09:00")
    assert zoned.occurred_at == WHEN


def test_contacts_are_normalised_and_invalid_ones_left_out() -> None:
    found = sumsub.contacts(
        {"email": "sam@example.com", "phone": "+82 10-1234-5678", "metadata": [{"key": "pushToken", "value": "tok-1"}]}
    )
    assert found == sumsub.Contacts("sam@example.com", "+821012345678", "tok-1")
    assert sumsub.contacts({"email": "not an email", "phone": "010-1234-5678"}) == sumsub.Contacts(None, None, None)


# ----------------------------------------------------------------------------- one webhook


class Fakes:
    def __init__(self, applicant: dict[str, Any] | Exception | None = None, publish_error: Exception | None = None):
        self.applicant = applicant if applicant is not None else Applicant.example("acct-1").as_json()
        self.publish_error = publish_error
        self.fetched: list[str] = []
        self.published: list[KycStatusChanged] = []

    def fetch(self, applicant: str) -> dict[str, Any]:
        self.fetched.append(applicant)
        if isinstance(self.applicant, Exception):
            raise self.applicant
        return self.applicant

    def publish(self, event: KycStatusChanged) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(event)


def receive(fakes: Fakes, body: bytes, headers: dict[str, str]) -> kyc_receiver.Answer:
    return KycReceiver(SECRET, fakes.fetch, fakes.publish).handle(body, {k.lower(): v for k, v in headers.items()})


def test_a_signed_webhook_becomes_a_kyc_status_with_the_applicants_contacts() -> None:
    fakes = Fakes()
    body, headers = signed(webhook_payload("acct-1", "VERIFIED", "req-7", WHEN), SECRET)
    answer = receive(fakes, body, headers)
    assert answer.status == 200 and answer.body["eventId"] == "req-7:applicantReviewed"
    (event,) = fakes.published
    example = Applicant.example("acct-1")
    assert event.model_dump() == {
        "account_id": "acct-1",
        "status": KycStatus.VERIFIED,
        "provider": "SUMSUB",
        "applicant_id": applicant_id("acct-1"),
        "event_id": "req-7:applicantReviewed",
        "email": example.email,
        "phone": example.phone,
        "push_token": example.push_token,
        "occurred_at": WHEN,
        "contacts_sealed": None,  # sealing off (no sealer): the contacts are plain
    }
    assert fakes.fetched == [applicant_id("acct-1")]
    assert receive(fakes, body, headers).body["eventId"] == event.event_id  # a re-sent webhook: the same id


def test_a_bad_signature_produces_nothing() -> None:
    fakes = Fakes()
    body, headers = signed(webhook_payload("acct-1", "VERIFIED"), b"not-the-secret")
    assert receive(fakes, body, headers).status == 401
    del headers[sumsub.DIGEST_HEADER]
    assert receive(fakes, body, headers).status == 401
    assert fakes.published == [] and fakes.fetched == []


@pytest.mark.parametrize(
    ("fakes", "status"),
    [
        (Fakes(applicant=Unavailable("answered 503")), 503),  # the provider sends it again
        (Fakes(publish_error=Unavailable("no ack within 4.0s")), 503),
        (Fakes(applicant=Applicant.example("acct-2").as_json()), 422),  # contacts of someone else: never used
    ],
)
def test_nothing_is_answered_200_unless_recorded(fakes: Fakes, status: int) -> None:
    body, headers = signed(webhook_payload("acct-1", "PENDING"), SECRET)
    assert receive(fakes, body, headers).status == status
    assert fakes.published == []


def test_a_type_that_sets_no_status_is_acknowledged_and_ignored() -> None:
    fakes = Fakes()
    payload = {**webhook_payload("acct-1", "PENDING"), "type": "applicantTagsChanged"}
    answer = receive(fakes, *signed(payload, SECRET))
    assert (answer.status, answer.body["status"]) == (200, "ignored") and fakes.published == [] == fakes.fetched


def test_a_signed_but_unreadable_webhook_is_a_400() -> None:
    fakes = Fakes()
    answer = receive(fakes, *signed({"type": "applicantReviewed", "applicantId": "a1"}, SECRET))
    assert answer.status == 400 and fakes.published == []


# ----------------------------------------------------------------------------- settings and the HTTP layer


def test_the_receiver_refuses_to_start_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of a developer's
    for name in ("WEBHOOK_SECRET", "APP_TOKEN", "APP_SECRET_KEY"):
        monkeypatch.delenv(f"NEXUS_KYC_{name}", raising=False)
    monkeypatch.setenv("NEXUS_KYC_APP_TOKEN", "dev-only-token")
    assert kyc_receiver.main() == 2
    error = capsys.readouterr().err
    assert "NEXUS_KYC_WEBHOOK_SECRET" in error and "NEXUS_KYC_APP_SECRET_KEY" in error
    assert "NEXUS_KYC_APP_TOKEN" not in error


def test_the_applicant_api_is_called_signed_and_answers_only_the_right_token() -> None:
    with KycSimulator("app-token", b"app-key") as sim:
        sim.add(Applicant.example("acct-1"))
        api = ApplicantApi(sim.url, "app-token", b"app-key", 5.0)
        assert api.fetch(applicant_id("acct-1"))["email"] == "acct-1@example.com"
        with pytest.raises(Unavailable, match="404"):
            api.fetch(applicant_id("acct-unknown"))
        sim.fail_next = 1
        with pytest.raises(Unavailable, match="503"):
            api.fetch(applicant_id("acct-1"))
        with pytest.raises(Unavailable, match="401"):
            ApplicantApi(sim.url, "app-token", b"wrong-key", 5.0).fetch(applicant_id("acct-1"))
        with pytest.raises(Unavailable, match="401"):
            ApplicantApi(sim.url, "wrong-token", b"app-key", 5.0).fetch(applicant_id("acct-1"))
        assert sim.requests == 1


def test_the_http_layer_checks_path_and_size_before_the_receiver() -> None:
    fakes = Fakes()
    server = serve(KycReceiver(SECRET, fakes.fetch, fakes.publish), "127.0.0.1", 0, 1024, 4)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body, headers = signed(webhook_payload("acct-1", "VERIFIED"), SECRET)
        assert httpx.post(base + "/webhooks/sumsub", content=body, headers=headers).status_code == 200
        assert httpx.post(base + "/other", content=body, headers=headers).status_code == 404
        assert httpx.post(base + "/webhooks/sumsub", content=b"x" * 2000, headers=headers).status_code == 413
        bad = {**headers, sumsub.DIGEST_HEADER: "0" * 64}
        assert httpx.post(base + "/webhooks/sumsub", content=body, headers=bad).status_code == 401
        assert httpx.get(base + "/healthz").status_code == 200
        assert len(fakes.published) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_with_sealing_on_the_contacts_go_out_sealed_and_never_plain() -> None:
    fakes, sealer = Fakes(), LocalSealer(os.urandom(32))
    body, headers = signed(webhook_payload("acct-1", "VERIFIED", "req-8", WHEN), SECRET)
    receiver = KycReceiver(SECRET, fakes.fetch, fakes.publish, sealer=sealer)
    assert receiver.handle(body, {k.lower(): v for k, v in headers.items()}).status == 200
    (event,) = fakes.published
    example = Applicant.example("acct-1")
    assert event.email is None and event.phone is None and event.push_token is None
    assert event.contacts_sealed is not None
    wire = KYC_STATUS.encode(event).decode()
    assert all(v not in wire for v in (example.email, example.phone, example.push_token) if v)
    opened = open_json(sealer, event.contacts_sealed)
    assert opened == {"email": example.email, "phone": example.phone, "push_token": example.push_token}


def test_a_sealer_that_fails_records_nothing_and_asks_for_a_retry() -> None:
    class Down:
        def seal(self, plaintext: bytes) -> str:
            raise RuntimeError("HSM unreachable")

        def open(self, sealed: str) -> bytes:
            raise RuntimeError("HSM unreachable")

    fakes = Fakes()
    body, headers = signed(webhook_payload("acct-1", "VERIFIED", "req-9", WHEN), SECRET)
    receiver = KycReceiver(SECRET, fakes.fetch, fakes.publish, sealer=Down())
    assert receiver.handle(body, {k.lower(): v for k, v in headers.items()}).status == 503
    assert fakes.published == []
