"""``python -m infra.schema_registry fetch | start | stop | status | register [--port N] [--url URL]``

``start`` also registers every committed schema (``contracts/schemas/<topic>.schema.json`` as ``<topic>-value``);
``register --url`` does that against any Confluent-compatible registry (idempotent).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from infra.schema_registry.registry import (
    APICURIO_VERSION,
    DEFAULT_PORT,
    LocalSchemaRegistry,
    SchemaRegistryError,
    ensure_dist,
    register_schemas,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.schema_registry", description=__doc__)
    parser.add_argument("command", choices=["fetch", "start", "stop", "status", "register"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"API port (default {DEFAULT_PORT})")
    parser.add_argument("--url", default=None, help="register: the registry's Confluent-compatible base URL")
    parser.add_argument("--timeout", type=float, default=60.0, help="start: seconds to wait")
    args = parser.parse_args(argv)
    registry = LocalSchemaRegistry(port=args.port)
    try:
        if args.command == "fetch":
            print(f"Apicurio Registry {APICURIO_VERSION} ready in {ensure_dist()}")
        elif args.command == "start":
            secs = registry.start(timeout_s=args.timeout, reuse=True)
            ids = register_schemas(registry.url)
            print(
                f"schema registry ready at {registry.url} in {secs:.1f}s (pid {registry.pid}); log {registry.log_file}"
            )
            print(f"registered {len(ids)} subjects: " + ", ".join(f"{s}={i}" for s, i in ids.items()))
        elif args.command == "stop":
            print("stopped" if registry.stop() else "not running")
        elif args.command == "status":
            running = registry.pid is not None and registry.is_ready()
            print(f"running at {registry.url} (pid {registry.pid})" if running else "stopped")
            return 0 if running else 3
        else:
            ids = register_schemas(args.url or registry.url)
            print(f"registered {len(ids)} subjects: " + ", ".join(f"{s}={i}" for s, i in ids.items()))
    except SchemaRegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
