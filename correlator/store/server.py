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

The server serves any store that has the small :class:`QueryableStore`
surface (``AlertStore`` has it); it does not import the store, and the store
does not know it: ``serve_queries(store)`` starts it and has the store stop it
when it closes.

The server runs at most ``QueryLimits.max_concurrent`` queries, and stops
one whose client goes away. The client follows only an endpoint file and a
socket that are its user's own and private (issue 20).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import select
import socket
import socketserver
import stat
import struct
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson
import pyarrow as pa
import pyarrow.ipc

from correlator.store.limits import QueryCancel, QueryLimits
from zonewatch.errors import QueryError, StoreError, TriageError, ZonewatchError
from zonewatch.logs import get_logger

if TYPE_CHECKING:
    from dataclasses import Field

log = get_logger(__name__)

_MAX_REQUEST = 1 << 20
_UNIX_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS
_RESULT_CHUNK_ROWS = 2048
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer closed its end
_MAX_NOTE = 4000
_MAX_NAME = 200


class TriageRecord(Protocol):
    """One recorded triage change (``alert_store.TriageChange``, a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def changed_at(self) -> datetime: ...


class QueryableStore(Protocol):
    """What the endpoint needs of a store (``AlertStore`` has it)."""

    @property
    def path(self) -> Path: ...

    @property
    def query_limits(self) -> QueryLimits: ...

    def query_arrow(
        self,
        sql: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout_s: float = 30,
        *,
        cancel: QueryCancel | None = None,
    ) -> pa.Table: ...

    def triage(
        self,
        alert_id: str,
        status: str,
        *,
        actor: str,
        via: str,
        note: str | None = None,
        assignee: str | None = None,
    ) -> TriageRecord: ...

    def on_close(self, hook: Callable[[], None]) -> None: ...


def _error_kind(exc: ZonewatchError) -> str:
    if isinstance(exc, StoreError):
        return "store"
    return "triage" if isinstance(exc, TriageError) else "query"


def endpoint_file(db_path: Path | str) -> Path:
    db = Path(db_path)
    return db.with_name(db.name + ".query.json")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    # A client that connects and sends nothing, or stops reading, holds a
    # thread; it gets this long per socket operation.
    timeout = 30

    def handle(self) -> None:
        try:
            line = self.rfile.readline(_MAX_REQUEST)
        except OSError:
            return
        if not self.server.slots.acquire(blocking=False):
            self._send_error(
                "query",
                f"the correlator is already running {self.server.max_concurrent} queries: "
                "try again when one has finished",
            )
            return
        try:
            self._answer(line)
        finally:
            self.server.slots.release()

    def _answer(self, line: bytes) -> None:
        cancel = QueryCancel()
        with self.server.running:
            self.server.active.add(cancel)
        try:
            table = self._run(line, cancel)
        except ZonewatchError as exc:
            if cancel.reason == _GONE:
                log.info("query_cancelled", reason=_GONE)
            else:
                self._send_error(_error_kind(exc), str(exc))
            return
        except Exception as exc:  # a query must never take the endpoint down
            log.error("query_failed", error=f"{type(exc).__name__}: {str(exc)[:300]}")
            self._send_error("query", f"the query failed: {type(exc).__name__}: {exc}")
            return
        finally:
            self.server.done(cancel)
        if isinstance(table, dict):
            with contextlib.suppress(OSError):
                self._send_header(table)
            return
        try:
            self._send_header({"ok": True})
            with pa.ipc.new_stream(self.wfile, table.schema) as writer:
                writer.write_table(table, max_chunksize=_RESULT_CHUNK_ROWS)
        except OSError:
            log.info("query_cancelled", reason="the client went away while reading the result")
        finally:
            del table
            pa.default_memory_pool().release_unused()

    def _run(self, line: bytes, cancel: QueryCancel) -> pa.Table | dict[str, Any]:
        """The answer to one request: a query's table, or a triage change's header."""
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise QueryError("malformed request") from None
        if not isinstance(request, dict):
            raise QueryError("malformed request")
        token = self.server.token
        if token and not secrets.compare_digest(str(request.get("token", "")), token):
            raise QueryError("bad or missing token in the query request")
        if request.get("op") == "triage":  # a write, applied by the store's writer thread
            return {"ok": True, "change": serve_triage(self.server.store, request)}
        params = request.get("params")
        if params is not None and not isinstance(params, dict | list):
            raise QueryError("malformed request: params must be an object or a list")
        with _cancel_when_gone(self.connection, cancel):
            return self.server.store.query_arrow(
                str(request.get("sql", "")), params, request.get("timeout_s", 30), cancel=cancel
            )

    def _send_error(self, kind: str, error: str) -> None:
        # kinds: "query" (refused or failed SQL), "store", "triage" (a refused change)
        with contextlib.suppress(OSError):
            self._send_header({"ok": False, "kind": kind, "error": error})

    def _send_header(self, header: dict[str, Any]) -> None:
        self.wfile.write(orjson.dumps(header) + b"\n")


_GONE = "the client went away"


@contextlib.contextmanager
def _cancel_when_gone(sock: socket.socket, cancel: QueryCancel) -> Iterator[None]:
    """Cancel the query if the client closes its end while it runs: the
    client sends one line, then only reads, so anything readable is its end
    of the stream (or bytes it had no business sending)."""
    wake_r, wake_w = os.pipe()

    def watch() -> None:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR | _POLLRDHUP)
        poller.register(wake_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if wake_r in events:
                return
            try:
                data = sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                cancel.cancel(_GONE)
                return

    watcher = threading.Thread(target=watch, name="zonewatch-query-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        os.write(wake_w, b"x")
        watcher.join()
        os.close(wake_r)
        os.close(wake_w)


class _Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    store: QueryableStore
    token: str | None
    slots: threading.BoundedSemaphore
    max_concurrent: int
    # Queries running now, so that stopping can cancel them and wait: the
    # store's connection cannot close while a cursor works.
    active: set[QueryCancel]
    running: threading.Condition

    def done(self, cancel: QueryCancel) -> None:
        with self.running:
            self.active.discard(cancel)
            self.running.notify_all()

    def cancel_all(self, reason: str, wait_s: float) -> None:
        with self.running:
            for cancel in self.active:
                cancel.cancel(reason)
            self.running.wait_for(lambda: not self.active, wait_s)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr by default.
        log.exception("query_endpoint_error")


class _UnixServer(_Server, socketserver.UnixStreamServer):
    pass


class _TcpServer(_Server, socketserver.TCPServer):
    allow_reuse_address = True


class QueryServer:
    """Serves read-only queries (and triage changes) against an open store."""

    def __init__(
        self,
        store: QueryableStore,
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
            if bind_host not in _LOOPBACK:
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
        server.max_concurrent = store.query_limits.max_concurrent
        server.slots = threading.BoundedSemaphore(server.max_concurrent)
        server.active = set()
        server.running = threading.Condition()
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
        self._server.cancel_all("the correlator is stopping", wait_s=10)
        if self._thread:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.endpoint_path.unlink()
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()


# The server of each open store, so a second serve_queries() returns the first.
_serving: weakref.WeakKeyDictionary[QueryableStore, QueryServer] = weakref.WeakKeyDictionary()


def serve_queries(
    store: QueryableStore,
    socket_path: Path | str | None = None,
    *,
    host: str | None = None,
    port: int = 0,
) -> QueryServer:
    """Start the local query endpoint of ``store`` (once; later calls return
    the running one). The store stops it when it closes, before its
    connection goes."""
    server = _serving.get(store)
    if server is None:
        server = QueryServer(store, socket_path=socket_path, host=host, port=port)
        server.start()
        _serving[store] = server

        def stop() -> None:
            if _serving.pop(store, None) is not None:
                server.stop()

        store.on_close(stop)
    return server


def _text(value: Any, limit: int, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TriageError(f"{what} must be text")
    cleaned = "".join(ch for ch in value if ch.isprintable() or ch in "\n\t").strip()
    if len(cleaned) > limit:
        raise TriageError(f"{what} is longer than {limit} characters")
    return cleaned


def change_as_json(change: TriageRecord) -> dict[str, Any]:
    out = asdict(change)
    out["changed_at"] = change.changed_at.isoformat()
    return out


def serve_triage(store: QueryableStore, request: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint's side: apply one triage request to ``store``."""
    change = store.triage(
        str(request.get("alert_id", "")),
        str(request.get("status", "")),
        actor=_text(request.get("actor"), _MAX_NAME, "actor") or "unknown",
        via=_text(request.get("via"), 20, "via") or "cli",
        note=_text(request.get("note"), _MAX_NOTE, "the note"),
        assignee=_text(request.get("assignee"), _MAX_NAME, "the assignee"),
    )
    return change_as_json(change)


