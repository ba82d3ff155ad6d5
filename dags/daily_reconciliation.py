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
    @task
    def snapshot(**context: Any) -> dict[str, Any]:
        from warehouse.pipeline import snapshot as run

        return run(_day(context))

    @task.sensor(poke_interval=300, timeout=8 * 3600, mode="reschedule")
    def wait_for_0200(**context: Any) -> bool:
        return _slot_reached(context, 2)

    @task
    def provider_sync(**context: Any) -> dict[str, Any]:
        from warehouse.pipeline import provider_sync as run

        return run(_day(context))

    @task(retries=0)
    def data_quality(**context: Any) -> dict[str, Any]:
        from warehouse.pipeline import data_quality as run
        from warehouse.quality import CriticalDataQualityError

        try:
            return run(_day(context))
        except CriticalDataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task.sensor(poke_interval=300, timeout=8 * 3600, mode="reschedule")
    def wait_for_0300(**context: Any) -> bool:
        return _slot_reached(context, 3)

    @task
    def variance(**context: Any) -> dict[str, Any]:
        from warehouse.pipeline import variance as run

        return run(_day(context))

    @task.sensor(poke_interval=300, timeout=8 * 3600, mode="reschedule")
    def wait_for_0400(**context: Any) -> bool:
        return _slot_reached(context, 4)

    @task
    def exception_review(**context: Any) -> dict[str, Any]:
        from warehouse.pipeline import exception_review as run

        return run(_day(context))

    @task.sensor(poke_interval=300, timeout=8 * 3600, mode="reschedule")
    def wait_for_0500(**context: Any) -> bool:
        return _slot_reached(context, 5)

    @task
    def report(**context: Any) -> dict[str, Any]:
        from warehouse.pipeline import report as run

        return run(_day(context))

    (
        snapshot()
        >> wait_for_0200()
        >> provider_sync()
        >> data_quality()
        >> wait_for_0300()
        >> variance()
        >> wait_for_0400()
        >> exception_review()
        >> wait_for_0500()
        >> report()
    )


daily_reconciliation()
