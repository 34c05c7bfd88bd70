"""A log file, read once or followed across rotation and truncation.

The checkpoint is the byte offset after the last line handed out plus the
file's identity: device and inode, and a fingerprint of its first bytes (so
an inode reused by a new file is not mistaken for the old one). On restart:

* the same file is still at the path: continue at the offset;
* it was rotated away while we were down: finish the rotated file (found by
  inode among the files beside it, e.g. ``access.log.1``), then read the
  new file from its start;
* it was truncated or replaced in place: start again at offset 0.

While following, only complete lines (ending in a newline) are handed out;
a partial last line waits for its end. A renamed-away file is drained to its
end before the new file at the path is opened.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from connectors.inputs import Record
from zonewatch.errors import UsageError
from zonewatch.logs import get_logger

log = get_logger(__name__)

FINGERPRINT_BYTES = 128
CHUNK = 256 * 1024


def _fingerprint(fh: IO[bytes], length: int = FINGERPRINT_BYTES) -> tuple[str, int]:
    pos = fh.tell()
    fh.seek(0)
    head = fh.read(length)
    fh.seek(pos)
    return hashlib.sha256(head).hexdigest()[:32], len(head)


class FileInput:
    def __init__(
        self,
        path: str | Path,
        *,
        follow: bool = False,
        max_line_bytes: int = 65536,
        poll_interval_s: float = 0.1,
    ):
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.follow = follow
        self.limit = max_line_bytes
        self.poll_interval_s = poll_interval_s
        self._fh: IO[bytes] | None = None
        self._dev = self._ino = 0
        self._fp = ""
        self._fp_len = 0
        self._offset = 0  # after the last line handed out
        self._restore: dict[str, Any] | None = None
        self._closed = False

    # -- checkpoint -------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any] | None:
        if self._fh is None:
            return self._restore
        if self._fp_len < FINGERPRINT_BYTES:  # the head may have grown since opening
            self._fp, self._fp_len = _fingerprint(self._fh)
        return {
            "path": str(self.path),
            "dev": self._dev,
            "ino": self._ino,
            "offset": self._offset,
            "fingerprint": self._fp,
            "fingerprint_len": self._fp_len,
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self._restore = checkpoint

    def close(self) -> None:
        self._closed = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- opening --------------------------------------------------------------------
    def _adopt(self, fh: IO[bytes], offset: int) -> None:
        st = os.fstat(fh.fileno())
        self._fh = fh
        self._dev, self._ino = st.st_dev, st.st_ino
        self._fp, self._fp_len = _fingerprint(fh)
        fh.seek(offset)
        self._offset = offset

    def _matches(self, fh: IO[bytes], cp: dict[str, Any]) -> bool:
        st = os.fstat(fh.fileno())
        if (st.st_dev, st.st_ino) != (cp.get("dev"), cp.get("ino")):
            return False
        if st.st_size < int(cp.get("offset", 0)):
            return False  # truncated since
        fp, _ = _fingerprint(fh, int(cp.get("fingerprint_len", FINGERPRINT_BYTES)))
        return fp == cp.get("fingerprint")

    def _open_path(self) -> IO[bytes] | None:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot read {self.path}: {exc.strerror}") from exc

    def _find_rotated(self, cp: dict[str, Any]) -> IO[bytes] | None:
        """The file with the checkpoint's inode among the path's siblings."""
        folder = self.path.parent
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return None
        for name in names:
            candidate = folder / name
            if candidate == self.path or not name.startswith(self.path.name):
                continue
            try:
                st = candidate.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != (cp.get("dev"), cp.get("ino")):
                continue
            fh = open(candidate, "rb")  # noqa: SIM115
            if self._matches(fh, cp):
                return fh
            fh.close()
        return None

    def _first_open(self) -> Iterator[Record | None]:
        """Open per the checkpoint; yields records of a rotated file first."""
        cp, self._restore = self._restore, None
        fh = self._open_path()
        while fh is None and self.follow and not self._closed:
            yield None
            time.sleep(self.poll_interval_s)
            fh = self._open_path()
        if fh is None:
            raise UsageError(f"cannot read {self.path}: no such file")
        if cp is None:
            self._adopt(fh, 0)
            return
        if self._matches(fh, cp):
            self._adopt(fh, int(cp["offset"]))
            return
        rotated = self._find_rotated(cp)
        if rotated is not None:
            log.info("file_rotated_while_down", path=str(self.path), offset=cp["offset"])
            fh.close()
            self._adopt(rotated, int(cp["offset"]))
            yield from self._drain(final=True)
            fh = self._open_path()
            if fh is None:
                raise UsageError(f"cannot read {self.path}: no such file")
        else:
            log.warning(
                "file_replaced_while_down",
                path=str(self.path),
                detail="checkpointed file not found; reading the current file from its start",
            )
        self._adopt(fh, 0)

    # -- reading ------------------------------------------------------------------------
    def _drain(self, final: bool) -> Iterator[Record]:
        """Lines from the current offset to EOF; with ``final`` a partial last line too."""
        assert self._fh is not None
        fh = self._fh
        fh.seek(self._offset)
        buf = b""
        limit = self.limit
        skipping = False  # inside an oversized line: its head was kept, the rest is skipped
        head = b""
        head_start = 0
        skipped = 0
        pos = self._offset  # file offset of buf[0]
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            buf += chunk
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                if skipping:
                    skipped += nl + 1 - start
                    self._offset = pos + nl + 1
                    yield Record(head, head_start, skipped, self.name)
                    skipping = False
                else:
                    line = buf[start:nl]
                    line_start = pos + start
                    self._offset = pos + nl + 1
                    if len(line) > limit:
                        yield Record(line[:limit], line_start, nl + 1 - start, self.name)
                    else:
                        yield Record(line.rstrip(b"\r"), line_start, None, self.name)
                start = nl + 1
            rest = buf[start:]
            pos += start
            if skipping:
                skipped += len(rest)
                pos += len(rest)
                rest = b""
            elif len(rest) > limit:
                skipping, head, head_start, skipped = True, rest[:limit], pos, len(rest)
                pos += len(rest)
                rest = b""
            buf = rest
        if final and (buf or skipping):
            if skipping:
                self._offset = head_start + skipped
                yield Record(head, head_start, skipped, self.name)
            else:
                self._offset = pos + len(buf)
                yield Record(buf.rstrip(b"\r"), pos, None, self.name)

    def _rotated_or_truncated(self) -> str | None:
        assert self._fh is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "missing"
        if (st.st_dev, st.st_ino) != (self._dev, self._ino):
            return "rotated"
        if os.fstat(self._fh.fileno()).st_size < self._offset:
            return "truncated"
        if self._fp_len and _fingerprint(self._fh, self._fp_len)[0] != self._fp:
            return "truncated"  # rewritten in place to at least the old length
        return None

    def __iter__(self) -> Iterator[Record | None]:
        yield from self._first_open()
        if not self.follow:
            yield from self._drain(final=True)
            return
        while not self._closed:
            got = False
            for record in self._drain(final=False):
                got = True
                yield record
            if got:
                continue
            change = self._rotated_or_truncated()
            if change == "rotated":
                yield from self._drain(final=True)  # the writer has moved on
                fh = self._open_path()
                if fh is not None:
                    log.info("file_rotated", path=str(self.path))
                    assert self._fh is not None
                    self._fh.close()
                    self._adopt(fh, 0)
                    continue
            elif change == "truncated":
                log.info("file_truncated", path=str(self.path), offset=self._offset)
                assert self._fh is not None
                self._adopt(self._fh, 0)
                continue
            yield None
            time.sleep(self.poll_interval_s)
