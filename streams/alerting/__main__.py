"""``python -m streams.alerting check [RULES_FILE]`` — validate a rules file and print the rules it defines."""

from __future__ import annotations

import sys
from pathlib import Path

from domain.alert_rules import RuleConfigError, load_rules
from streams.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(args[1]) if len(args) > 1 else get_settings().alerting_rules_file
    try:
        config = load_rules(path.read_text())
    except (OSError, RuleConfigError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{path}: {len(config.rules)} rules; evaluated every {config.evaluate_every_s}s, "
        f"re-posted every {config.repost_every_s}s"
    )
    for r in config.rules:
        window = f" over {r.window_text}" if r.window_text else ""
        print(
            f"  {r.name:<18} {r.aggregate}({r.signal}){window} {r.op} {r.threshold_text:<8} "
            f"-> {r.channel} {r.escalation} ({r.severity})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
