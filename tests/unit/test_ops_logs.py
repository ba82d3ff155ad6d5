"""streams.ops.logs: JSON lines with the transaction id, the same message text as the text format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from streams.ops import logs


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    out = io.StringIO()
    handler = logs.handler("json")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logger = logging.getLogger("nexus.test.ops_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield out, logger
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_has_ts_level_logger_message(captured: tuple[io.StringIO, logging.Logger]) -> None:
    out, log = captured
    log.info('Worker ready (plain loop, %d partitions) — café "quoted"', 3)
    (line,) = lines(out)
    assert line["level"] == "INFO" and line["logger"] == "nexus.test.ops_logs"
    assert line["message"] == 'Worker ready (plain loop, 3 partitions) — café "quoted"'
    assert str(line["ts"]).endswith("+00:00")  # UTC, milliseconds
    assert "transaction_id" not in line
    assert "Worker ready (plain loop" in out.getvalue()  # what tests and the demo search the log for


def test_the_transaction_id_comes_from_the_context_or_the_record(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    out, log = captured
    with logs.transaction("tx-ctx"):
        log.info("hold placed")
        log.info("explicit", extra={"transaction_id": "tx-extra"})  # a record's own id wins
    log.info("after")
    first, second, third = lines(out)
    assert first["transaction_id"] == "tx-ctx"
    assert second["transaction_id"] == "tx-extra"
    assert "transaction_id" not in third


def test_tasks_started_inside_a_transaction_carry_its_id(captured: tuple[io.StringIO, logging.Logger]) -> None:
    out, log = captured

    async def settle() -> None:
        await asyncio.sleep(0)
        log.info("captured")

    async def main() -> None:
        with logs.transaction("tx-task"):
            task = asyncio.create_task(settle())  # the task copies the context when created
        await task

    asyncio.run(main())
    assert lines(out)[0]["transaction_id"] == "tx-task"


def test_exceptions_are_one_line_with_their_traceback(captured: tuple[io.StringIO, logging.Logger]) -> None:
    out, log = captured
    try:
        raise ValueError("bad record")
    except ValueError:
        log.exception("processing failed")
    assert len(out.getvalue().splitlines()) == 1
    (line,) = lines(out)
    assert line["message"] == "processing failed" and "ValueError: bad record" in str(line["exc"])


def test_setup_replaces_the_root_handlers_and_reads_the_format() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        logs.setup(log_format="text")
        logs.setup(log_format="text")
        assert len(root.handlers) == 1
        formatter = root.handlers[0].formatter
        assert formatter is not None and not isinstance(formatter, logs.JsonFormatter)
        logs.setup(log_format="json")
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
