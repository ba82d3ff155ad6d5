"""POST /api/settlement/reconcile through a real Airflow 3 REST API: ``airflow api-server`` from .venv-airflow on a
SQLite metadata DB, the simple auth manager with one user of role op (its password in a file, as the API reads it),
the repository's DAG serialized by ``airflow dags reserialize``. No scheduler runs, so a triggered run stays queued:
what is checked is the API's side (the trigger, its run id and logical date, the run's state read back), not the
DAG's steps (tests/integration/test_dag_daily_reconciliation.py runs those).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.api.auth import Clients
from tests.conftest import free_port
from tests.integration.test_api_e2e import start_api, wait_ready
from tests.support.kafka_io import KafkaIO
from warehouse.airflow_dev import AIRFLOW_VENV, airflow_bin, airflow_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (AIRFLOW_VENV / "bin" / "airflow").exists(), reason="no .venv-airflow"),
]

AIRFLOW_USER = "nexus-api"
AIRFLOW_START_S = 180.0


@dataclass(frozen=True)
class Airflow:
    url: str
    username: str
    password_file: Path

    def token(self) -> str:
        password = json.loads(self.password_file.read_text())[self.username]
        response = httpx.post(f"{self.url}/auth/token", json={"username": self.username, "password": password})
        return str(response.json()["access_token"])


@pytest.fixture(scope="session")
def airflow_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """``airflow api-server`` on a fresh SQLite metadata DB with the DAG serialized (~1 min to start here)."""
    home = tmp_path_factory.mktemp("airflow")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({AIRFLOW_USER: "airflow-test-password"}))
    port = free_port()
    env = airflow_env(
        home,
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:op",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
        },
    )
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([str(airflow_bin()), *command], env=env, capture_output=True, timeout=300, check=True)
    log = (home / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [str(airflow_bin()), "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + AIRFLOW_START_S
        while not _healthy(url):
            assert proc.poll() is None, (home / "api-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "airflow api-server did not start"
            time.sleep(1)
        yield Airflow(url, AIRFLOW_USER, passwords)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def airflow_settings(airflow: Airflow, tmp_path: Path) -> dict[str, str]:
    """The API's settings for this Airflow: the password from a file of its own (as a deployment would mount it)."""
    secret = tmp_path / "airflow-password"
    secret.write_text(json.loads(airflow.password_file.read_text())[airflow.username])
    secret.chmod(0o600)
    return {"api_airflow_url": airflow.url, "api_airflow_username": airflow.username,
            "api_airflow_password_file": str(secret)}  # fmt: skip


def test_reconcile_triggers_the_dag_through_airflows_rest_api(
    kafka: KafkaIO, worker_factory: Any, tmp_path: Path, airflow_api: Airflow
) -> None:
    status_db = tmp_path / "status.sqlite3"
    worker_factory(module="streams.status", status_db_path=str(status_db), status_lag_every_s="0.5")
    clients = Clients(tmp_path / "worker" / "api")
    secrets = {"ops": clients.add("ops", ("operations",)), "cafe": clients.add("cafe", ("merchant",))}
    port = free_port()
    start_api(worker_factory, status_db, port, **airflow_settings(airflow_api, tmp_path))
    url = f"http://127.0.0.1:{port}"
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    with httpx.Client(timeout=30) as http:
        wait_ready(http, url)

        def auth(client_id: str, key: str | None = None) -> dict[str, str]:
            token = http.post(f"{url}/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(client_id, secrets[client_id])).json()["access_token"]  # fmt: skip
            return {"Authorization": f"Bearer {token}"} | ({"Idempotency-Key": key} if key else {})

        started = http.post(f"{url}/api/settlement/reconcile", json={"day": day.isoformat()}, headers=auth("ops", "r1"))
        assert started.status_code == 202, started.text
        run = started.json()
        assert run["day"] == day.isoformat() and run["state"] == "queued" and run["run_id"].startswith("api__")
        assert started.headers["location"] == f"/api/settlement/reconcile/{run['run_id']}"
        read = http.get(f"{url}{started.headers['location']}", headers=auth("ops"))
        assert read.status_code == 200 and read.json()["run_id"] == run["run_id"] and read.json()["day"] == run["day"]

        # Airflow's own view of the run: triggered through its REST API by the API's user, for that day
        theirs = httpx.get(f"{airflow_api.url}/api/v2/dags/daily_reconciliation/dagRuns/{run['run_id']}",
                           headers={"Authorization": f"Bearer {airflow_api.token()}"}).json()  # fmt: skip
        assert (theirs["triggered_by"], theirs["triggering_user_name"]) == ("rest_api", AIRFLOW_USER)
        assert theirs["conf"] == {"recon_day": day.isoformat(), "requested_by": "ops"}

        replay = http.post(f"{url}/api/settlement/reconcile", json={"day": day.isoformat()}, headers=auth("ops", "r1"))
        assert replay.headers["idempotent-replayed"] == "true" and replay.json()["run_id"] == run["run_id"]
        rerun = http.post(f"{url}/api/settlement/reconcile", json={"day": day.isoformat()}, headers=auth("ops", "r2"))
        assert rerun.status_code == 202 and rerun.json()["run_id"] != run["run_id"]  # a day may be reconciled again
        assert rerun.json()["day"] == day.isoformat()

        missing = http.get(f"{url}/api/settlement/reconcile/api__nothing", headers=auth("ops"))
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        refused = http.post(f"{url}/api/settlement/reconcile", json={"day": day.isoformat()},
                            headers=auth("cafe", "r3"))  # fmt: skip
        assert refused.status_code == 403 and refused.json()["code"] == "INSUFFICIENT_SCOPE"
