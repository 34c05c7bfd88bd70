"""``/metrics`` (Prometheus text format) and ``/healthz`` on a loopback port.

Each long-running process (correlator, following connectors) defines its own
counters in the default prometheus_client registry and calls
:func:`serve_metrics` once. ``/healthz`` answers 200 while ``health()`` is
true and 503 otherwise, so an orchestrator can restart a stuck process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger

log = get_logger(__name__)


class MetricsServer:
    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread):
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    host: str = "127.0.0.1", port: int = 0, health: Callable[[], bool] = lambda: True
) -> MetricsServer:
    """Start the endpoint in a daemon thread; ``port=0`` picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                body = generate_latest(REGISTRY)
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = False
                try:
                    ok = bool(health())
                except Exception:  # a failing probe is an unhealthy process
                    ok = False
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the logs

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        from zonewatch.preflight import check_port_free

        check_port_free(host, port, "/metrics", "metrics port")  # names the cause
        raise ConfigError(f"cannot serve /metrics on {host}:{port}: {exc}") from exc
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("metrics_listening", address=f"{host}:{server.server_address[1]}")
    return MetricsServer(server, thread)
