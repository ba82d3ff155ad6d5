"""Issue 21 item 5: every server the platform starts listens on loopback only in the default configuration.

The demo is the "everything started" scenario: the local Kafka broker (client and controller listeners), the
Faust worker (its web server and, through the alerting agent, the Prometheus metrics endpoint), Alertmanager,
the notification sink (HTTP and SMTP), the dashboard, the payout-provider simulator, the KYC webhook receiver and
simulator, the settlement API (issue 19), Prometheus and the /metrics and /healthz endpoint of every process that
serves one (issue 20 item 5: the Faust worker, payouts, notifier, audit log, governance and status read model, each
on its own port from NEXUS_METRICS_PORT up; the standby's replication monitor on NEXUS_STANDBY_MONITOR_PORT). Once
the demo says it streams, the test lists the listening TCP sockets (``/proc/net/tcp``, ``/proc/net/tcp6``) that
belong to the demo's process tree and asserts each is on 127.0.0.0/8 or ::1. Only the port settings change (free
ports and a private data dir), never an address or the runtime (Faust, the default). The plain runtime's loops
serve only their /metrics (its demo test checks they are scraped); its demo is left out because stopping it alone
takes over a minute here.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.api.settings import ApiSettings
from streams.settings import Settings
from tests.integration.test_demo_run import SCRAPED
from tests.support.demo_env import PORT_SETTINGS, demo_env, read_until_streaming, start_demo

TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    pid: int

    @property
    def loopback(self) -> bool:
        address = self.address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    def describe(self) -> str:
        try:
            cmd = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        return f"{self.address}:{self.port} (pid {self.pid}: {cmd[:160].strip()})"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp* print addresses as 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.IPv4Address(swapped) if len(raw) == 4 else ipaddress.IPv6Address(swapped)


def _listening_inodes() -> dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != TCP_LISTEN:
                continue
            hex_address, hex_port = cols[1].split(":")
            found[cols[9]] = (_address(hex_address), int(hex_port, 16))
    return found


def _process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = {root}
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        if not more:
            return tree
        tree |= more


def listeners_of(root: int) -> list[Listener]:
    """Every listening TCP socket held by ``root`` or one of its descendants."""
    inodes = _listening_inodes()
    found = []
    for pid in _process_tree(root):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = target.removeprefix("socket:[").removesuffix("]")
            if target.startswith("socket:[") and inode in inodes:
                found.append(Listener(*inodes[inode], pid))
    return sorted(set(found), key=lambda x: (x.port, str(x.address)))


@pytest.mark.slow
def test_every_server_the_demo_starts_listens_on_loopback_only(tmp_path: Path) -> None:
    env, ports = demo_env(tmp_path, "listen-test")
    demo = start_demo(env, "--rate", "50")
    try:
        seen = read_until_streaming(demo, 150)
        assert "press Ctrl-C to stop" in seen, seen[-3000:]
        listeners = listeners_of(demo.pid)
        described = {x: x.describe() for x in listeners}  # while the processes still run
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        out, _ = demo.communicate(timeout=120)
    expected = dict(zip(PORT_SETTINGS, ports, strict=True))
    first = expected["METRICS_PORT"]
    expected |= {f"METRICS_PORT+{i}": first + i for i in range(1, len(SCRAPED["faust"]))}
    missing = [name for name, port in expected.items() if port not in {x.port for x in listeners}]
    assert not missing, f"nothing listens on NEXUS_{missing}; the demo's sockets:\n" + "\n".join(described.values())
    exposed = [described[x] for x in listeners if not x.loopback]
    assert not exposed, "listening beyond loopback in the default configuration:\n" + "\n".join(exposed)
    assert demo.returncode == 0, out[-3000:]


def test_every_bind_setting_defaults_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NEXUS_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    hosts = {name: value for name, value in settings.model_dump().items() if name.endswith("_host")}
    assert set(hosts) >= {
        "worker_web_host",
        "metrics_host",
        "dashboard_host",
        "provider_sim_host",
        "alert_sink_host",
        "alertmanager_host",
    }
    assert all(ipaddress.ip_address(value).is_loopback for value in hosts.values()), hosts
    api = ApiSettings(_env_file=None)  # type: ignore[call-arg]
    assert ipaddress.ip_address(api.host).is_loopback, api.host  # the settlement API's own setting