def connect_endpoint(db_path: Path | str) -> tuple[socket.socket, dict[str, Any]] | None:
    """A connection to the endpoint serving ``db_path`` and its advertised
    address (with the token), or None when no correlator serves it. The
    endpoint file must be the user's own and private (``_read_endpoint``)."""
    address = _read_endpoint(endpoint_file(db_path))
    if address is None:
        return None
    try:
        if "unix" in address:
            sock = _connect_unix(Path(address["unix"]))
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
    # The server checks and caps the timeout; a day is beyond any cap it
    # would set, and it refuses what is not a positive number at once.
    seconds = float(timeout_s)
    sock.settimeout((min(seconds, 86_400.0) if 0 < seconds < math.inf else 0) + 30)
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


def _read_endpoint(path: Path) -> dict[str, Any] | None:
    """The endpoint file's address, if the file is ours and private.

    Whoever can write the file chooses where our SQL (and, over TCP, the
    token) goes and what comes back as the answer, so a file of another
    user, a symlink, or a file others may read or write is refused, not
    followed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if path.is_symlink():
            raise StoreError(
                f"refusing the query endpoint file {path}: it is a symbolic link; the "
                "correlator writes a plain file (remove it, and check who made it)"
            ) from exc
        raise StoreError(f"cannot read the query endpoint file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        _check_private(path, os.fstat(fh.fileno()), "query endpoint file")
        data = fh.read(_MAX_REQUEST)
    try:
        address = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # a partly written file of a correlator that is starting
    valid = isinstance(address, dict) and (
        isinstance(address.get("unix"), str)
        or (address.get("host") in _LOOPBACK and isinstance(address.get("port"), int))
    )
    if not valid:
        raise StoreError(
            f"refusing the query endpoint file {path}: it names no unix socket or loopback "
            "port; remove it (a running correlator writes it again on start)"
        )
    return address


def _connect_unix(path: Path) -> socket.socket:
    """Connect to the correlator's socket after checking that it is ours:
    its owner and mode before connecting, the peer's user after (Linux)."""
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode):
        raise StoreError(f"refusing the query endpoint {path}: it is not a socket")
    _check_private(path, info, "query socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        peer = getattr(socket, "SO_PEERCRED", None)
        if peer is not None:
            _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, peer, 12))
            if uid != os.geteuid():
                raise StoreError(
                    f"refusing the query endpoint {path}: the process serving it runs as "
                    f"uid {uid}, not as you (uid {os.geteuid()})"
                )
    except BaseException:
        sock.close()
        raise
    return sock


def _check_private(path: Path, info: os.stat_result, what: str) -> None:
    me = os.geteuid()
    if info.st_uid != me:
        raise StoreError(
            f"refusing the {what} {path}: it belongs to uid {info.st_uid}, not to you "
            f"(uid {me}); run `zonewatch query` as the user that runs the correlator"
        )
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        raise StoreError(
            f"refusing the {what} {path}: mode {stat.S_IMODE(info.st_mode):04o} lets other "
            "users read or change it; the correlator makes it 0600 (remove it and restart "
            "the correlator)"
        )
