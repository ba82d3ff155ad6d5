"""The auto-payout service's state file: one JSON document, replaced atomically (write, fsync, rename).

It holds everything the service folds from its inputs (the rule book, the balance mirror, holders' contacts,
what was requested and reported) together with the input positions that state is at, so a restart reads on
from exactly there: the state and its offsets are one write, never two. The file holds holders' contact data
(personal): it is created readable by its owner only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("nexus.payouts")

FORMAT = "nexus-x.payouts-service/1"
FILE_NAME = "state.json"


def state_path(data_dir: Path) -> Path:
    return data_dir / "payouts" / FILE_NAME


def save(path: Path, state: dict[str, Any]) -> int:
    """Replace the file with ``state`` (atomically: a crash leaves the old or the new one); returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"format": FORMAT, **state}, separators=(",", ":"), sort_keys=True).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return len(data)


def load(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none (a first start reads every input from its beginning)."""
    path.with_suffix(".tmp").unlink(missing_ok=True)  # a write cut short: the previous file is the state
    if not path.exists():
        return None
    data = json.loads(path.read_bytes())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    del data["format"]
    return dict(data)
