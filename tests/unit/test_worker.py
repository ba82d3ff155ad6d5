"""The Faust worker's composition root: roles picked from NEXUS_AGENTS, each role's agents on the app it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings
from streams.worker import bootstrap, roles_of


def test_roles_default_to_all_and_keep_their_order() -> None:
    assert roles_of("") == ["matching", "settlement", "bridge", "alerting"]
    assert roles_of(" bridge, matching ") == ["matching", "bridge"]


def test_an_unknown_role_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"runs \[.alerting., .bridge., .matching., .settlement.\]; not \[.payouts.\]"):
        roles_of("matching,payouts")


def test_bootstrap_registers_the_agents_of_the_roles_asked_for(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ledger_snapshot_every_s=0, gc_freeze_interval_s=0)
    app = bootstrap(settings, ["matching", "settlement", "bridge"])
    assert sorted(app.agents) == ["nexus.bridge.requests", "nexus.energy.orders", "nexus.ledger.commands"]
    assert sorted(bootstrap(settings, ["matching"]).agents) == ["nexus.energy.orders"]
