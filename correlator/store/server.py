"""The local query endpoint of a running correlator, and its client.

DuckDB lets one process open the store for writing, so while the correlator
runs, ``zonewatch query`` sends its SQL to the correlator instead of opening
the file. The endpoint listens on a unix socket beside the database
(``<db>.query.sock``, mode 0600, so only the correlator's user can query), or
on a loopback TCP port with a random token when asked or when the socket path
would exceed the OS limit. Either way it is advertised in ``<db>.query.json``
(mode 0600), which the client reads.

Protocol, one query per connection: the client sends one JSON line
``{"sql", "params", "timeout_s", "token"}``; the server answers one JSON line
``{"ok": true}`` followed by the result as an Arrow IPC stream, or
``{"ok": false, "kind": "query"|"store", "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import socketserver
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.ipc

from zonewatch.errors import QueryError, StoreError, TriageError, ZonewatchError
from zonewatch.logs import get_logger

if TYPE_CHECKING:
    from correlator.store.alert_store import AlertStore

log = get_logger(__name__)

_MAX_REQUEST = 1 << 20
_UNIX_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS


def endpoint_file(db_path: Path | str) -> Path:
    db = Path(db_path)
    return db.with_name(db.name + ".query.json")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(_MAX_REQUEST)
        try:
            request = orjson.loads(line)
            if not isinstance(request, dict):
                raise QueryError("malformed request")
            token = self.server.token
            if token and not secrets.compare_digest(str(request.get("token", "")), token):
                raise QueryError("bad or missing token in the query request")
            if request.get("op") == "triage":  # a write, applied by the store's writer thread
                from correlator.store.triage import serve_triage

                self._send_header({"ok": True, "change": serve_triage(self.server.store, request)})
                return
            table = self.server.store.query_arrow(
                str(request.get("sql", "")),
                request.get("params"),
                float(request.get("timeout_s", 30)),
            )
        except ZonewatchError as exc:
            kind = (
                "store"
                if isinstance(exc, StoreError)
                else "triage"
                if isinstance(exc, TriageError)
                else "query"
            )
            self._send_header({"ok": False, "kind": kind, "error": str(exc)})
            return
        except orjson.JSONDecodeError:
            self._send_header({"ok": False, "kind": "query", "error": "malformed request"})
            return
        self._send_header({"ok": True})
        with pa.ipc.new_stream(self.wfile, table.schema) as writer:
            writer.write_table(table)

    def _send_header(self, header: dict[str, Any]) -> None:
        self.wfile.write(orjson.dumps(header) + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    store: AlertStore
    token: str | None


class _UnixServer(_Server, socketserver.UnixStreamServer):
    pass


class _TcpServer(_Server, socketserver.TCPServer):
    allow_reuse_address = True


class QueryServer:
    """Serves read-only queries against an open :class:`AlertStore`."""

    def __init__(
        self,
        store: AlertStore,
        *,
        socket_path: Path | str | None = None,
        host: str | None = None,
        port: int = 0,
    ) -> None:
        self.store = store
        self.endpoint_path = endpoint_file(store.path)
        self._thread: threading.Thread | None = None
        default_sock = store.path.with_name(store.path.name + ".query.sock")
        sock = Path(socket_path) if socket_path else default_sock
        use_tcp = host is not None or len(str(sock.resolve())) > _UNIX_PATH_MAX
        server: _Server
        if use_tcp:
            bind_host = host or "127.0.0.1"
            if bind_host not in ("127.0.0.1", "::1", "localhost"):
                raise StoreError(f"the query endpoint binds to loopback only, not {bind_host}")
            server = _TcpServer((bind_host, port), _Handler)
            server.token = secrets.token_urlsafe(24)
            self.address: dict[str, Any] = {
                "host": bind_host,
                "port": server.server_address[1],
                "token": server.token,
            }
            self.socket_path: Path | None = None
        else:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()  # a stale socket of a killed correlator
            old_umask = os.umask(0o177)
            try:
                server = _UnixServer(str(sock), _Handler)
            finally:
                os.umask(old_umask)
            server.token = None
            self.socket_path = sock
            self.address = {"unix": str(sock.resolve())}
        server.store = store
        self._server = server

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="zonewatch-query",
            daemon=True,
        )
        self._thread.start()
        data = orjson.dumps({**self.address, "pid": os.getpid()})
        fd = os.open(self.endpoint_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        shown = {k: v for k, v in self.address.items() if k != "token"}
        log.info("query_endpoint_started", **shown)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.endpoint_path.unlink()
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()


def connect_endpoint(db_path: Path | str) -> tuple[socket.socket, dict[str, Any]] | None:
    """A connection to the endpoint serving ``db_path`` and its advertised
    address (with the token), or None when no correlator serves it."""
    path = endpoint_file(db_path)
    try:
        address = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    try:
        if "unix" in address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(address["unix"])
        else:
            sock = socket.create_connection((address["host"], int(address["port"])), timeout=5)
    except OSError:
        return None  # stale file of a stopped correlator
    return sock, address


def query_endpoint(
    db_path: Path | str,
    sql: str,
    params: Mapping[str, Any] | Sequence[Any] | None = None,
    timeout_s: float = 30,
) -> pa.Table | None:
    """Run ``sql`` through a running correlator's endpoint.

    Returns None when no correlator serves this store (no endpoint file, or
    nobody listening), so the caller can open the file read-only instead.
    """
    connected = connect_endpoint(db_path)
    if connected is None:
        return None
    sock, address = connected
    sock.settimeout(timeout_s + 30)
    try:
        request = {
            "sql": sql,
            "params": params,
            "timeout_s": timeout_s,
            "token": address.get("token"),
        }
        sock.sendall(orjson.dumps(request, default=str) + b"\n")
        with sock.makefile("rb") as stream:
            header = orjson.loads(stream.readline(_MAX_REQUEST) or b"{}")
            if not header.get("ok"):
                error = header.get("error", "the query endpoint closed the connection")
                if header.get("kind") == "store":
                    raise StoreError(error)
                raise QueryError(error)
            return pa.ipc.open_stream(stream).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"the correlator's query endpoint failed mid-answer: {exc}") from exc
    finally:
        sock.close()
