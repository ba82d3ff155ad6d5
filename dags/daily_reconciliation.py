"""Daily settlement reconciliation (spec §6.1): snapshot 01:00, provider sync 02:00, variance 03:00,
exception review 04:00, report 05:00 UTC.

The run for logical date D+1 reconciles day D. Each step waits for its slot on the timeline (a sensor that
is already satisfied when the DAG runs late or is back-filled), then calls one function in
``warehouse.pipeline``; all the work is there, idempotent per recon day. A critical data-quality failure
fails the ``data_quality`` task without retries (an alert is posted), so variance, review and report do not
run and no report goes out.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException

DAG_ID = "daily_reconciliation"
DEFAULT_ARGS = {"owner": "settlement-ops", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _day(context: dict[str, Any]) -> Any:
    from warehouse.pipeline import recon_day_for

    return recon_day_for(context["logical_date"])


def _slot_reached(context: dict[str, Any], hour: int) -> bool:
    from warehouse.settings import get_recon_settings

    if not get_recon_settings().wait_for_schedule:
        return True
    target = datetime.combine(_day(context) + timedelta(days=1), time(hour), UTC)
    return datetime.now(UTC) >= target


def _run(step: str, context: dict[str, Any]) -> dict[str, Any]:
    """Run one ``warehouse.pipeline`` step for the run's recon day; imported here so parsing the DAG stays cheap."""
    from warehouse import pipeline

    result: dict[str, Any] = getattr(pipeline, step)(_day(context))
    return result


def _step(name: str) -> Any:
    """A task (id ``name``) that runs the pipeline step of that name."""

    @task(task_id=name)
    def step(**context: Any) -> dict[str, Any]:
        return _run(name, context)

    return step()


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
    @task(retries=0)
    def data_quality(**context: Any) -> dict[str, Any]:
        from warehouse.quality import CriticalDataQualityError

        try:
            return _run("data_quality", context)
        except CriticalDataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc

    (
        _step("snapshot")
        >> _wait_for(2)
        >> _step("provider_sync")
        >> data_quality()
        >> _wait_for(3)
        >> _step("variance")
        >> _wait_for(4)
        >> _step("exception_review")
        >> _wait_for(5)
        >> _step("report")
    )


daily_reconciliation()
