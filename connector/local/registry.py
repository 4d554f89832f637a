"""A local Apicurio Registry (in-memory storage), for the tests and for trying the wire format.

The app is Maven Central's `io.apicurio:apicurio-registry-app:VERSION:tar.gz:all`, fetched
once by Maven into the cache and unpacked there. It needs Java 21 or newer: the newest JDK
under /usr/lib/jvm (or APICURIO_JAVA_HOME) runs it, and only it; Kafka stays on its own Java.
Its Confluent-compatible API is `url` (`.../apis/ccompat/v7`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Final

import httpx

from connector.errors import BrokerError
from connector.local.broker import (
    DEPENDENCY_PLUGIN,
    _Started,
    default_cache_dir,
    die_with_parent,
    free_port,
    kill_process,
    stop_process,
)

APICURIO_VERSION: Final = "3.3.3"
ARTIFACT: Final = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
JVM_DIR: Final = Path("/usr/lib/jvm")
CCOMPAT: Final = "/apis/ccompat/v7"


def _major(java: Path) -> int:
    probe = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)', probe.stderr + probe.stdout)
    return int(found[1]) if found else 0


def java_executable() -> str:
    """The newest `java` that is 21 or newer: APICURIO_JAVA_HOME's, else one of JVM_DIR's."""
    home = os.environ.get("APICURIO_JAVA_HOME")
    candidates = [Path(home)] if home else sorted(JVM_DIR.glob("*")) if JVM_DIR.is_dir() else []
    found = [(_major(java), str(java)) for java in (c / "bin" / "java" for c in candidates)
             if java.exists()]  # fmt: skip
    if not found or max(found)[0] < 21:
        raise BrokerError(
            "Apicurio Registry needs Java 21 or newer: none under "
            f"{home or JVM_DIR} (set APICURIO_JAVA_HOME)"
        )
    return max(found)[1]


def distribution(cache_dir: Path | None = None) -> Path:
    """The unpacked app (its `quarkus-run.jar`), fetched and unpacked once."""
    cache = (cache_dir or default_cache_dir()) / f"apicurio-{APICURIO_VERSION}"
    app = cache / "app"
    if (app / "quarkus-run.jar").exists():
        return app
    archive = cache / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
    if not archive.exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError("Maven is required to fetch Apicurio Registry")
        fetched = subprocess.run(
            [mvn, "-B", "-q",
             f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy",
             f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={cache}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if fetched.returncode != 0 or not archive.exists():
            tail = (fetched.stdout + fetched.stderr).strip().splitlines()[-5:]
            raise BrokerError(f"Maven could not fetch {ARTIFACT}: " + " | ".join(tail))
    partial = cache / "app.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive) as packed:
        packed.extractall(partial, filter="data")
    partial.replace(app)
    archive.unlink()  # Maven's local repository keeps a copy
    return app


class LocalRegistry(_Started):
    """Apicurio Registry on a free port, in memory; use it as a context manager."""

    def __init__(self, log_dir: Path, cache_dir: Path | None = None, heap: str = "384m") -> None:
        self.log_file = log_dir / "apicurio.log"
        self._cache_dir, self._heap = cache_dir, heap
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API, as NXCLOUD_REGISTRY_URL takes it."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    def start(self, timeout: float = 180.0) -> None:
        app, java = distribution(self._cache_dir), java_executable()
        self.port, management = free_port(), free_port()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                [java, f"-Xmx{self._heap}", "-XX:+UseSerialGC",
                 f"-Dquarkus.http.port={self.port}", "-Dquarkus.http.host=127.0.0.1",
                 f"-Dquarkus.management.port={management}",
                 "-Dquarkus.management.host=127.0.0.1",
                 "-jar", str(app / "quarkus-run.jar")],
                cwd=app, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509
            )  # fmt: skip
        self._await_ready(timeout)

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = f"{self.url}/subjects"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise BrokerError(f"Apicurio Registry exited at start; see {self.log_file}")
            try:
                if httpx.get(health, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise BrokerError(
            f"Apicurio Registry not ready within {timeout:.0f} s; see {self.log_file}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout)

    def kill(self) -> None:
        process, self._process = self._process, None
        kill_process(process)
