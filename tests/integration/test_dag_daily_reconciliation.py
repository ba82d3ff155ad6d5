"""The Airflow DAG: integrity (DagBag) and real `airflow dags test` runs against a SQLite metadata DB.

Airflow lives in .venv-airflow, so both run there as subprocesses; the steps run in the platform's interpreter
(``@task.external_python``), the snapshot reads a real broker, the SMTP server is a real local aiosmtpd.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.recon_fixtures import seed, smtp_server, table_digests
from tests.integration.recon_kafka import backdated_broker, event_rows, produce
from warehouse.airflow_dev import AIRFLOW_VENV, DAG_ID, REPO, airflow_env, dags_test, last_run_state, migrate
from warehouse.db import connect

pytestmark = pytest.mark.skipif(not (AIRFLOW_VENV / "bin" / "airflow").exists(), reason="no .venv-airflow")

INTEGRITY = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])  # examples are off via AIRFLOW__CORE__LOAD_EXAMPLES
dag = bag.dags.get("daily_reconciliation")  # parsed from files; get_dag() would consult a metadata DB
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids)}
if dag is not None:
    out.update(
        schedule=getattr(dag.timetable, "_expression", None) or str(dag.schedule), catchup=dag.catchup,
        max_active_runs=dag.max_active_runs,
        tasks={t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                           "type": type(t).__name__} for t in dag.tasks})
print(json.dumps(out))
"""


def test_dag_integrity() -> None:
    env = airflow_env(REPO / ".local" / "airflow" / "dagbag")
    proc = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", INTEGRITY, str(REPO / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["import_errors"] == {}
    assert DAG_ID in info["dag_ids"]
    assert info["schedule"] == "0 1 * * *" and info["catchup"] is False and info["max_active_runs"] == 1
    tasks = info["tasks"]
    chain = [
        "snapshot",
        "wait_for_0200",
        "provider_sync",
        "data_quality",
        "wait_for_0300",
        "variance",
        "wait_for_0400",
        "exception_review",
        "wait_for_0500",
        "report",
    ]
    assert set(tasks) == set(chain)
    steps = {task for task in chain if not task.startswith("wait_for_")}
    assert {tasks[task]["type"] for task in steps} == {"_PythonExternalDecoratedOperator"}
    for upstream, task in itertools.pairwise(chain):
        assert tasks[task]["upstream"] == [upstream], task
    assert tasks["snapshot"]["retries"] == 2 and tasks["variance"]["retries"] == 2
    assert tasks["data_quality"]["retries"] == 0  # a critical DQ failure must not be retried into an alert storm


def _run(date: str, env: dict[str, str]) -> None:
    proc = dags_test(date, env)
    state = last_run_state(env)
    assert proc.returncode == 0 and state == "success", (state, (proc.stdout + proc.stderr)[-6000:])


@pytest.mark.slow
def test_dags_test_reads_kafka_is_idempotent_and_ages_exceptions(tmp_path: Path) -> None:
    period, settings = seed(tmp_path / "recon", days=2, per_day=250, breaks=14, seed_value=21)
    shutil.rmtree(settings.inbox)  # the topics' records are in Kafka only
    airflow_home = REPO / ".local" / "airflow" / "dags-test"
    shutil.rmtree(airflow_home, ignore_errors=True)
    with backdated_broker(tmp_path / "kafka") as bootstrap, smtp_server() as (port, inbox):
        produce(bootstrap, event_rows(period.events))
        env = airflow_env(
            airflow_home,
            {
                "NEXUS_RECON_HOME": str(settings.home),
                "NEXUS_RECON_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "NEXUS_RECON_PROVIDER_SOURCE": "files",  # the seeded statements; no provider APIs here
                "NEXUS_RECON_SMTP_HOST": "127.0.0.1",
                "NEXUS_RECON_SMTP_PORT": str(port),
                "NEXUS_RECON_ALERT_ON_CRITICAL": "false",
            },
        )
        migrate(env)
        d1, d2 = period.days
        _run(d2.isoformat(), env)  # logical date 11-02 reconciles 11-01
        snapshot = _xcom(env, "snapshot")
        assert snapshot["source"] == "kafka" and snapshot["rejected"] == {} and snapshot["late"] == {}
        assert sum(snapshot["landed"].values()) > 250
        first = table_digests(settings.warehouse_path)
        open_after_d1 = _open_ages(settings.warehouse_path)
        assert len(inbox.pdf_attachments()) == 1

        _run(d2.isoformat(), env)  # the same logical date again
        assert table_digests(settings.warehouse_path) == first
        assert len(inbox.pdf_attachments()) == 1  # same PDF bytes: archived, not mailed twice

        _run((d2 + timedelta(days=1)).isoformat(), env)  # the next day: reconciles 11-02
        open_after_d2 = _open_ages(settings.warehouse_path)
    carried = set(open_after_d1) & set(open_after_d2)
    assert carried and all(open_after_d1[k] == 0 and open_after_d2[k] == 1 for k in carried)
    [(name1, pdf1), (name2, pdf2)] = inbox.pdf_attachments()
    assert name1 == f"recon-{d1}.pdf"
    assert name2 == f"recon-{d2}.pdf" and pdf2.startswith(b"%PDF") and pdf1 != pdf2
    assert (settings.archive / f"{d2:%Y}" / f"{d2:%m}" / name2).read_bytes() == pdf2


def _xcom(env: dict[str, str], task_id: str) -> dict[str, Any]:
    """The return value of ``task_id`` in the newest run (the metadata DB keeps it as JSON)."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as con:
        row = con.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value'"
            " ORDER BY dag_run_id DESC LIMIT 1",
            (DAG_ID, task_id),
        ).fetchone()
    assert row is not None, f"no return value of {task_id}"
    value: dict[str, Any] = json.loads(row[0])
    return value


def _open_ages(path: Path) -> dict[str, Any]:
    con = connect(path, read_only=True)
    try:
        return dict(con.execute("SELECT exception_id, age_days FROM recon_exceptions WHERE state = 'open'").fetchall())
    finally:
        con.close()
