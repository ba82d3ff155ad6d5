"""A small dbt-style runner for the SQL in ``sql/``: DDL, seeds, staging and mart models.

Every model file starts with a header::

    -- model: stg_bridge_settlements
    -- materialized: table            (table | view | macro | script)
    -- grain: one row per bridge request (completed or failed)

and holds one SELECT (``table``/``view``) or complete statements (``macro``/``script``). Two template calls
are understood, both resolved from the topic registry so no SQL file spells a topic name:

    {{ source('BRIDGE_SETTLEMENTS_COMPLETED') }}   -> the landed events of that topic
    {{ topic('AUDIT_RECORDS') }}                   -> the topic name as a SQL string literal
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts import topics as registry

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
LAYERS = ("ddl", "seeds", "staging", "marts")
_HEADER = re.compile(r"^--\s*(model|materialized|grain|columns):\s*(.+)$", re.MULTILINE)
_CALL = re.compile(r"\{\{\s*(source|topic)\('([A-Z_]+)'\)\s*\}\}")


class SqlModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Model:
    path: Path
    name: str
    materialized: str
    grain: str
    sql: str


def _registry_topic(const: str) -> registry.Topic:
    value = getattr(registry, const, None)
    if not isinstance(value, registry.Topic):
        raise SqlModelError(f"{const!r} is not a topic constant in contracts/topics.py")
    return value


def render(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        kind, const = match.groups()
        name = _registry_topic(const).name
        if kind == "topic":
            return f"'{name}'"
        return f"(SELECT * FROM raw_events WHERE topic = '{name}')"

    return _CALL.sub(sub, text)


def split_statements(text: str) -> list[str]:
    """Split on ';' at end of line (our SQL keeps semicolons out of literals)."""
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))
    return [p.strip() for p in re.split(r";\s*(?:\n|$)", text) if p.strip()]


def render_file(relpath: str) -> list[str]:
    return split_statements(render((SQL_DIR / relpath).read_text(encoding="utf-8")))


def parse_model(path: Path) -> Model:
    text = path.read_text(encoding="utf-8")
    header = dict(_HEADER.findall(text))
    if "model" not in header or "materialized" not in header or "grain" not in header:
        raise SqlModelError(f"{path}: needs '-- model:', '-- materialized:' and '-- grain:' header lines")
    return Model(path, header["model"].strip(), header["materialized"].strip(), header["grain"].strip(), render(text))


def models(layer: str) -> list[Model]:
    return [parse_model(p) for p in sorted((SQL_DIR / layer).glob("*.sql"))]


def build_layer(con: Any, layer: str) -> list[str]:
    built = []
    for model in models(layer):
        body = model.sql.strip().rstrip(";")
        try:
            if model.materialized == "table":
                con.execute(f"CREATE OR REPLACE TABLE {model.name} AS {body}")
            elif model.materialized == "view":
                con.execute(f"CREATE OR REPLACE VIEW {model.name} AS {body}")
            elif model.materialized in ("macro", "script"):
                for statement in split_statements(model.sql):
                    con.execute(statement)
            else:
                raise SqlModelError(f"{model.path}: unknown materialization {model.materialized!r}")
        except Exception as exc:
            if isinstance(exc, SqlModelError):
                raise
            raise SqlModelError(
                f"building {model.name} from {model.path.relative_to(SQL_DIR.parent)} failed: {exc}"
            ) from exc
        built.append(model.name)
    return built


def load_seeds(con: Any) -> list[str]:
    """CSV files in sql/seeds/ become tables of the same name (all columns VARCHAR)."""
    names = []
    for path in sorted((SQL_DIR / "seeds").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        cols = ", ".join(f'"{c}" VARCHAR' for c in header)
        con.execute(f"CREATE OR REPLACE TABLE {path.stem} ({cols})")
        if body:
            placeholders = ", ".join("?" for _ in header)
            con.executemany(f"INSERT INTO {path.stem} VALUES ({placeholders})", body)
        names.append(path.stem)
    return names


def init_schema(con: Any) -> None:
    """DDL (idempotent: CREATE ... IF NOT EXISTS) and seeds."""
    build_layer(con, "ddl")
    load_seeds(con)


def build_models(con: Any) -> list[str]:
    """Rebuild staging then marts from what is landed (idempotent)."""
    return build_layer(con, "staging") + build_layer(con, "marts")
