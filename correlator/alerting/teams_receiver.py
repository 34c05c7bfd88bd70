"""A local HTTP server that plays a Teams Workflows webhook.

For the demo (to watch alerts arrive) and for tests of the outbox sender.
By default it records every POSTed JSON body and answers 202 like Teams;
it can be scripted to answer 429 (with or without ``Retry-After``), 5xx,
slowly, or to reset the connection after reading the request. Like Teams it
answers 413 to bodies over 28 KB and 400 to a body that is not a message
envelope.

    with TeamsReceiver() as teams:
        teams.script(Reply(429, retry_after="1"), Reply(500))  # then 202s
        ... sender posts to teams.url ...
        teams.wait_for_accepted(3, timeout=5)
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

TEAMS_MAX_BYTES = 28 * 1024


@dataclass(frozen=True)
class Reply:
    status: int = 202
    retry_after: str | None = None
    delay_s: float = 0.0
    reset: bool = False  # read the request, then drop the connection with RST
    body: bytes = b""


@dataclass
class Received:
    path: str
    body: Any
    size: int
    status: int | None  # None when the connection was reset
    at: float = field(default_factory=time.monotonic)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        receiver = self.server.receiver
        reply = receiver._next_reply(self.path, raw)
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if reply.status < 300 and not reply.reset:
            if len(raw) > TEAMS_MAX_BYTES:
                reply = Reply(413, body=b"Request Entity Too Large")
            elif not _is_message(body):
                reply = Reply(400, body=b"Bad payload: expected a message with attachments")
        # Recorded on arrival, as Teams posts a card before it answers: a slow
        # answer the client gave up on still shows up in the channel.
        status = None if reply.reset else reply.status
        receiver._record(Received(self.path, body, len(raw), status))
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        with contextlib.suppress(OSError):  # the client may have given up waiting
            self.send_response(reply.status)
            if reply.retry_after is not None:
                self.send_header("Retry-After", reply.retry_after)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection was reset on purpose
            super().finish()


def _is_message(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    if body.get("@type") == "MessageCard":
        return True
    return body.get("type") == "message" and isinstance(body.get("attachments"), list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: TeamsReceiver


class TeamsReceiver:
    """Records POSTs on ``http://127.0.0.1:<port>/...`` and answers as scripted."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.receiver = self
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._script: deque[Reply] = deque()
        self._handler: Callable[[str, bytes], Reply | None] | None = None
        self.default = Reply(202)
        self.received: list[Received] = []

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def url_for(self, name: str = "default") -> str:
        # Shaped like a Workflows URL, signature and all.
        return (
            f"{self.base_url}/workflows/{name}/triggers/manual/paths/invoke"
            "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=local-test-signature"
        )

    @property
    def url(self) -> str:
        return self.url_for("default")

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order, then the default."""
        with self._cond:
            self._script.extend(replies)

    def set_handler(self, handler: Callable[[str, bytes], Reply | None] | None) -> None:
        """A function (path, body) -> Reply, or None to fall through to the script."""
        self._handler = handler

    def _next_reply(self, path: str, raw: bytes) -> Reply:
        if self._handler is not None:
            reply = self._handler(path, raw)
            if reply is not None:
                return reply
        with self._cond:
            return self._script.popleft() if self._script else self.default

    def _record(self, item: Received) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def accepted(self, path_contains: str = "") -> list[Any]:
        with self._cond:
            return [r.body for r in self.received if r.accepted and path_contains in r.path]

    def wait_for_accepted(self, count: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(r.accepted for r in self.received) >= count, timeout
            )

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` requests arrived, whatever they were answered."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.received) >= count, timeout)

    def start(self) -> TeamsReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="teams-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> TeamsReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
