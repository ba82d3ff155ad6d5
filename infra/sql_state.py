"""The SQL of the workers' local state files (SQLite), kept in ``sql/state/``: one file per store, each statement
under a ``-- name: <name>`` line, loaded by name."""

from __future__ import annotations

from pathlib import Path

STATE_SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "state"


def load_statements(file_name: str) -> dict[str, str]:
    """The statements of ``sql/state/<file_name>`` by the name on their ``-- name:`` line."""
    statements: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*(STATE_SQL_DIR / file_name).read_text(encoding="utf-8").splitlines(), "-- name: <end>"]:
        if line.startswith("-- name:"):
            if name is not None:
                statements[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name is not None:
            lines.append(line)
    return statements
