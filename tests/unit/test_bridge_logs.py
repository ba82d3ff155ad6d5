"""The bridge's log lines name the settlement they are about, and its in-flight count is public (issue 20 item 5).

Every line logged while a payment settles (in the runner's task, in the service's answer) carries the payment's
request id as ``transaction_id`` in the JSON format, also while other payments interleave: ``grep
'"transaction_id": "<id>"'`` follows one settlement. Driven through :meth:`BridgeService.submit` over the fakes of
tests/unit/test_bridge_outcomes.py, with captures answered late (the runner warns on each unanswered send).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from streams.bridge import runner, service
from streams.ops import logs, metrics
from tests.unit.test_bridge_outcomes import Stand, card, until


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the bridge's loggers write in the JSON format (``streams.ops.logs.setup``'s handler)."""
    out = io.StringIO()
    handler = logs.handler("json")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    bridge = logging.getLogger("nexus.bridge")
    level, propagate = bridge.level, bridge.propagate
    bridge.addHandler(handler)
    bridge.setLevel(logging.INFO)
    bridge.propagate = False
    yield out
    bridge.removeHandler(handler)
    bridge.setLevel(level)
    bridge.propagate = propagate


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CAPTURE_BACKOFF_S", (0.01,))
    monkeypatch.setattr(service, "PARKED_RETRY_S", 0.05)


def test_each_settlements_log_lines_carry_its_transaction_id(json_lines: io.StringIO, short_waits: None) -> None:
    ids = ["card-log-a", "card-log-b"]

    async def scenario() -> None:
        stand = Stand()
        for offset, request_id in enumerate(ids):  # two payers: both settle at once, their captures unanswered
            request = card(request_id).model_copy(update={"payer_account_id": f"acct-{request_id}"})
            await stand.submit(request, offset)
        await until(lambda: all(f"BRIDGE-{i}: capture send" in json_lines.getvalue() for i in ids))
        stand.ledger.back()
        await until(lambda: sorted(stand.done) == [0, 1])

    asyncio.run(scenario())
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    unanswered = [line for line in lines if "capture send" in str(line["message"])]
    assert {line["transaction_id"] for line in unanswered} == set(ids), lines
    for line in unanswered:  # each line names its own settlement, never the other one's
        assert str(line["message"]).startswith(f"BRIDGE-{line['transaction_id']}:"), line


def test_the_in_flight_count_is_public_and_reaches_the_gauge(short_waits: None) -> None:
    seen: list[float] = []

    async def scenario() -> None:
        stand = Stand()
        service.watch_metrics(lambda: (stand.service,))
        try:
            assert stand.runner.in_flight_count == 0
            await stand.submit(card("card-in-flight"), 0)
            await until(lambda: stand.ledger.captures_asked >= 1)  # paid, the capture unanswered: in flight
            assert stand.runner.in_flight_count == 1
            metrics.render()
            seen.append(metrics.BRIDGE_IN_FLIGHT._value.get())
            stand.ledger.back()
            await until(lambda: stand.done == [0])
            assert stand.runner.in_flight_count == 0
            metrics.render()
            seen.append(metrics.BRIDGE_IN_FLIGHT._value.get())
        finally:
            metrics.clear_refreshers()

    asyncio.run(scenario())
    assert seen == [1, 0]
