"""The plain loop's role selection: NEXUS_AGENTS picks its inputs as it picks the Faust worker's agents."""

from __future__ import annotations

import pytest

from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS
from streams.plain_loop import inputs_for


def test_roles_pick_inputs() -> None:
    assert inputs_for("") == {ENERGY_ORDERS.name: ENERGY_ORDERS, LEDGER_COMMANDS.name: LEDGER_COMMANDS}
    assert inputs_for("matching") == {ENERGY_ORDERS.name: ENERGY_ORDERS}
    assert inputs_for(" settlement ") == {LEDGER_COMMANDS.name: LEDGER_COMMANDS}


def test_an_agent_the_loop_does_not_run_is_an_error() -> None:
    with pytest.raises(ValueError, match="bridge"):
        inputs_for("matching,bridge")
