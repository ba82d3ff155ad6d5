"""Owner-only files written atomically: key material, PINs and the services' state files (which hold personal data).

A crash leaves the old file or the new one, never a part; the directory is fsynced so the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` owner-only (0600) and atomically."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_state(path: Path, fmt: str, state: Mapping[str, Any]) -> int:
    """A service's state as compact JSON tagged with its format, written privately and atomically; its size."""
    data = json.dumps({"format": fmt, **state}, separators=(",", ":"), sort_keys=True).encode()
    write_private(path, data)
    return len(data)


def load_state(path: Path, fmt: str) -> dict[str, Any] | None:
    """The saved state without its format tag, or None when there is none; another format is refused."""
    if not path.exists():
        return None
    data = json.loads(path.read_bytes())
    if data.get("format") != fmt:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {fmt!r}")
    del data["format"]
    return dict(data)
