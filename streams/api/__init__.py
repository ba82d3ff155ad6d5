"""The settlement HTTP API of spec §10.B (FastAPI under uvicorn): ``python -m streams.api``; docs/api.md."""
