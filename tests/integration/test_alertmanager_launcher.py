"""The Alertmanager launcher: start until /-/ready, status, reload, stop (process group gone), CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from infra.alertmanager.launcher import AlertmanagerError, LocalAlertmanager, Timings
from streams.settings import REPO_ROOT, Settings
from tests.integration.alerting_fixtures import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus-alertmanager") is None, reason="prometheus-alertmanager not installed"),
]


def test_start_status_reload_stop(tmp_path: Path) -> None:
    am = LocalAlertmanager(port=free_port(), data_dir=tmp_path / "am", settings=Settings(), timings=Timings.fast())
    took = am.start()
    try:
        assert took < 15
        pid = am.pid
        assert pid is not None and os.getpgid(pid) == pid  # own process group
        status = am.status()
        assert status["ready"] is True and status["url"] == am.url
        assert httpx.get(f"{am.url}/api/v2/status").json()["config"]["original"].startswith("global:")
        with pytest.raises(AlertmanagerError, match="already runs"):
            am.start()
        am.timings = Timings()  # back to the spec's group wait, applied without a restart
        am.reload()
        assert "group_wait: 10s" in httpx.get(f"{am.url}/api/v2/status").json()["config"]["original"]
    finally:
        assert am.stop() is True
    assert not am.pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert am.stop() is False
    assert am.status()["running"] is False


def test_busy_port_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        am = LocalAlertmanager(port=busy.getsockname()[1], data_dir=tmp_path / "am")
        with pytest.raises(AlertmanagerError, match="in use"):
            am.start()


def test_cli_start_status_stop(tmp_path: Path) -> None:
    port = str(free_port())
    env = {**os.environ, "NEXUS_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.alertmanager.launcher", *args, "--port", port, "--fast"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=60,
        )

    started = cli("start")
    try:
        assert started.returncode == 0, started.stderr
        assert f"Alertmanager ready at http://127.0.0.1:{port}" in started.stdout
        assert (tmp_path / "alertmanager" / "alertmanager.yml").exists()
        assert cli("status").returncode == 0
    finally:
        stopped = cli("stop")
    assert stopped.stdout.strip() == "stopped"
    assert cli("status").returncode == 1
