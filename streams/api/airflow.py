"""The reconciliation DAG through Airflow 3's own REST API (``airflow api-server``), not its database or CLI.

Auth: the simple auth manager's ``POST /auth/token`` (a user of role op or admin) gives a JWT, kept until shortly
before it expires and asked again after a 401. A run is triggered with ``POST /api/v2/dags/{dag}/dagRuns``:

- **logical date**: the DAG reconciles the day before its logical date (``warehouse.settings.recon_day_for``), so a
  run for day D has a logical date on D+1. Airflow keeps one run per logical date, and a day may be reconciled
  again (after a fix): the logical date is D+1 at the trigger's own time of day, unique to the microsecond.
- **run id**: ``api__<day>__<digest of the client and its Idempotency-Key>``: the same key names the same run, so a
  retry after the key expired finds the run Airflow already has (409 there) instead of starting a second one.

A run of a paused DAG waits (state ``queued``) until the DAG is unpaused; Airflow creates it paused
(``AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import jwt

from streams.api.problems import ApiProblem
from streams.api.settings import ApiSettings

TOKEN_MARGIN_S = 30.0  # a token is asked again this long before it expires
TOKEN_LIFETIME_GUESS_S = 300.0  # when a token carries no readable exp


def run_id_for(day: date, client_id: str, key: str) -> str:
    digest = hashlib.sha256(f"{client_id}\n{key}".encode()).hexdigest()[:20]
    return f"api__{day.isoformat()}__{digest}"


def logical_date_for(day: date, now: datetime) -> datetime:
    """A moment on the next day (see the module doc): that day at ``now``'s time of day, UTC."""
    return datetime.combine(day + timedelta(days=1), now.astimezone(UTC).timetz())


def day_of(logical_date: str | None) -> date | None:
    if not logical_date:
        return None
    return (datetime.fromisoformat(logical_date).astimezone(UTC) - timedelta(days=1)).date()


def unavailable(detail: str) -> ApiProblem:
    return ApiProblem(503, "AIRFLOW_UNAVAILABLE", detail, headers={"Retry-After": "5"})


class AirflowClient:
    def __init__(self, settings: ApiSettings) -> None:
        self.base_url = settings.airflow_url.rstrip("/")
        self.dag_id = settings.airflow_dag_id
        self.username = settings.airflow_username
        self._password = settings.airflow_secret()
        self._http = httpx.AsyncClient(timeout=settings.airflow_timeout_s) if self.base_url else None
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return self._http is not None and self._password is not None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _bearer(self, renew: bool) -> str:
        async with self._token_lock:
            if renew or self._token is None or time.monotonic() >= self._token_until:
                assert self._http is not None
                response = await self._http.post(
                    f"{self.base_url}/auth/token", json={"username": self.username, "password": self._password}
                )
                if response.status_code not in (200, 201):
                    raise unavailable(f"Airflow refused the API's login ({response.status_code})")
                self._token = str(response.json()["access_token"])
                self._token_until = time.monotonic() + _lifetime_s(self._token) - TOKEN_MARGIN_S
            return self._token

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        if not self.configured or self._http is None:
            raise unavailable("no Airflow is configured (NEXUS_API_AIRFLOW_URL and its password)")
        try:
            for attempt in range(2):
                token = await self._bearer(renew=attempt > 0)
                response = await self._http.request(
                    method, f"{self.base_url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                if response.status_code != 401:
                    return response
            return response
        except httpx.HTTPError as exc:
            raise unavailable(f"Airflow did not answer: {type(exc).__name__}: {exc}") from None

    async def trigger(self, day: date, run_id: str, requested_by: str) -> dict[str, Any]:
        body = {
            "dag_run_id": run_id,
            "logical_date": logical_date_for(day, datetime.now(UTC)).isoformat(),
            "conf": {"recon_day": day.isoformat(), "requested_by": requested_by},
            "note": f"reconciliation of {day.isoformat()} requested through the settlement API by {requested_by}",
        }
        response = await self._call("POST", f"/api/v2/dags/{self.dag_id}/dagRuns", body)
        if response.status_code == 409:  # this key's run exists already (see the module doc)
            return await self.run(run_id)
        return self._run_of(response)

    async def run(self, run_id: str) -> dict[str, Any]:
        response = await self._call("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}")
        if response.status_code == 404:
            raise ApiProblem(404, "NOT_FOUND", f"no reconciliation run {run_id}")
        return self._run_of(response)

    def _run_of(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise ApiProblem(502, "AIRFLOW_REFUSED", f"Airflow answered {response.status_code}: {response.text[:500]}")
        run = response.json()
        return {
            "run_id": run["dag_run_id"],
            "dag_id": run.get("dag_id", self.dag_id),
            "day": _iso(day_of(run.get("logical_date"))),
            "state": run.get("state"),
            "logical_date": run.get("logical_date"),
            "queued_at": run.get("queued_at"),
            "start_date": run.get("start_date"),
            "end_date": run.get("end_date"),
        }


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _lifetime_s(token: str) -> float:
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return TOKEN_LIFETIME_GUESS_S
    return float(exp) - time.time() if isinstance(exp, int | float) else TOKEN_LIFETIME_GUESS_S
