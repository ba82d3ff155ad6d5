"""Process and port helpers shared by the local launchers (Kafka, Alertmanager, provider simulator, demo).

``ManagedProcess`` is the one launcher they build on: start with a bounded readiness wait, stop with SIGTERM
then SIGKILL, pid file, log file, and an "is it ours" check so only our own processes are ever signalled.
``DataDirFiles`` and ``DataPath`` name the files a launcher keeps under its data dir.
Linux-first (/proc), with a fallback to kill(0) where /proc is missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload


def cmdline(pid: int) -> list[str]:
    """The process's argv ([] if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listener could bind the port now (SO_REUSEADDR, so TIME_WAIT is not 'busy')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on the port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cmdline_matches(pid: int, predicate: Callable[[list[str]], bool]) -> bool:
    """True if ``pid``'s argv satisfies ``predicate``; without /proc there is nothing to read, so trust the pid file."""
    args = cmdline(pid)
    if not args:
        return not Path("/proc").is_dir()
    return predicate(args)


def tail_file(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a (possibly large) log file; "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the whole process group when ``pid`` leads one (we start servers that way), else just ``pid``."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


class ManagedProcess:
    """One detached local server of ours: its own process group, a pid file, a log file, a readiness check.

    The process outlives the Python process that started it, so ``pid`` and ``stop`` work from any process:
    the pid file names it and ``is_ours`` (usually a ``cmdline_matches`` check) makes sure a reused pid of an
    unrelated process is never signalled. ``error`` is the exception type the owning launcher raises.
    """

    def __init__(
        self,
        name: str,
        pid_file: Path,
        log_file: Path,
        is_ours: Callable[[int], bool],
        error: type[Exception] = RuntimeError,
    ) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file
        self.is_ours = is_ours
        self.error = error
        self.proc: subprocess.Popen[bytes] | None = None

    # -- state

    def pid_from_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def pid(self) -> int | None:
        """The live process: the one this object started, else the pid file's if it is still ours."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        pid = self.pid_from_file()
        return pid if pid is not None and pid_alive(pid) and self.is_ours(pid) else None

    def exited(self, pid: int) -> bool:
        if self.proc is not None and self.proc.pid == pid:
            return self.proc.poll() is not None
        return not pid_alive(pid)

    def log_tail(self, lines: int = 30) -> str:
        return tail_file(self.log_file, lines) or f"(no output in {self.log_file})"

    # -- lifecycle

    def spawn(
        self,
        cmd: Sequence[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> int:
        """Start ``cmd`` in a new session (stdout and stderr appended to the log) and record its pid."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        self.pid_file.write_text(f"{self.proc.pid}\n")
        return self.proc.pid

    def wait_ready(
        self,
        pid: int,
        ready: Callable[[float], bool],
        deadline: float,
        diagnostics: Callable[[], str] | None = None,
        hint: str = "",
    ) -> None:
        """Poll ``ready(seconds left)`` until it holds; raise ``error`` if the process exits or time runs out."""
        diagnostics = diagnostics or self.log_tail
        while True:
            if self.exited(pid):
                code = self.proc.returncode if self.proc is not None and self.proc.pid == pid else None
                with_code = f" with code {code}" if code is not None else ""
                raise self.error(f"{self.name} (pid {pid}) exited during startup{with_code}.\n{diagnostics()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(f"{self.name} (pid {pid}) was not ready in time. {hint}\n{diagnostics()}")
            if ready(remaining):
                return
            time.sleep(0.05)

    def start(
        self,
        cmd: Sequence[str],
        ready: Callable[[float], bool],
        timeout_s: float,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
        diagnostics: Callable[[], str] | None = None,
        hint: str = "",
    ) -> float:
        """Spawn, wait until ready (bounded), and return the seconds taken; a failed start stops what it started."""
        t0 = time.monotonic()
        pid = self.spawn(cmd, cwd, env, preexec_fn)
        try:
            self.wait_ready(pid, ready, t0 + timeout_s, diagnostics, hint)
        except BaseException:
            self.stop(pid=pid)
            raise
        return time.monotonic() - t0

    def stop(self, timeout_s: float = 10.0, pid: int | None = None, kill_wait_s: float = 10.0) -> bool:
        """SIGTERM the group, SIGKILL it after ``timeout_s``; False if nothing ran. The pid file goes either way."""
        pid = pid if pid is not None else self.pid
        try:
            if pid is None:
                return False
            signal_group(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout_s):
                print(f"{self.name} pid {pid} did not stop within {timeout_s:.0f}s; killing it.", file=sys.stderr)
                signal_group(pid, signal.SIGKILL)
                if not self._wait_gone(pid, kill_wait_s):
                    raise self.error(f"{self.name} pid {pid} survived SIGKILL; check it: ps -o pid,stat,cmd {pid}")
            return True
        finally:
            self.pid_file.unlink(missing_ok=True)
            if self.proc is not None and self.proc.poll() is not None:
                self.proc = None

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        if self.proc is not None and self.proc.pid == pid:
            try:
                self.proc.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)


class DataDirFiles:
    """For launchers whose files all live under one ``data_dir`` (resolved in their ``__post_init__``)."""

    data_dir: Path | None

    @property
    def dir(self) -> Path:
        assert self.data_dir is not None  # set in __post_init__
        return self.data_dir


class DataPath:
    """A read-only path attribute: ``name`` under the owner's ``dir``, or under another of its path attributes.

    A launcher declares its files as a table of these instead of one property each::

        pid_file = DataPath("broker.pid")
        server_log = DataPath("server.log", under="logs_dir")
    """

    def __init__(self, name: str, under: str = "dir") -> None:
        self.name = name
        self.under = under

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> DataPath: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Path: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Path | DataPath:
        if obj is None:
            return self
        base: Path = getattr(obj, self.under)
        return base / self.name

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"{self.name!r} is derived from {self.under!r}; it cannot be set")
