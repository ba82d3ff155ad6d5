"""What the drills' producer re-sends, after a redirect or a stuck client: the records the cluster lacks, in the order
they were first sent."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from devtools.drills.flow import seeded_flow
from devtools.drills.traffic import Traffic, unmatched


def test_only_what_the_new_region_lacks_is_re_sent_in_send_order() -> None:
    values = [b"a", b"b", b"c", b"d", b"e"]
    there = Counter([b"a", b"c"])  # a prefix per partition: a and c made it, b, d and e did not
    assert unmatched(values, range(5), there) == [1, 3, 4]


def test_two_sends_of_the_same_bytes_need_two_copies_there() -> None:
    values = [b"x", b"y", b"x"]
    assert unmatched(values, [0, 1, 2], Counter([b"x", b"y"])) == [2]
    assert unmatched(values, [0, 1, 2], Counter([b"x", b"x", b"y"])) == []


def test_records_of_others_on_the_topic_change_nothing() -> None:
    there = Counter([b"someone-else", b"a"])
    assert unmatched([b"a", b"b"], [0, 1], there) == [1]
    assert there == Counter([b"someone-else", b"a"])  # the caller's count is left as it was


class _Client:
    """A producer stand-in: ``stuck`` never hears back (a client wedged after a leader died); otherwise every
    record is acknowledged at the next flush."""

    def __init__(self, stuck: bool) -> None:
        self.stuck = stuck
        self.sent: list[bytes] = []
        self.pending: list[Any] = []

    def produce(self, _topic: str, value: bytes, _key: bytes, on_delivery: Any) -> None:
        self.sent.append(value)
        self.pending.append(on_delivery)

    def flush(self, _timeout_s: float) -> int:
        if not self.stuck:
            for acked in self.pending:
                acked(None, None)
            self.pending = []
        return len(self.pending)

    def purge(self) -> None:
        self.pending = []


@pytest.mark.timeout(30)  # without the replacement the traffic waits for acknowledgements for 600 s
def test_a_stuck_client_is_replaced_and_only_what_the_cluster_lacks_is_re_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    _deposits, commands = seeded_flow("resend", 12)
    stuck, fresh = _Client(stuck=True), _Client(stuck=False)
    clients = [stuck, fresh]
    monkeypatch.setattr(Traffic, "_connect", lambda _self, _bootstrap: clients.pop(0))
    traffic = Traffic("cluster:9092", commands[:6], batch=6, every_s=0.0, resend_after_s=0.3)
    on_the_cluster = Counter(traffic.values[i] for i in (0, 1, 3))  # written, but the stuck client never heard so
    monkeypatch.setattr(
        "devtools.drills.traffic.missing_on",
        lambda _bootstrap, values, sent, _since_ms: unmatched(values, sent, on_the_cluster),
    )
    traffic.run()
    assert traffic.error is None and traffic.resends == 1
    assert stuck.sent == traffic.values
    assert fresh.sent == [traffic.values[i] for i in (2, 4, 5)]  # what the cluster lacked, in send order
    assert all(traffic.acked_s) and traffic.lost_acked_s == {}


def _stuck_then_fresh(monkeypatch: pytest.MonkeyPatch, clients: list[_Client]) -> Traffic:
    _deposits, commands = seeded_flow("resend", 12)
    monkeypatch.setattr(Traffic, "_connect", lambda _self, _bootstrap: clients.pop(0))
    monkeypatch.setattr("devtools.drills.traffic.RECHECK_AFTER_S", 0.1)
    return Traffic("cluster:9092", commands[:6], batch=6, every_s=0.0, resend_after_s=0.3)


@pytest.mark.timeout(30)
def test_a_cluster_that_cannot_say_yet_what_it_has_is_asked_again_before_anything_is_re_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck, asked_too_soon, fresh = _Client(stuck=True), _Client(stuck=False), _Client(stuck=False)
    traffic = _stuck_then_fresh(monkeypatch, [stuck, asked_too_soon, fresh])
    on_the_cluster = Counter(traffic.values[i] for i in (0, 1, 3))
    catching_up = KafkaException(KafkaError(KafkaError.OFFSET_NOT_AVAILABLE, "high watermark is not caught up"))
    answers: list[Any] = [catching_up, on_the_cluster]

    def missing_on(_bootstrap: str, values: list[bytes], sent: list[int], _since_ms: int) -> list[int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return unmatched(values, sent, answer)

    monkeypatch.setattr("devtools.drills.traffic.missing_on", missing_on)
    traffic.run()
    assert traffic.error is None and traffic.resends == 2 and sum(traffic.check_errors.values()) == 1
    assert asked_too_soon.sent == []  # nothing sent while what the cluster has was unknown
    assert fresh.sent == [traffic.values[i] for i in (2, 4, 5)]
    assert all(traffic.acked_s) and traffic.lost_acked_s == {}


@pytest.mark.timeout(30)
def test_a_cluster_refusing_the_check_for_good_fails_the_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = _stuck_then_fresh(monkeypatch, [_Client(stuck=True), _Client(stuck=False)])
    denied = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not authorised"))

    def missing_on(*_args: object) -> list[int]:
        raise denied

    monkeypatch.setattr("devtools.drills.traffic.missing_on", missing_on)
    traffic.run()
    assert traffic.error is denied and not all(traffic.acked_s)
