"""stdin read from its descriptor: the same lines as the buffered reader, and
idle moments reported so a batching reader hands on what it holds."""

from __future__ import annotations

import io
import os
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.inputs.stream import StreamInput, read_fd_lines, read_lines

_lines = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"x")), max_size=8)


@settings(max_examples=200, deadline=None)
@given(_lines, st.booleans(), st.integers(1, 12), st.sampled_from([b"\n", b"\r\n"]))
def test_descriptor_lines_match_the_buffered_reader(
    lines: list[bytes], last_eol: bool, limit: int, eol: bytes
) -> None:
    data = eol.join(lines) + (eol if last_eol and lines else b"")
    expected = [(line, n, cut) for line, _, n, cut in read_lines(io.BytesIO(data), limit)]
    r, w = os.pipe()

    def write() -> None:
        for i in range(0, len(data), 7):  # lines split across reads
            os.write(w, data[i : i + 7])
        os.close(w)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        got = [item for item in read_fd_lines(r, limit) if item is not None]
    finally:
        writer.join()
        os.close(r)
    assert got == expected


def test_a_quiet_descriptor_reports_idle_between_lines() -> None:
    r, w = os.pipe()
    source = StreamInput(None, "stdin", 100, fd=r)
    it = iter(source)
    try:
        os.write(w, b"one\ntw")
        assert next(it).data == b"one"  # type: ignore[union-attr]
        start = time.monotonic()
        assert next(it) is None  # "tw" is no line yet, and nothing else came
        assert time.monotonic() - start < 2
        os.write(w, b"o\n")
        os.close(w)
        w = -1
        assert [rec.data for rec in it if rec is not None] == [b"two"]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
