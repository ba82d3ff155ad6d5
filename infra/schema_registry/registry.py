"""A local schema registry with a Confluent-compatible API: Apicurio Registry, in-memory storage, on loopback.

No Docker: the built Quarkus application (``io.apicurio:apicurio-registry-app:<v>:tar.gz:all``, see ``pom.xml``
beside this file) is fetched once from Maven Central with ``mvn`` and unpacked under
``<repo>/.local/schema_registry/dist``; it runs as ``java -jar quarkus-run.jar`` on a JDK 21 or newer (found on PATH,
in ``NEXUS_SCHEMA_REGISTRY_JAVA``, ``JAVA_HOME`` or ``/usr/lib/jvm``). Storage is H2 in memory: a restart forgets
every schema, so ``start`` registers the committed ones (``register_schemas``; idempotent: the same text keeps its id).

Library use::

    registry = LocalSchemaRegistry(port=19081)
    registry.start()                 # seconds until the ccompat API answered
    register_schemas(registry.url)   # {"energy.orders-value": 1, ...}
    registry.stop()
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.maven import file_lock, pom_hash
from infra.processes import DataDirFiles, DataPath, ManagedProcess, cmdline_matches, port_bindable, tail_file

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
POM = HERE / "pom.xml"
LOCAL_ROOT = REPO_ROOT / ".local" / "schema_registry"
DIST_DIR = LOCAL_ROOT / "dist"
SCHEMA_DIR = REPO_ROOT / "contracts" / "schemas"

#: Must match ``apicurio.version`` in pom.xml (checked by ``ensure_dist``).
APICURIO_VERSION = "3.3.3"
JAVA_MIN_MAJOR = 21  # the application's classes are Java 21 bytecode
DEFAULT_PORT = 19081
CCOMPAT_PATH = "/apis/ccompat/v7"
ENV_JAVA = "NEXUS_SCHEMA_REGISTRY_JAVA"
MARKER_NAME = ".fetched-from-pom.sha256"
#: JVM system property that tags our registry processes, so only they are ever signalled.
PROCESS_TAG = "-Dnexusx.schemaregistry.port="
SCHEMA_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(RuntimeError):
    """Anything that prevents fetching, starting or using the local registry. The message says what to do."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------- distribution


def _dist_ready(dist_dir: Path, pom: Path) -> bool:
    marker = dist_dir / MARKER_NAME
    return marker.is_file() and marker.read_text().strip() == pom_hash(pom) and (dist_dir / "quarkus-run.jar").is_file()


