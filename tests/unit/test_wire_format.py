"""Confluent-framed values at ingress: a registered schema id of the topic's subject is accepted, anything else is
answered with its own code, plain JSON is untouched; the registry is asked once per id (no registry here: fakes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contracts.topics import ENERGY_ORDERS, PLATFORM_DEADLETTERS
from streams.kafka import wire_format
from streams.kafka.ingress import Origin, Rejected, dead_letter, original_value, validate
from streams.kafka.wire_format import SchemaIds, SchemaRegistryUnavailable, frame, registry_lookup, unwrap
from tests.unit.test_ingress import KEY, raw

ORDERS_ID, PRICES_ID = 7, 8
SUBJECTS = {ORDERS_ID: frozenset({"energy.orders-value"}), PRICES_ID: frozenset({"energy.prices-value"})}


class FakeRegistry:
    """The subjects of each id, and the ids asked (to count lookups)."""

    def __init__(self, subjects: dict[int, frozenset[str]] | None = None) -> None:
        self.subjects = dict(SUBJECTS if subjects is None else subjects)
        self.asked: list[int] = []
        self.down = False

    def __call__(self, schema_id: int) -> frozenset[str]:
        self.asked.append(schema_id)
        if self.down:
            raise SchemaRegistryUnavailable("registry down")
        return self.subjects.get(schema_id, frozenset())


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    """The platform's registry (what NEXUS_SCHEMA_REGISTRY_URL would give ingress), faked."""
    fake = FakeRegistry()
    ids = SchemaIds(fake)
    monkeypatch.setattr(wire_format, "configured_ids", lambda: ids)
    return fake


def test_plain_json_is_untouched(registry: FakeRegistry) -> None:
    assert unwrap("energy.orders", raw(), SchemaIds(registry)) == raw()
    assert not isinstance(validate(ENERGY_ORDERS, KEY, raw()), Rejected)
    assert registry.asked == [], "plain JSON never costs a registry lookup"


def test_a_registered_id_of_the_topics_subject_is_accepted_and_its_json_validated(registry: FakeRegistry) -> None:
    message = validate(ENERGY_ORDERS, KEY, frame(ORDERS_ID, raw()))
    assert not isinstance(message, Rejected)
    assert message.order_id == "o-1" and message.quantity_wh == 1_000
    bad = validate(ENERGY_ORDERS, KEY, frame(ORDERS_ID, raw(quantity_wh="lots")))
    assert isinstance(bad, Rejected) and bad.code == "WRONG_TYPE", "the JSON after the header is validated as usual"


@pytest.mark.parametrize(
    ("schema_id", "fragment"),
    [
        (999, "schema id 999 (Confluent wire format) is not a registered version of subject energy.orders-value"),
        (PRICES_ID, "schema id 8 (Confluent wire format) is not a registered version of subject energy.orders-value"),
    ],
    ids=["unknown id", "id of another topic's subject"],
)
def test_an_id_not_registered_for_the_subject_is_dead_lettered(
    registry: FakeRegistry, schema_id: int, fragment: str
) -> None:
    value = frame(schema_id, raw())
    rejected = validate(ENERGY_ORDERS, KEY, value)
    assert isinstance(rejected, Rejected)
    assert rejected.code == "UNKNOWN_SCHEMA_ID" and fragment in rejected.reason
    letter = dead_letter(Origin("energy.orders", 0, 5), KEY, value, rejected)  # the code is a documented one
    assert PLATFORM_DEADLETTERS.decode(PLATFORM_DEADLETTERS.encode(letter)).reason_code == "UNKNOWN_SCHEMA_ID"
    assert original_value(letter) == value, "the framed bytes are kept whole, ready for replay"


