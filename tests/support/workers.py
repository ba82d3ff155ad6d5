"""Run a worker (`python -m streams.worker`, or the plain loop) as a real OS process (so tests can SIGKILL it): one
class for the tests, the drills and the soak, in devtools/drills/worker.py."""

from devtools.drills.worker import READY_MARK, WorkerProcess

__all__ = ["READY_MARK", "WorkerProcess"]
