"""Whether money out is paused: the latest ``governance.pause`` record, followed from the start of the topic.

The governance service writes one :class:`contracts.models.PauseState` per executed PAUSE / UNPAUSE to a compacted
topic keyed by scope, so the latest record is the state; the bridge workers and the auto-payout service follow it
with :class:`streams.kafka.compacted_follower.CompactedFollower`. A tombstone for the scope means no pause; a record
that is not a PauseState is skipped (logged): the previous state stands.

Until the topic has been read up to its end offsets at start, the state is not known: :attr:`PauseListener.paused`
then answers True (fail closed: nothing goes out on a guess); :func:`wait_started` bounds a starting worker's wait.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer

from contracts import models as m
from contracts.topics import Topic
from streams.kafka.compacted_follower import CompactedFollower, wait_started

log = logging.getLogger("nexus.pause")


def _is_pause_state(_key: str, value: Any) -> None:
    if not isinstance(value, m.PauseState):
        raise ValueError(f"not a PauseState: {type(value).__name__}")


class PauseListener(CompactedFollower):
    """Follows ``topic`` (``contracts.topics.GOVERNANCE_PAUSE``); :attr:`paused` is its latest state."""

    def __init__(self, bootstrap: str, topic: Topic, consumer: Consumer | None = None) -> None:
        super().__init__(bootstrap, topic, consumer, check=_is_pause_state, on_change=self._announce)
        self._announced: bool | None = None

    @property
    def paused(self) -> bool:
        """Money out is paused (True too while the state is not known yet: fail closed)."""
        if not self.caught_up.is_set():
            return True
        return _paused(self.values)

    def _announce(self, values: Mapping[str, Any]) -> None:
        """Log a change (and the state reached at start)."""
        now = _paused(values)
        if now == self._announced:
            return
        self._announced = now
        setters = [v for v in values.values() if v.paused == now]
        by = f" by governance request {setters[-1].request_id}" if setters else ""
        reason = f": {setters[-1].reason}" if setters and setters[-1].reason else ""
        log.warning("money out %s%s%s", "PAUSED" if now else "not paused", by, reason)


def _paused(values: Mapping[str, Any]) -> bool:
    return any(state.paused for state in values.values())


__all__ = ["PauseListener", "wait_started"]
