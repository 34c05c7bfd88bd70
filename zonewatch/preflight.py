"""Start-up checks that fail in seconds with the cause and the fix named.

Run before a command creates anything (a DuckDB file, a topic, a child
process): a port someone else holds, a broker that is down or speaks
another protocol (TLS against a plaintext listener and the reverse), a
store folder the process cannot write. kafka-python on its own retries for
30 s (``bootstrap_timeout_ms``) and then reports a generic timeout, or
hangs in a TLS handshake that never completes.

The broker probe is Kafka's own first request, ApiVersions (v0), sent over
TCP or TLS as the settings say: any Kafka broker answers it before
authentication, so it tells "nothing listens", "something else listens"
and "a Kafka broker listens" apart without credentials.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import struct
from pathlib import Path

from zonewatch.config import KafkaSettings
from zonewatch.errors import BrokerUnavailableError, ConfigError, StoreError

PROBE_TIMEOUT_S = 3.0
_API_VERSIONS = 18
_CORRELATION_ID = 0x7A77  # "zw"


class PortInUseError(ConfigError):
    """A port zonewatch should listen on is taken by another process."""


def _api_versions_request(client_id: bytes = b"zonewatch-probe") -> bytes:
    header = struct.pack(">hhih", _API_VERSIONS, 0, _CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(header)) + header


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the peer closed the connection")
        data += chunk
    return data


def tls_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context kafka-python builds from the same settings."""
    ctx = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    ctx.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile:
        ctx.load_cert_chain(
            str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None
        )
    return ctx


def probe_kafka(
    host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S, tls: ssl.SSLContext | None = None
) -> str | None:
    """None when a Kafka broker answers ApiVersions at host:port; else why not,
    in a few words (``connection refused``, ``no answer within 3s`` ...)."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        return f"no TCP connection within {timeout_s:.0f}s"
    except OSError as exc:
        return exc.strerror.lower() if exc.strerror else type(exc).__name__
    try:
        sock: socket.socket = raw
        if tls is not None:
            try:
                sock = tls.wrap_socket(raw, server_hostname=host)
            except TimeoutError:
                return (
                    f"no TLS handshake within {timeout_s:.0f}s (a plaintext listener does not "
                    "answer one)"
                )
            except (ssl.SSLError, OSError) as exc:
                return f"TLS handshake failed ({getattr(exc, 'reason', None) or exc})"
        sock.sendall(_api_versions_request())
        size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
        if not 6 <= size <= 1 << 20:
            return "something answered, but not in the Kafka protocol"
        (correlation,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if correlation != _CORRELATION_ID:
            return "something answered, but not in the Kafka protocol"
        return None
    except TimeoutError:
        return f"no Kafka answer within {timeout_s:.0f}s"
    except (OSError, struct.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"the connection broke ({reason})"
    finally:
        raw.close()


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    try:
        return host.strip("[]") or "localhost", int(port)
    except ValueError:
        raise ConfigError(
            f"bootstrap server {server!r} is not host:port (KAFKA_BOOTSTRAP_SERVERS)"
        ) from None


def _hint(settings: KafkaSettings, reasons: list[str]) -> str:
    tls = settings.security_protocol.endswith("SSL")
    text = " ".join(reasons)
    if tls and ("TLS" in text or "broke" in text):
        return (
            f"security_protocol is {settings.security_protocol} but the listener does not "
            "speak TLS: point at the broker's TLS port, or set ZONEWATCH_KAFKA__SECURITY_PROTOCOL "
            "to PLAINTEXT or SASL_PLAINTEXT to match the listener"
        )
    if not tls and ("not in the Kafka protocol" in text or "broke" in text):
        # A TLS listener answers plaintext with an alert or hangs up.
        return (
            "if that is a TLS listener, set ZONEWATCH_KAFKA__SECURITY_PROTOCOL to SSL or "
            "SASL_SSL; otherwise the address is not a Kafka broker's (fix KAFKA_BOOTSTRAP_SERVERS)"
        )
    if "refused" in text:
        return (
            "start the broker (`zonewatch broker` for a local one) or fix KAFKA_BOOTSTRAP_SERVERS"
        )
    return "check that the broker runs and that KAFKA_BOOTSTRAP_SERVERS names its listener"


def check_broker(settings: KafkaSettings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`BrokerUnavailableError` unless some bootstrap server
    answers the Kafka protocol with the configured transport (TCP or TLS)."""
    servers = settings.client_kwargs()["bootstrap_servers"]
    tls = tls_context(settings) if settings.security_protocol.endswith("SSL") else None
    reasons: list[str] = []
    for server in servers:
        host, port = _split(server)
        reason = probe_kafka(host, port, timeout_s, tls)
        if reason is None:
            return
        reasons.append(f"{host}:{port}: {reason}")
    raise BrokerUnavailableError(
        f"no Kafka broker answers at {settings.bootstrap_servers} "
        f"({'; '.join(reasons)}): {_hint(settings, reasons)}"
    )


def check_port_free(host: str, port: int, what: str, option: str) -> None:
    """Raise :class:`PortInUseError` when ``host:port`` cannot be bound, naming
    what listens there when it is a Kafka broker."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(
                    f"cannot listen on {host}:{port} for {what}: {host} is not an address of "
                    "this machine"
                ) from exc
            if exc.errno == errno.EACCES:
                raise PortInUseError(
                    f"cannot listen on {host}:{port} for {what}: permission denied (ports below "
                    f"1024 need privileges); choose another {option}"
                ) from exc
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {host}:{port} for {what}: {exc}") from exc
    holder = (
        "a Kafka broker (an earlier `zonewatch broker`?)"
        if probe_kafka(host, port, 1.0) is None
        else "another program"
    )
    raise PortInUseError(
        f"port {port} on {host} is in use by {holder}: choose another {option} "
        "(0 picks a free one) or stop what listens there"
    )


def check_writable(path: Path, what: str) -> None:
    """Raise :class:`StoreError` unless ``path`` can be written (it exists and is
    writable, or its nearest existing folder is), without creating anything."""
    path = Path(path)
    if path.exists():
        if path.is_dir():
            raise StoreError(f"{what} {path} is a folder: give a file path")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"{what} {path} is not readable and writable by this user")
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise StoreError(f"cannot create {what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create {what} {path}: {folder} is not writable by this user")
