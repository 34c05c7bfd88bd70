"""Start-up mistakes an operator makes by hand: one line naming the cause and
the fix, the documented exit code, no traceback, no file created, and no
wait longer than the one stated (zonewatch/preflight.py)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT
from zonewatch_cli import run_zonewatch

from zonewatch.app.broker import free_port
from zonewatch.config import KafkaSettings
from zonewatch.errors import BrokerUnavailableError
from zonewatch.preflight import check_broker, probe_kafka


def _zonewatch(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = run_zonewatch(*args, env=env, timeout=90)
    return done, time.monotonic() - started


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert "kafka.net" not in stderr and "ERROR:kafka" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("zonewatch: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


class _Listener:
    """A TCP server that accepts connections and says nothing (not Kafka)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            self._conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture()
def silent_listener() -> Iterator[_Listener]:
    listener = _Listener()
    yield listener
    listener.close()


# -- ports ------------------------------------------------------------------------------


@pytest.mark.integration
def test_broker_on_a_port_another_broker_holds_fails_at_once(kafka_bootstrap: str) -> None:
    port = kafka_bootstrap.rsplit(":", 1)[1]
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs the embedded broker on loopback")
    done, took = _zonewatch("broker", "--port", port)
    assert done.returncode == 78
    line = _one_error_line(done.stderr)
    assert f"port {port} on 127.0.0.1 is in use by a Kafka broker" in line
    assert "choose another --port" in line
    assert done.stdout == ""  # no bootstrap address printed: nothing started
    assert took < 20


def test_broker_on_a_port_another_program_holds_fails_at_once(silent_listener: _Listener) -> None:
    done, took = _zonewatch("broker", "--port", str(silent_listener.port))
    assert done.returncode == 78
    line = _one_error_line(done.stderr)
    assert "in use by another program" in line
    assert took < 20  # not the 30 s of a bootstrap that never answers


@pytest.mark.integration
def test_correlate_with_a_busy_metrics_port_creates_nothing(
    silent_listener: _Listener, kafka_bootstrap: str, tmp_path: Path
) -> None:
    db = tmp_path / "store" / "alerts.duckdb"
    done, _ = _zonewatch(
        "correlate", "--rules", str(ROOT / "rules"), "--db", str(db),
        "--metrics-port", str(silent_listener.port),
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )  # fmt: skip
    assert done.returncode == 78
    line = _one_error_line(done.stderr)
    assert f"port {silent_listener.port}" in line and "--metrics-port" in line
    assert not db.parent.exists()


# -- the broker -------------------------------------------------------------------------


def test_correlate_with_the_broker_down_honours_its_stated_timeout(tmp_path: Path) -> None:
    db = tmp_path / "alerts.duckdb"
    done, took = _zonewatch(
        "correlate", "--rules", str(ROOT / "rules"), "--db", str(db),
        env={
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "ZONEWATCH_KAFKA__CONNECT_TIMEOUT_S": "3",
        },
    )  # fmt: skip
    assert done.returncode == 69
    line = _one_error_line(done.stderr)
    assert "connection refused" in line and "zonewatch broker" in line
    assert "waited 3s" in line
    assert took < 3 + 12  # the wait, plus interpreter and rule loading
    assert not db.exists()


def test_a_tls_client_against_a_plaintext_listener_fails_with_a_hint(
    silent_listener: _Listener, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent_listener.port}",
        "ZONEWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "ZONEWATCH_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "ZONEWATCH_KAFKA__SASL_USERNAME": "zonewatch",
        "ZONEWATCH_KAFKA__SASL_PASSWORD": "not-the-real-one",
        "ZONEWATCH_KAFKA__CONNECT_TIMEOUT_S": "4",
    }
    done, took = _zonewatch(
        "correlate", "--rules", str(ROOT / "rules"), "--db", str(tmp_path / "a.duckdb"), env=env
    )
    assert done.returncode == 69
    line = _one_error_line(done.stderr)
    assert "does not speak TLS" in line and "SASL_PLAINTEXT" in line
    assert "not-the-real-one" not in done.stderr
    assert took < 4 + 12
    log = tmp_path / "fw.log"
    log.write_text("x\n")
    done, took = _zonewatch(
        "ingest", "firewall", "--format", "fortigate", "--file", str(log), env=env
    )
    assert done.returncode == 69
    assert "does not speak TLS" in _one_error_line(done.stderr)
    assert took < 15


@pytest.fixture()
def tls_listener(tmp_path: Path) -> Iterator[_Listener]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = _Listener(tls=ctx)
    yield listener
    listener.close()


def test_a_plaintext_client_against_a_tls_listener_is_told_to_use_tls(
    tls_listener: _Listener,
) -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{tls_listener.port}")
    started = time.monotonic()
    with pytest.raises(
        BrokerUnavailableError, match="set ZONEWATCH_KAFKA__SECURITY_PROTOCOL to SSL"
    ):
        check_broker(settings, timeout_s=2)
    assert time.monotonic() - started < 5


@pytest.mark.integration
def test_the_probe_tells_a_kafka_broker_from_other_listeners(
    kafka_bootstrap: str, silent_listener: _Listener
) -> None:
    host, port = kafka_bootstrap.split(",")[0].rsplit(":", 1)
    assert probe_kafka(host, int(port)) is None
    assert "no Kafka answer" in (probe_kafka("127.0.0.1", silent_listener.port, 0.5) or "")
    assert "refused" in (probe_kafka("127.0.0.1", free_port()) or "")


# -- the store --------------------------------------------------------------------------


@pytest.mark.integration
def test_an_unwritable_store_path_fails_before_anything_is_created(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    done, _ = _zonewatch(
        "correlate", "--rules", str(ROOT / "rules"), "--db", str(blocker / "alerts.duckdb"),
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )  # fmt: skip
    assert done.returncode == 3
    assert "is not a folder" in _one_error_line(done.stderr)
