"""NEXUS-X functional core: business rules as plain Python.

Nothing in this package imports Faust, Kafka, Airflow, DuckDB or pydantic; the
shells (``streams/``, ``dags/``, CLIs) decode input, call into here and emit.
"""
