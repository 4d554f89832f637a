"""A real single-node Apache Kafka (KRaft, combined broker and controller) on 127.0.0.1.

Kafka's jars come from Maven Central through the machine's Maven, pinned to one
version and resolved once; the classpath is cached so later starts take seconds.
`KAFKA_HOME` pointing at an official distribution is used instead when set.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from connector.errors import BrokerError
from connector.local.security import Security
from connector.settings import default_state_dir

KAFKA_VERSION: Final = "4.4.0"
SCALA_VERSION: Final = "2.13"
LOG4J_VERSION: Final = "2.24.3"
DEPENDENCY_PLUGIN: Final = "3.8.1"
STARTED: Final = re.compile(r"Kafka Server started")

POM: Final = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>nxcloud-connector</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

# shutdownHook: Kafka logs its own shutdown to the end (log4j's hook would stop the logging
# part-way through it, so a slow shutdown would not say where it waited).
LOG4J2: Final = """status = warn
shutdownHook = disable
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}] %p %m (%c)%n
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d{ISO8601}] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
rootLogger.appenderRef.console.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
logger.started.additivity = false
logger.started.appenderRef.console.ref = console
logger.started.appenderRef.file.ref = file
"""


def default_data_dir() -> Path:
    return default_state_dir() / "kafka"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nxcloud-connector"


def java_executable() -> str:
    """The `java` to use, which must be 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("Java 17 or newer is required to run Kafka: no `java` found")
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', probe.stderr + probe.stdout)
    if not match or int(match.group(1)) < 17:
        raise BrokerError(f"Java 17 or newer is required to run Kafka: {java} is too old")
    return java


def classpath(cache_dir: Path | None = None) -> str:
    """Kafka's classpath: from KAFKA_HOME, from the cache, or resolved once by Maven."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise BrokerError(
                f"KAFKA_HOME={home} is not a Kafka distribution (no libs/kafka_*.jar)"
            )
        return str(libs / "*")
    cache = (cache_dir or default_cache_dir()) / f"kafka-{KAFKA_VERSION}"
    cached = cache / "classpath.txt"
    if cached.exists():
        entries = cached.read_text().strip()
        if entries and all(Path(jar).exists() for jar in entries.split(os.pathsep)):
            return entries
    _resolve_with_maven(cache, cached)
    return cached.read_text().strip()


def _resolve_with_maven(cache: Path, target: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "Maven is required to fetch Kafka's jars (or set KAFKA_HOME to a Kafka distribution)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "pom.xml").write_text(POM)
    with tempfile.NamedTemporaryFile("w", dir=cache, delete=False, suffix=".tmp") as partial:
        partial_path = Path(partial.name)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(cache / "pom.xml"),
            f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:build-classpath",
            f"-Dmdep.outputFile={partial_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not partial_path.read_text().strip():
        partial_path.unlink(missing_ok=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise BrokerError(f"Maven could not fetch Kafka {KAFKA_VERSION}: " + " | ".join(tail))
    partial_path.replace(target)


def free_port() -> int:
    """A port free now and outside the kernel's ephemeral range, so that no outgoing
    connection (a client of the broker started meanwhile) takes it before its server binds.
    Never the same port twice in one process, nor the one after a port handed out (a broker
    given only `port` puts its controller there)."""
    low, high = _ephemeral_range()
    for _ in range(1000):
        port = secrets.choice(range(PORTS_FROM, PORTS_TO))
        if low - 1 <= port <= high or {port, port + 1} & _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.update((port, port + 1))
        return port
    raise BrokerError(f"no free port between {PORTS_FROM} and {PORTS_TO} on 127.0.0.1")


PORTS_FROM: Final = 20000
PORTS_TO: Final = 32000
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 65535


@dataclass(frozen=True)
class BrokerConfig:
    """One combined broker and controller; `voters` and `replication` make it one node of
    a cluster (see `cluster_configs`)."""

    data_dir: Path
    port: int = 9092
    controller_port: int = 0
    heap: str = "512m"
    security: Security | None = None
    node_id: int = 1
    voters: str = ""
    replication: int = 1
    cluster_id: str = ""

    @property
    def bootstrap_servers(self) -> str:
        if self.security is not None:
            return f"127.0.0.1:{self.security.sasl_port}"
        return f"127.0.0.1:{self.port}"

    @property
    def controller(self) -> int:
        return self.controller_port or self.port + 1

    def server_properties(self) -> str:
        replicas = str(self.replication)
        min_isr = str(max(1, self.replication - 1))
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"1@127.0.0.1:{self.controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "1000",
            # A controlled shutdown moves each partition's leadership to another replica
            # first; one node has none, so it only adds metadata writes the broker waits
            # to see committed, bounded by the five-minute shutdown deadline (docs/kafka.md).
            "controlled.shutdown.enable": str(self.replication > 1).lower(),
        }
        if self.security is not None:
            settings |= self.security.properties(self.controller)
        return "".join(f"{key}={value}\n" for key, value in settings.items())


def cluster_configs(
    data_dir: Path, ports: list[int], controller_ports: list[int], heap: str = "512m"
) -> list[BrokerConfig]:
    """A KRaft cluster of len(ports) combined nodes: one controller quorum of all of them,
    internal topics replicated to all (min.insync.replicas one less)."""
    voters = ",".join(
        f"{node}@127.0.0.1:{port}" for node, port in enumerate(controller_ports, start=1)
    )
    cluster_id = _cluster_id()
    return [
        BrokerConfig(
            data_dir / f"node-{node}",
            port,
            controller,
            heap,
            node_id=node,
            voters=voters,
            replication=len(ports),
            cluster_id=cluster_id,
        )
        for node, (port, controller) in enumerate(zip(ports, controller_ports, strict=True), 1)
    ]


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop_process(process: subprocess.Popen[Any] | None, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; False when it had to be killed."""
    if process is None or process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_process(process)
        return False
    return True