def ensure_dist(dist_dir: Path = DIST_DIR, *, pom: Path = POM, force: bool = False, quiet: bool = False) -> Path:
    """Return ``dist_dir`` holding the unpacked registry (``quarkus-run.jar`` and its libs), fetching it only when
    needed: ``mvn dependency:copy-dependencies`` brings the tar.gz, which is unpacked into a temporary directory
    that replaces ``dist_dir`` when complete. Safe to call from several processes at a time."""
    dist_dir = Path(dist_dir).resolve()
    if not force and _dist_ready(dist_dir, pom):
        return dist_dir
    with file_lock(dist_dir.parent / f".{dist_dir.name}.lock"):
        if not force and _dist_ready(dist_dir, pom):
            return dist_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise SchemaRegistryError("Maven ('mvn') is not on PATH; it fetches the registry from Maven Central once.")
        tmp = dist_dir.with_name(f"{dist_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={tmp / 'download'}"]
        if not quiet:
            _err(f"Fetching Apicurio Registry {APICURIO_VERSION} from Maven Central into {dist_dir} ...")
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        archive = tmp / "download" / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
        if res.returncode != 0 or not archive.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(((res.stdout or "") + (res.stderr or "")).splitlines()[-30:])
            raise SchemaRegistryError(
                f"Maven did not fetch {archive.name} (exit {res.returncode}).\nCommand: {' '.join(cmd)}\n{tail}\n"
                "APICURIO_VERSION in infra/schema_registry/registry.py must match apicurio.version in its pom.xml."
            )
        with tarfile.open(archive) as tar:
            # The "data" filter (no absolute paths, links out or devices) exists from Python 3.11.4 on.
            safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp / "app", **safe)
        (tmp / "app" / MARKER_NAME).write_text(pom_hash(pom) + "\n")
        shutil.rmtree(dist_dir, ignore_errors=True)
        (tmp / "app").rename(dist_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        if not quiet:
            _err(f"Fetched and unpacked in {time.monotonic() - t0:.1f}s.")
        return dist_dir


# ------------------------------------------------------------------------------------------------------------- java


def java_major(java: str) -> int | None:
    """The feature version of ``java`` (17, 21, 25...), or None when it does not run."""
    try:
        res = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', res.stderr + res.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def find_java(minimum: int = JAVA_MIN_MAJOR) -> str:
    """A java of at least ``minimum``: NEXUS_SCHEMA_REGISTRY_JAVA, JAVA_HOME, PATH, then /usr/lib/jvm/*."""
    candidates = [os.environ.get(ENV_JAVA, "")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates.append(shutil.which("java") or "")
    candidates += sorted((str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java")), reverse=True)
    seen: dict[str, int | None] = {}
    for java in dict.fromkeys(c for c in candidates if c):
        seen[java] = major = java_major(java)
        if major is not None and major >= minimum:
            return java
    raise SchemaRegistryError(
        f"Apicurio Registry {APICURIO_VERSION} needs Java {minimum}+; found {seen or 'no java'}. "
        f"Install a JDK {minimum}+ or point {ENV_JAVA} at its bin/java."
    )


# --------------------------------------------------------------------------------------------------------- registry


@dataclass
class LocalSchemaRegistry(DataDirFiles):
    """Apicurio Registry bound to 127.0.0.1 (API on ``port``, Quarkus' management interface on
    ``management_port``, default ``port + 1``), storing in memory. Files in ``data_dir`` (default
    ``<repo>/.local/schema_registry/data-<port>``): ``registry.pid`` and ``registry.log``."""

    port: int = DEFAULT_PORT
    management_port: int | None = None
    data_dir: Path | None = None
    heap_mb: int = 256
    dist_dir: Path = DIST_DIR
    java: str | None = None
    _process: ManagedProcess = field(init=False, repr=False, compare=False)

    pid_file = DataPath("registry.pid")
    log_file = DataPath("registry.log")

    def __post_init__(self) -> None:
        self.management_port = self.management_port or self.port + 1
        self.data_dir = Path(self.data_dir or LOCAL_ROOT / f"data-{self.port}").resolve()
        self.dist_dir = Path(self.dist_dir).resolve()
        self._process = ManagedProcess(
            f"The schema registry on port {self.port}", self.pid_file, self.log_file, self._owns, SchemaRegistryError
        )

    @property
    def url(self) -> str:
        """Base URL of the Confluent-compatible API (what Confluent clients take as `url`)."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def _owns(self, pid: int) -> bool:
        return cmdline_matches(pid, lambda args: f"{PROCESS_TAG}{self.port}" in args)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=timeout_s) as resp:
                return resp.status == 200
        except (OSError, ValueError):
            return False

    def start(self, timeout_s: float = 60.0, *, reuse: bool = False) -> float:
        """Start the registry and wait until its API answers; return the seconds taken (the fetch included).
        With ``reuse=True`` a registry of ours already running on this port is waited for instead."""
        t0 = time.monotonic()
        if self.pid is not None:
            if not reuse:
                raise SchemaRegistryError(f"already running on port {self.port} (pid {self.pid}); stop it first")
            self._process.wait_ready(self.pid, self._answers, t0 + timeout_s, self._diagnostics)
            return time.monotonic() - t0
        for port in (self.port, self.management_port):
            if port is not None and not port_bindable(port):
                raise SchemaRegistryError(f"port {port} is busy; choose other ports (--port)")
        java = self.java or find_java()
        dist = ensure_dist(self.dist_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java, f"-Xmx{self.heap_mb}m", "-XX:TieredStopAtLevel=1",  # C1 only: ready in ~3 s instead of ~7 s
            f"{PROCESS_TAG}{self.port}",
            "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={self.management_port}",
            "-Dquarkus.http.access-log.enabled=false",
            "-jar", str(dist / "quarkus-run.jar"),
        ]  # fmt: skip
        left_s = timeout_s - (time.monotonic() - t0)  # the fetch counts against the timeout too
        self._process.start(cmd, self._answers, left_s, self.dir, diagnostics=self._diagnostics)
        return time.monotonic() - t0

    def _answers(self, remaining_s: float) -> bool:
        return self.is_ready(min(1.0, remaining_s))

    def _diagnostics(self) -> str:
        return tail_file(self.log_file, 30) or f"(no output in {self.log_file})"

    def stop(self, timeout_s: float = 10.0) -> bool:
        return self._process.stop(timeout_s)

    def __enter__(self) -> LocalSchemaRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------------- registration


def committed_schemas(schema_dir: Path = SCHEMA_DIR) -> dict[str, str]:
    """Topic name -> its committed JSON Schema text (``contracts/schemas/<topic>.schema.json``)."""
    return {
        path.name.removesuffix(".schema.json"): path.read_text() for path in sorted(schema_dir.glob("*.schema.json"))
    }


def register_schema(url: str, topic: str, schema: str, timeout_s: float = 10.0) -> int:
    """Register ``schema`` as a JSON Schema version of ``<topic>-value``; return its id (the same for the same text)."""
    subject = urllib.parse.quote(f"{topic}-value", safe="")
    body = json.dumps({"schema": schema, "schemaType": "JSON"}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/subjects/{subject}/versions", data=body, headers={"Content-Type": SCHEMA_CONTENT_TYPE}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return int(json.loads(resp.read())["id"])
    except urllib.error.HTTPError as exc:
        raise SchemaRegistryError(f"registering {topic}-value: HTTP {exc.code} {exc.read()[:300]!r}") from exc
    except OSError as exc:
        raise SchemaRegistryError(f"registering {topic}-value at {url}: {exc}") from exc


def register_schemas(url: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, int]:
    """Register every committed schema under ``<topic>-value``; subject -> schema id."""
    return {
        f"{topic}-value": register_schema(url, topic, text) for topic, text in committed_schemas(schema_dir).items()
    }


__all__ = [
    "APICURIO_VERSION",
    "DEFAULT_PORT",
    "LocalSchemaRegistry",
    "SchemaRegistryError",
    "committed_schemas",
    "ensure_dist",
    "find_java",
    "register_schema",
    "register_schemas",
]
