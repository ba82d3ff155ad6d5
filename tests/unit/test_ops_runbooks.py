"""Every platform alert carries a runbook_url that resolves to an existing page under docs/runbooks/."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from infra.prometheus.launcher import RUNBOOKS
from infra.prometheus.rules import Tuning, alerts, rule_file
from streams.settings import REPO_ROOT

SECTIONS = ("## What it means", "## How to check", "## What to do")


def runbook_path(url: str) -> Path:
    """The docs/ file a runbook_url names (the default base is the repository's docs/runbooks as a file URL)."""
    return Path(unquote(urlparse(url).path))


def test_every_alert_has_a_runbook_page_with_the_three_sections() -> None:
    rules = json.loads(rule_file(Tuning(), RUNBOOKS.as_uri()))["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {a.name for a in alerts(Tuning())}
    for rule in rules:
        page = runbook_path(rule["annotations"]["runbook_url"])
        assert page.is_file(), f"{rule['alert']}: {page} does not exist"
        assert page.parent == REPO_ROOT / "docs" / "runbooks" and page.stem == rule["alert"]
        text = page.read_text()
        missing = [s for s in SECTIONS if s not in text]
        assert not missing, f"{page.name} lacks {missing}"


def test_a_served_base_url_keeps_the_page_name() -> None:
    rules = json.loads(rule_file(Tuning(), "https://docs.example/runbooks/"))["groups"][0]["rules"]
    urls = {r["annotations"]["runbook_url"] for r in rules}
    assert "https://docs.example/runbooks/NexusWorkerDown.md" in urls
    assert all(u.count("//") == 1 for u in urls)


def test_every_alert_routes_by_the_labels_the_alertmanager_tree_reads() -> None:
    for alert in alerts(Tuning()):
        assert alert.labels["severity"] in ("none", "info", "warning", "critical"), alert.name
        assert alert.labels["channel"] in ("deadmansswitch", "slack", "pagerduty", "email", "sms"), alert.name
