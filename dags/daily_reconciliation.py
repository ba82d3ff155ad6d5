"""Daily settlement reconciliation (spec §6.1): snapshot 01:00, provider sync 02:00, variance 03:00,
exception review 04:00, report 05:00 UTC.

The run for logical date D+1 reconciles day D. Each step waits for its slot on the timeline (a sensor that
is already satisfied when the DAG runs late or is back-filled), then calls one function in
``warehouse.pipeline``; all the work is there, idempotent per recon day. A critical data-quality failure
fails the ``data_quality`` task without retries (an alert is posted), so variance, review and report do not
run and no report goes out.

The exception review task then sends what the review and the day's CLI actions queued (``warehouse.outbox``): each
action's audit record to audit.records, each ledger correction's LEDGER_CORRECTION request to governance.requests;
the review itself first closes the corrections governance decided (governance.multisig). What the broker does not
acknowledge stays queued for the next run or ``python -m warehouse.cli exceptions publish`` (the task's XCom says
how many), and never holds the report back.

The steps run in the platform's own environment, with ``@task.external_python``: the snapshot reads Kafka
with confluent-kafka and decodes with the contracts, exactly as the services that wrote the records, and
Airflow's environment (.venv-airflow, kept apart for its own pins) only schedules. The interpreter is the
Airflow Variable ``nexus_platform_python`` (or the environment's ``AIRFLOW_VAR_NEXUS_PLATFORM_PYTHON``),
by default this repository's ``.venv/bin/python``.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

DAG_ID = "daily_reconciliation"
DEFAULT_ARGS = {"owner": "settlement-ops", "retries": 2, "retry_delay": timedelta(minutes=5)}
# Not resolved: a virtualenv's python is a symlink, and only the link's path selects the virtualenv.
DEFAULT_PLATFORM_PYTHON = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python")
PLATFORM_PYTHON = "{{ var.value.get('nexus_platform_python', '" + DEFAULT_PLATFORM_PYTHON + "') }}"


def _slot_reached(context: dict[str, Any], hour: int) -> bool:
    from warehouse.settings import get_recon_settings, recon_day_for

    if not get_recon_settings().wait_for_schedule:
        return True
    day = recon_day_for(context["logical_date"])
    return datetime.now(UTC) >= datetime.combine(day + timedelta(days=1), time(hour), UTC)


def _step(name: str, then: str | None = None, **task_args: Any) -> Any:
    """A task (id ``name``) that runs the pipeline step of that name in the platform's interpreter, and then the
    step ``then`` if given (its result under its name)."""

    @task.external_python(task_id=name, python=PLATFORM_PYTHON, expect_airflow=False, **task_args)
    def run_step(step_name: str, ts: str, then: str | None) -> dict[str, Any]:
        # Runs in the platform's interpreter from this function's source alone: everything is imported here.
        # ``ts``: the run's logical date (ISO 8601), from the task context.
        from datetime import datetime

        from warehouse import pipeline

        day = pipeline.recon_day_for(datetime.fromisoformat(ts))
        result: dict[str, Any] = getattr(pipeline, step_name)(day)
        if then is not None:
            result[then] = getattr(pipeline, then)(day)
        return result

    return run_step(step_name=name, then=then)


def _wait_for(hour: int) -> Any:
    """A sensor that passes once the recon day's ``hour``:00 slot (UTC, the next day) has come."""

    @task.sensor(task_id=f"wait_for_{hour:02d}00", poke_interval=300, timeout=8 * 3600, mode="reschedule")
    def wait(**context: Any) -> bool:
        return _slot_reached(context, hour)

    return wait()


@dag(
    dag_id=DAG_ID,
    schedule="0 1 * * *",
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["reconciliation", "finance"],
    doc_md=__doc__,
)
def daily_reconciliation() -> None:
    (
        _step("snapshot")
        >> _wait_for(2)
        >> _step("provider_sync")
        # A critical failure is not retried into an alert storm.
        >> _step("data_quality", retries=0)
        >> _wait_for(3)
        >> _step("variance")
        >> _wait_for(4)
        >> _step("exception_review", then="publish_outbox")
        >> _wait_for(5)
        >> _step("report")
    )


daily_reconciliation()
