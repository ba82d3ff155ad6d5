"""Issue 17 item 3 end to end: the KYC webhook receiver (python -m streams.kyc, a real process) on the session broker,
with the KYC simulator's applicant API (in this process): a signed webhook becomes a KycStatusChanged on kyc.status
with the holder's contacts, answered 200 once recorded; a re-sent webhook gives the same event_id; a bad signature
produces nothing (401); an applicant API that is down is answered 503 (the provider re-sends) and records nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.models import KycStatusChanged
from contracts.topics import KYC_STATUS
from devtools.kyc_sim import Applicant, KycSimulator, applicant_id, dev_secrets, send_webhook, signed, webhook_payload
from domain.payouts import KycStatus
from tests.support.kafka_io import KafkaIO

pytestmark = pytest.mark.slow

SECRETS = dev_secrets()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def simulator() -> Iterator[KycSimulator]:
    key = SECRETS["NEXUS_KYC_APP_SECRET_KEY"].encode()
    with KycSimulator(SECRETS["NEXUS_KYC_APP_TOKEN"], key) as sim:
        yield sim


def statuses(kafka: KafkaIO, account: str) -> list[KycStatusChanged]:
    return [KYC_STATUS.decode(r.value or b"") for r in kafka.read_all(KYC_STATUS) if r.key == account.encode()]


def test_signed_webhooks_become_kyc_statuses_and_forged_ones_nothing(
    kafka: KafkaIO, worker_factory: Any, simulator: KycSimulator, run_id: str
) -> None:
    verified, forged, pending = (f"acct-{run_id}-{n}" for n in ("v", "f", "p"))
    simulator.add(*(Applicant.example(a) for a in (verified, forged, pending)))
    port = free_port()
    worker_factory(
        module="streams.kyc",
        kyc_port=str(port),
        kyc_applicant_api_url=simulator.url,
        **{name.removeprefix("NEXUS_").lower(): value for name, value in SECRETS.items()},
    )
    receiver = f"http://127.0.0.1:{port}"
    secret = SECRETS["NEXUS_KYC_WEBHOOK_SECRET"].encode()

    body, headers = signed(webhook_payload(verified, "VERIFIED", f"req-{run_id}"), secret)
    answer = send_webhook(receiver, body, headers)
    assert answer.status_code == 200, answer.text
    (event,) = statuses(kafka, verified)  # answered 200 only once the broker acknowledged it
    example = Applicant.example(verified)
    assert (event.status, event.provider, event.applicant_id) == (KycStatus.VERIFIED, "SUMSUB", applicant_id(verified))
    assert (event.email, event.phone, event.push_token) == (example.email, example.phone, example.push_token)
    assert event.event_id == f"req-{run_id}:applicantReviewed"

    assert send_webhook(receiver, body, headers).status_code == 200  # the provider re-sends it
    assert [e.event_id for e in statuses(kafka, verified)] == [event.event_id] * 2, "the same id: consumers dedupe"

    forged_body, forged_headers = signed(webhook_payload(forged, "VERIFIED"), b"not-the-secret")
    assert send_webhook(receiver, forged_body, forged_headers).status_code == 401
    unsigned = {k: v for k, v in forged_headers.items() if k != "X-Payload-Digest"}
    assert send_webhook(receiver, forged_body, unsigned).status_code == 401

    simulator.fail_next = 1
    body, headers = signed(webhook_payload(pending, "PENDING", f"req-{run_id}-p"), secret)
    assert send_webhook(receiver, body, headers).status_code == 503
    assert statuses(kafka, pending) == []
    assert send_webhook(receiver, body, headers).status_code == 200  # the provider's retry
    assert [e.status for e in statuses(kafka, pending)] == [KycStatus.PENDING]
    assert statuses(kafka, forged) == [], "a webhook with a bad signature produces nothing"
