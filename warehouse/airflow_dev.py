"""Run the reconciliation DAG locally with a real Airflow (SQLite metadata DB under .local/airflow).

Airflow lives in its own venv (.venv-airflow; croniter conflicts with the platform venv), so this helper
only builds the environment and calls that venv's ``airflow`` CLI; the DAG's steps run in the platform venv
(``@task.external_python``, see dags/daily_reconciliation.py):

    .venv/bin/python -m warehouse.airflow_dev test --date 2026-11-02              # migrate + dags test

``--date`` is the Airflow logical date; the run reconciles the day before it, from the platform's topics on
NEXUS_RECON_KAFKA_BOOTSTRAP_SERVERS (default: the platform's Kafka). Seeded data instead, for a try without a
platform: ``python -m devtools.recon_demo seed --date 2026-11-01`` and NEXUS_RECON_SNAPSHOT_SOURCE=jsonl. The
SMTP server named by NEXUS_RECON_SMTP_HOST/PORT must accept mail (e.g. ``python -m aiosmtpd -n -l 127.0.0.1:8025``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_VENV = REPO / ".venv-airflow"
DEFAULT_HOME = REPO / ".local" / "airflow"
DAG_ID = "daily_reconciliation"


def airflow_env(airflow_home: Path = DEFAULT_HOME, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(Path(airflow_home).resolve()),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "GX_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update(extra or {})
    return env


def airflow_bin() -> Path:
    exe = AIRFLOW_VENV / "bin" / "airflow"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} not found: create the Airflow venv with `make setup` first")
    return exe


def migrate(env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(airflow_bin()), "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout, check=True
    )


def dags_test(logical_date: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``airflow dags test daily_reconciliation <date>``; check=False so callers can show the log."""
    return subprocess.run(
        [str(airflow_bin()), "dags", "test", DAG_ID, logical_date],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_run_state(env: dict[str, str]) -> str | None:
    """State of the newest run of the DAG in the SQLite metadata DB (``dags test`` exits 0 either way)."""
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)).fetchone()
    return None if row is None else str(row[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warehouse.airflow_dev")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("test", help="airflow db migrate + dags test for one logical date")
    t.add_argument("--date", required=True)
    t.add_argument("--airflow-home", type=Path, default=DEFAULT_HOME)
    args = ap.parse_args(argv)
    env = airflow_env(args.airflow_home)
    try:
        migrate(env)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write((exc.stdout or "")[-5000:] + (exc.stderr or "")[-5000:])
        print(f"airflow db migrate failed for AIRFLOW_HOME={env['AIRFLOW_HOME']}", file=sys.stderr)
        return 1
    proc = dags_test(args.date, env)
    sys.stdout.write(proc.stdout[-20_000:])
    sys.stderr.write(proc.stderr[-20_000:])
    ok = proc.returncode == 0 and last_run_state(env) == "success"
    print(f"\ndags test {DAG_ID} {args.date}: {'success' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
