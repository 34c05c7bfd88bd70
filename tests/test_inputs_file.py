"""FileInput without Kafka: positions, oversized lines, rotation and truncation."""

from __future__ import annotations

import os
import time
from pathlib import Path

from connectors.inputs.file import FileInput
from connectors.inputs.stream import StreamInput


def _take(it, n: int, timeout_s: float = 5.0) -> list:
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} records arrived"
        rec = next(it)
        if rec is not None:
            out.append(rec)
    return out


def test_reads_lines_with_offsets_and_cuts_oversized(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    big = b"x" * 5000
    log.write_bytes(b"one\r\n" + big + b"\ntwo\nlast-without-newline")
    recs = list(FileInput(log, max_line_bytes=1000))
    assert [r.data[:4] for r in recs] == [b"one", b"xxxx", b"two", b"last"]
    assert [r.position for r in recs] == [0, 5, 5006, 5010]
    assert recs[1].size == 5001 and len(recs[1].data) == 1000
    assert recs[0].size is None


def test_restart_continues_after_the_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10)))
    first = FileInput(log, follow=True, poll_interval_s=0.01)
    it = iter(first)
    _take(it, 4)
    cp = first.checkpoint()
    first.close()
    again = FileInput(log)
    again.restore(cp)
    assert [r.data for r in again] == [b"line %d" % i for i in range(4, 10)]


def test_follow_handles_rotation_partial_lines_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\na2\npart")
    fi = FileInput(log, follow=True, poll_interval_s=0.01)
    it = iter(fi)
    assert [r.data for r in _take(it, 2)] == [b"a1", b"a2"]
    with open(log, "ab") as fh:
        fh.write(b"ial\na3\n")
    os.rename(log, tmp_path / "a.log.1")
    log.write_bytes(b"b1\n")
    assert [r.data for r in _take(it, 3)] == [b"partial", b"a3", b"b1"]
    with open(log, "r+b") as fh:  # copytruncate
        fh.truncate(0)
    log.write_bytes(b"c1\n")
    assert [r.data for r in _take(it, 1)] == [b"c1"]
    fi.close()


def test_rotated_while_down_is_finished_first(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\na2\n")
    fi = FileInput(log, follow=True, poll_interval_s=0.01)
    _take(iter(fi), 1)
    cp = fi.checkpoint()
    fi.close()
    with open(log, "ab") as fh:
        fh.write(b"a3\n")
    os.rename(log, tmp_path / "a.log.1")
    log.write_bytes(b"b1\n")
    again = FileInput(log)
    again.restore(cp)
    assert [r.data for r in again] == [b"a2", b"a3", b"b1"]


def test_replaced_file_with_same_size_is_read_from_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old1\nold2\n")
    fi = FileInput(log)
    list(fi)
    cp = fi.checkpoint()
    with open(log, "r+b") as fh:  # same inode, new content
        fh.write(b"new1\nnew2\n")
    again = FileInput(log)
    again.restore(cp)
    assert [r.data for r in again] == [b"new1", b"new2"]


def test_stdin_positions_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in"
    path.write_bytes(b"a\n\nc\n")
    with open(path, "rb") as fh:
        assert [(r.position, r.data) for r in StreamInput(fh)] == [(1, b"a"), (2, b""), (3, b"c")]
