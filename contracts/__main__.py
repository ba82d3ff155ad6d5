"""Regenerate contracts/schemas/*.schema.json from the models: `python -m contracts`."""

from __future__ import annotations

import sys
from pathlib import Path

from contracts.docs import render_readme
from contracts.topics import schema_documents

SCHEMA_DIR = Path(__file__).parent / "schemas"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    documents = schema_documents()
    for stale in SCHEMA_DIR.glob("*.schema.json"):
        if stale.name not in documents:
            stale.unlink()
    for name, text in documents.items():
        (SCHEMA_DIR / name).write_text(text)
    (SCHEMA_DIR.parent / "README.md").write_text(render_readme())
    print(f"wrote {len(documents)} schemas to {SCHEMA_DIR} and contracts/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
