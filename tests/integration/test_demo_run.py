"""Issue 2 acceptance: the run command brings the stack up, shows events flowing, and stops cleanly
(no broker, worker, Alertmanager, simulator or dashboard left behind) — at the end of a run and on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.demo_env import demo_env, read_until_streaming, start_demo

pytestmark = pytest.mark.slow


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _assert_nothing_listens(ports: list[int]) -> None:
    for port in ports:
        assert not _port_open(port), f"something still listens on {port} after the demo stopped"


@pytest.mark.parametrize("runtime", ["faust", "plain"])
def test_demo_streams_events_and_leaves_nothing_running(tmp_path: Path, runtime: str) -> None:
    env, ports = demo_env(tmp_path, "demo-test")
    run = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--duration", "20", "--rate", "200", "--runtime", runtime],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "Kafka broker ready" in out and "Faust worker ready" in out
    assert "→ energy.trades" in out and "→ energy.settlements" in out
    assert "Latest dead letters" in out and "MALFORMED_JSON" in out
    assert "OVERSIZED" in out  # the gzip-compressed 3 MB order: a bounded dead letter, its bytes stored aside
    assert "High-Speed Bridge" in out and "settled" in out
    assert "duplicates answered, marked repeat" in out and "results on disk" in out  # the result index
    assert "answers differing" not in out
    assert "FILLED" in out and "bid kWh" in out  # fill events on energy.orders.events, sizes on energy.prices
    assert "stopped the worker and the broker" in out
    _assert_nothing_listens(ports)
    assert not list((tmp_path / "run").glob("*.pid"))
    if runtime == "plain":
        assert "p2p worker (streams.p2p) ready" in out and "bridge worker (streams.bridge.loop) ready" in out


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the foreground process group: the demo must clean up."""
    env, ports = demo_env(tmp_path, "demo-test")
    demo = start_demo(env)
    seen = read_until_streaming(demo, 180)
    assert "press Ctrl-C to stop" in seen, seen[-3000:]
    time.sleep(5)
    os.killpg(demo.pid, signal.SIGINT)
    out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, out[-3000:]
    assert "stopped the worker and the broker" in out
    _assert_nothing_listens(ports)
