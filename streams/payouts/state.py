"""The auto-payout service's state file: one JSON document, replaced atomically (write, fsync, rename).

It holds everything the service folds from its inputs (the rule book, the balance mirror, holders' contacts,
what was requested and reported) together with the input positions that state is at, so a restart reads on
from exactly there: the state and its offsets are one write, never two. The file holds holders' contact data
(personal): it is created readable by its owner only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from infra import files

log = logging.getLogger("nexus.payouts")

FORMAT = "nexus-x.payouts-service/1"
FILE_NAME = "state.json"


def state_path(data_dir: Path) -> Path:
    return data_dir / "payouts" / FILE_NAME


def save(path: Path, state: dict[str, Any]) -> int:
    """Replace the file with ``state`` (atomically, owner-only: it holds contacts); returns its size."""
    return files.save_state(path, FORMAT, state)


def load(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none (a first start reads every input from its beginning)."""
    return files.load_state(path, FORMAT)