def kill_process(process: subprocess.Popen[Any] | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


class _Started(abc.ABC):
    """Started on entering, stopped on leaving, killed if it fails to start."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def kill(self) -> None: ...

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalKafka(_Started):
    """Starts and stops one broker; use it as a context manager."""

    def __init__(self, config: BrokerConfig, cache_dir: Path | None = None) -> None:
        self.config = config
        self._cache_dir = cache_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._java = ""
        self._classpath = ""

    @property
    def bootstrap_servers(self) -> str:
        return self.config.bootstrap_servers

    @property
    def log_file(self) -> Path:
        return self.config.data_dir / "logs" / "server.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def prepare(self) -> None:
        """Check Java, fetch the jars, write the configs and format storage once."""
        self._java = self._java or java_executable()
        self._classpath = self._classpath or classpath(self._cache_dir)
        data = self.config.data_dir
        (data / "logs").mkdir(parents=True, exist_ok=True)
        (data / "server.properties").write_text(self.config.server_properties())
        (data / "log4j2.properties").write_text(LOG4J2)
        security = self.config.security
        if security is not None:
            security.prepare()
        if not (data / "data" / "meta.properties").exists():
            self._run_java(
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                # one "=" form: an id may start with "-"
                f"--cluster-id={self.config.cluster_id or _cluster_id()}",
                "-c",
                str(data / "server.properties"),
                *([] if security is None else security.format_args()),
            )

    def start(self, timeout: float = 180.0) -> None:
        if self.running:
            return
        self._await_started(*self.launch(), timeout)

    def launch(self) -> tuple[Path, int]:
        """Start the process without waiting; returns its console log and where it begins."""
        self.prepare()
        data = self.config.data_dir
        console = data / "logs" / "console.log"
        offset = console.stat().st_size if console.exists() else 0
        with console.open("ab") as output:
            self._process = subprocess.Popen(
                [*self._jvm(), "kafka.Kafka", str(data / "server.properties")],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509
            )
        return console, offset

    def terminate(self) -> None:
        """Ask the broker to stop (SIGTERM) without waiting; `stop` then waits."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> None:
        process, self._process = self._process, None
        if not stop_process(process, timeout):
            raise BrokerError(f"Kafka did not stop within {timeout:.0f} s and was killed")

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        process, self._process = self._process, None
        kill_process(process)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing answers."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGCONT)

    def wait(self) -> int:
        if self._process is None:
            return 0
        return self._process.wait()

    def _jvm(self) -> list[str]:
        data = self.config.data_dir
        return [
            self._java,
            f"-Xmx{self.config.heap}",
            f"-Xms{self.config.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={data / 'logs'}",
            f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}",
            *([] if self.config.security is None else self.config.security.jvm_options()),
            "-cp",
            self._classpath,
        ]

    def _run_java(self, main: str, *args: str) -> None:
        result = subprocess.run(
            [*self._jvm(), main, *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise BrokerError(f"{main} failed: " + " | ".join(tail))

    def await_started(self, console: Path, offset: int, timeout: float = 90.0) -> None:
        self._await_started(console, offset, timeout)

    def _await_started(self, console: Path, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                self._process = None
                raise BrokerError(
                    f"Kafka exited during start-up; see {console}: {_tail(console, offset)}"
                )
            with console.open("rb") as output:
                output.seek(offset)
                if STARTED.search(output.read().decode(errors="replace")):
                    return
            time.sleep(0.1)
        self.kill()
        raise BrokerError(f"Kafka did not start within {timeout:.0f} s; see {console}")


def _tail(path: Path, offset: int) -> str:
    with path.open("rb") as output:
        output.seek(offset)
        lines = output.read().decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-3:]) or "no output"


class LocalCluster(_Started):
    """Several LocalKafka nodes started together (a quorum needs a majority to start)."""

    def __init__(self, configs: list[BrokerConfig], cache_dir: Path | None = None) -> None:
        self.nodes = [LocalKafka(config, cache_dir) for config in configs]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def log_file(self) -> Path:
        return self.nodes[0].log_file

    def node(self, node_id: int) -> LocalKafka:
        return next(n for n in self.nodes if n.config.node_id == node_id)

    def start(self, timeout: float = 180.0) -> None:
        launched = [(node, node.launch()) for node in self.nodes if not node.running]
        for node, (console, offset) in launched:
            node.await_started(console, offset, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """All at once. The last nodes standing have no controller quorum left to grant
        them a controlled shutdown (Kafka then waits for minutes), so whatever is still
        running after `timeout` is killed: a dirty shutdown Kafka recovers from on start."""
        for node in self.nodes:
            node.terminate()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with contextlib.suppress(BrokerError):  # killed: the dirty shutdown above
                node.stop(max(0.1, deadline - time.monotonic()))

    def wait(self) -> int:
        return max(node.wait() for node in self.nodes)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
