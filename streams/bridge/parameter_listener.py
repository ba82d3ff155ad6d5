"""The governed platform parameters in force: ``governance.parameters`` followed from the start of the topic.

An executed PARAMETER_CHANGE is published by the governance service as a :class:`contracts.models.ParameterSetting`
on a compacted topic keyed by the parameter's name (``domain.parameters`` lists the names, ranges and defaults).
The bridge workers (cashback rates, ecosystem bonus, slippage limit) and the auto-payout service (the auto-approval
limit) follow it with :class:`streams.kafka.compacted_follower.CompactedFollower`; :attr:`ParameterListener.values_now`
maps each name set to its checked integer value, and a name absent has its default
(``domain.parameters.value_of``). A record that does not validate (an unknown name, a value outside its range, a
name that is not its key) is skipped and logged: the previous value stands. A tombstone restores the default.

Until the topic has been read to its end at start the values are the defaults; :func:`wait_started` bounds a starting
worker's wait (the services wait for it before their first decision, as for the pause).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer

from contracts import models as m
from contracts.topics import Topic
from domain import parameters
from streams.kafka.compacted_follower import CompactedFollower, wait_started

log = logging.getLogger("nexus.parameters")


def check_setting(key: str, value: Any) -> None:
    """A ParameterSetting keyed by its name, a platform parameter, with a value in its range; else ValueError."""
    if not isinstance(value, m.ParameterSetting):
        raise ValueError(f"not a ParameterSetting: {type(value).__name__}")
    if key != value.name:
        raise ValueError(f"a setting of {value.name} under the key {key!r}")
    parameters.parse(value.name, value.value)


class ParameterListener(CompactedFollower):
    """Follows ``topic`` (``contracts.topics.GOVERNANCE_PARAMETERS``); :attr:`values_now` is name -> the value in
    force (absent: its default)."""

    def __init__(self, bootstrap: str, topic: Topic, consumer: Consumer | None = None) -> None:
        super().__init__(bootstrap, topic, consumer, check=check_setting, on_change=self._changed)
        self.values_now: Mapping[str, int] = {}
        self._logged: Mapping[str, int] = {}

    def _changed(self, settings: Mapping[str, Any]) -> None:
        """The records (each checked: :func:`check_setting`) as one new mapping of ints."""
        now = self.values_now = {name: parameters.parse(name, s.value) for name, s in settings.items()}
        for name in sorted(set(now) | set(self._logged)):
            if now.get(name) != self._logged.get(name):
                value = parameters.value_of(now, name)
                origin = "default" if name not in now else f"request {settings[name].request_id}"
                log.warning("parameter %s = %d (%s)", name, value, origin)
        self._logged = now


__all__ = ["ParameterListener", "check_setting", "wait_started"]
