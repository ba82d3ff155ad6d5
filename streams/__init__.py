"""Thin shells around the domain core: the Faust worker, producers, CLIs.

Kept import-free so that `streams.settings` and friends load without Faust
(e.g. inside the Airflow environment).
"""
