"""Post alerts to Prometheus Alertmanager's v2 API (the one delivery path for every alert).

Alertmanager does grouping, routing, repeat and inhibition; we only send the
current state of each alert, identified by its labels (fingerprint included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from contracts.models import Alert, AlertState

TIMEOUT_S = 5.0


def to_alertmanager(alert: Alert, generator_url: str = "http://nexus-x/alerts") -> dict[str, Any]:
    labels = {
        "alertname": alert.rule,
        "severity": str(alert.severity),
        "channel": alert.channel,
        "fingerprint": alert.fingerprint,
        **alert.labels,
    }
    payload: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": alert.summary, **({"value": alert.value} if alert.value else {})},
        "startsAt": alert.starts_at.isoformat(),
        "generatorURL": generator_url,
    }
    if alert.state is AlertState.RESOLVED:
        assert alert.ends_at is not None, "a resolved alert needs ends_at"
        payload["endsAt"] = alert.ends_at.isoformat()
    return payload


def post_alerts(base_url: str, alerts: Sequence[Alert], client: httpx.Client | None = None) -> None:
    """POST /api/v2/alerts; raises httpx.HTTPError with Alertmanager's message on failure."""
    if not alerts:
        return
    body = [to_alertmanager(a) for a in alerts]
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_S)
    try:
        response = http.post(f"{base_url.rstrip('/')}/api/v2/alerts", json=body)
        response.raise_for_status()
    finally:
        if own:
            http.close()
