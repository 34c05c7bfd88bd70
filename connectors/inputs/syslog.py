"""Syslog receiver: UDP datagrams, or TCP with octet-counted or newline framing.

TCP framing follows RFC 6587 per frame: a frame that starts with a digit is
``MSG-LEN SP MSG`` (octet counting), anything else runs to the next LF. The
message itself (RFC 3164 or RFC 5424, with its ``<PRI>``) is handed to the
format's parser unchanged. Syslog cannot be replayed, so there is no
checkpoint; the socket is polled with a short timeout so the pipeline can
commit and notice SIGTERM while the network is quiet.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from connectors.inputs import Record
from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger

log = get_logger(__name__)

MAX_DATAGRAM = 65535


class FrameDecoder:
    """Splits one TCP stream into syslog messages (pure; fed with bytes)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = b""
        self._skip = 0  # bytes of an oversized frame still to discard
        self._skip_newline = False

    def feed(self, data: bytes) -> Iterator[tuple[bytes, int | None]]:
        """(message, full size if cut) for every complete frame in the stream so far."""
        self.buf += data
        while self.buf:
            if self._skip:
                n = min(self._skip, len(self.buf))
                self.buf = self.buf[n:]
                self._skip -= n
                continue
            if self._skip_newline:
                nl = self.buf.find(b"\n")
                if nl < 0:
                    self.buf = b""
                    return
                self.buf = self.buf[nl + 1 :]
                self._skip_newline = False
                continue
            if self.buf[:1].isdigit():
                space = self.buf.find(b" ", 0, 11)
                if space < 0 and len(self.buf) < 11 and self.buf.isdigit():
                    return  # the length prefix may still be arriving
                if space > 0 and self.buf[:space].isdigit():
                    length = int(self.buf[:space])
                    body = space + 1
                    if length > self.limit:
                        have = len(self.buf) - body
                        if have < self.limit:
                            return  # wait for the head to arrive
                        yield self.buf[body : body + self.limit], length
                        consumed = min(have, length)
                        self.buf = self.buf[body + consumed :]
                        self._skip = length - consumed
                        continue
                    if len(self.buf) - body < length:
                        return
                    yield self.buf[body : body + length].rstrip(b"\r\n"), None
                    self.buf = self.buf[body + length :]
                    continue
            before = len(self.buf)
            yield from self._line()
            if len(self.buf) == before:
                return

    def _line(self) -> Iterator[tuple[bytes, int | None]]:
        nl = self.buf.find(b"\n")
        if nl < 0:
            if len(self.buf) > self.limit:
                yield self.buf[: self.limit], len(self.buf)
                self.buf = b""
                self._skip_newline = True
            return
        line = self.buf[:nl].rstrip(b"\r")
        self.buf = self.buf[nl + 1 :]
        if not line.strip(b"\x00 "):
            return
        if len(line) > self.limit:
            yield line[: self.limit], len(line)
        else:
            yield line, None

    def flush(self) -> Iterator[tuple[bytes, int | None]]:
        """What is left when the peer closes: a last line without LF."""
        rest, self.buf = self.buf.rstrip(b"\r\n"), b""
        if rest.strip() and not self._skip and not self._skip_newline:
            yield rest[: self.limit], (len(rest) if len(rest) > self.limit else None)


class SyslogInput:
    def __init__(self, transport: str, host: str, port: int, *, max_line_bytes: int = 65536):
        if transport not in ("udp", "tcp"):
            raise ConfigError(f"syslog transport must be udp or tcp, not {transport!r}")
        self.transport = transport
        self.limit = max_line_bytes
        self._closed = False
        self._seq = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(family, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(
                f"cannot listen on {transport}://{host}:{port}: {exc.strerror}"
            ) from exc
        if transport == "udp":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        else:
            self.sock.listen(64)
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.name = f"syslog:{transport}://{self.address[0]}:{self.address[1]}"

    @classmethod
    def from_url(cls, url: str, *, max_line_bytes: int = 65536) -> SyslogInput:
        parsed = urlparse(url)
        if parsed.scheme not in ("udp", "tcp") or parsed.port is None:
            raise ConfigError(
                f"syslog URL must look like udp://HOST:PORT or tcp://HOST:PORT: {url}"
            )
        return cls(
            parsed.scheme, parsed.hostname or "0.0.0.0", parsed.port, max_line_bytes=max_line_bytes
        )

    def checkpoint(self) -> dict[str, Any] | None:
        return None

    def restore(self, checkpoint: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        self._closed = True
        self.sock.close()

    def _record(self, data: bytes, size: int | None, peer: str) -> Record:
        self._seq += 1
        return Record(data, self._seq, size, peer)

    def __iter__(self) -> Iterator[Record | None]:
        if self.transport == "udp":
            yield from self._udp()
        else:
            yield from self._tcp()

    def _udp(self) -> Iterator[Record | None]:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            while not self._closed:
                if not sel.select(timeout=0.2):
                    yield None
                    continue
                while True:
                    try:
                        data, addr = self.sock.recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    data = data.rstrip(b"\r\n\x00")
                    size = len(data) if len(data) > self.limit else None
                    yield self._record(data[: self.limit], size, f"udp:{addr[0]}")
        finally:
            sel.close()

    def _tcp(self) -> Iterator[Record | None]:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, None)
        decoders: dict[socket.socket, tuple[FrameDecoder, str]] = {}
        try:
            while not self._closed:
                ready = sel.select(timeout=0.2)
                if not ready:
                    yield None
                    continue
                for key, _ in ready:
                    if key.data is None:
                        try:
                            conn, addr = self.sock.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                        decoders[conn] = (FrameDecoder(self.limit), f"tcp:{addr[0]}")
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    decoder, peer = decoders[conn]
                    try:
                        data = conn.recv(256 * 1024)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        for msg, size in decoder.flush():
                            yield self._record(msg, size, peer)
                        sel.unregister(conn)
                        conn.close()
                        del decoders[conn]
                        continue
                    for msg, size in decoder.feed(data):
                        yield self._record(msg, size, peer)
        finally:
            for conn in decoders:
                conn.close()
            sel.close()
