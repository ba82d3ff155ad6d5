"""Regenerate the published contract: `python -m contracts` writes contracts/schemas/*.schema.json, the AsyncAPI
document and contracts/README.md from the models; `python -m contracts release` also cuts the released schema set
of the version in contracts/VERSION (contracts/released/<version>/; rerunnable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contracts import asyncapi, compat
from contracts.docs import render_readme
from contracts.topics import schema_documents

HERE = Path(__file__).parent
SCHEMA_DIR = HERE / "schemas"


def generate() -> dict[str, str]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    documents = schema_documents()
    for stale in SCHEMA_DIR.glob("*.schema.json"):
        if stale.name not in documents:
            stale.unlink()
    for name, text in documents.items():
        (SCHEMA_DIR / name).write_text(text)
    (HERE / asyncapi.FILE_NAME).write_text(asyncapi.render())
    (HERE / "README.md").write_text(render_readme())
    print(f"wrote {len(documents)} schemas to {SCHEMA_DIR}, contracts/{asyncapi.FILE_NAME} and contracts/README.md")
    return documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["generate", "release"], default="generate")
    args = parser.parse_args(argv)
    documents = generate()
    if args.command == "release":
        version = compat.contract_version()
        previous = [v for v in compat.released_versions() if v != version]
        if previous and compat.parse_version(previous[-1]) > compat.parse_version(version):
            print(f"contracts/VERSION {version} is older than the released {previous[-1]}", file=sys.stderr)
            return 1
        if previous:
            issues = compat.breaking_changes(
                compat.load_set(compat.RELEASED_DIR / previous[-1]), compat.load_set(SCHEMA_DIR)
            )
            if issues and compat.parse_version(version)[0] == compat.parse_version(previous[-1])[0]:
                print("breaking changes need a new major version:\n  " + "\n  ".join(issues), file=sys.stderr)
                return 1
        target = compat.release(documents, version)
        print(f"released contract {version}: {len(documents)} schemas in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