def test_without_a_registry_a_framed_value_is_refused_with_the_reason() -> None:
    refused = unwrap("energy.orders", frame(ORDERS_ID, raw()), None)
    assert isinstance(refused, wire_format.Refused) and refused.code == "UNKNOWN_SCHEMA_ID"
    assert "no schema registry" in refused.reason
    assert wire_format.configured_ids() is None, "the default settings configure no registry"
    rejected = validate(ENERGY_ORDERS, KEY, frame(ORDERS_ID, raw()))
    assert isinstance(rejected, Rejected) and rejected.code == "UNKNOWN_SCHEMA_ID"


def test_a_value_shorter_than_the_header_is_malformed(registry: FakeRegistry) -> None:
    rejected = validate(ENERGY_ORDERS, KEY, b"\x00\x00\x07")
    assert isinstance(rejected, Rejected) and rejected.code == "MALFORMED_JSON"
    assert registry.asked == []


def test_each_id_is_asked_once(registry: FakeRegistry) -> None:
    for _ in range(50):
        validate(ENERGY_ORDERS, KEY, frame(ORDERS_ID, raw()))
        validate(ENERGY_ORDERS, KEY, frame(999, raw()))
    assert sorted(registry.asked) == [ORDERS_ID, 999]


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    fake = FakeRegistry({n: frozenset({"t-value"}) for n in range(10)})
    ids = SchemaIds(fake, max_ids=2)
    for schema_id in (1, 2, 1, 3, 1, 2):  # 3 evicts 2 (1 was used since), then 2 evicts 3
        assert ids.registered(schema_id, "t-value")
    assert fake.asked == [1, 2, 3, 2]


def test_an_id_missing_from_the_subject_is_asked_again_after_the_recheck_period() -> None:
    now = [0.0]
    fake = FakeRegistry({5: frozenset({"a-value"})})
    ids = SchemaIds(fake, recheck_s=60.0, clock=lambda: now[0])
    assert not ids.registered(5, "b-value")
    now[0] = 30.0
    assert not ids.registered(5, "b-value") and fake.asked == [5]
    fake.subjects[5] = frozenset({"a-value", "b-value"})  # the same schema registered for topic b since
    now[0] = 61.0
    assert ids.registered(5, "b-value") and fake.asked == [5, 5]
    assert ids.registered(5, "a-value") and fake.asked == [5, 5], "a member answer is kept without recheck"


def test_a_registry_outage_raises_and_is_not_remembered(registry: FakeRegistry) -> None:
    registry.down = True
    with pytest.raises(SchemaRegistryUnavailable):  # the processor turns it into PROCESSING_ERROR, replayable
        validate(ENERGY_ORDERS, KEY, frame(ORDERS_ID, raw()))
    registry.down = False
    assert not isinstance(validate(ENERGY_ORDERS, KEY, frame(ORDERS_ID, raw())), Rejected)


# ---------------------------------------------------------------------------- the HTTP lookup, on a loopback fake


ROUTES: dict[str, tuple[int, object]] = {
    "/ccompat/schemas/ids/7/versions": (200, [{"subject": "energy.orders-value", "version": 1}]),
    "/ccompat/schemas/ids/999/versions": (404, {"error_code": 40403, "message": "Schema 999 not found."}),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = ROUTES.get(self.path, (404, {"error": "no such path"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_registry_lookup_reads_the_confluent_api(fake_server: str) -> None:
    lookup = registry_lookup(f"{fake_server}/ccompat/")
    assert lookup(7) == frozenset({"energy.orders-value"})
    assert lookup(999) == frozenset(), "40403: the registry does not know the id"
    with pytest.raises(SchemaRegistryUnavailable, match="HTTP 404"):
        registry_lookup(f"{fake_server}/wrong-path")(7)  # a 404 that is not 40403 is a wrong URL, not an answer


def test_registry_lookup_of_an_unreachable_registry_raises() -> None:
    with pytest.raises(SchemaRegistryUnavailable, match="unreachable"):
        registry_lookup("http://127.0.0.1:9", timeout_s=0.5)(7)


def test_frame_is_confluents_header() -> None:
    assert frame(258, b"{}") == b"\x00\x00\x00\x01\x02{}"
