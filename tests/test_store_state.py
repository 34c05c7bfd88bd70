"""Large state values in the alert store (issue 20, point 3): written in small
rows as they are produced, read back a window at a time, and a checkpoint
the store has no memory for leaves the batch's alerts stored."""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store import count, evidence, make_alert

from correlator.store import AlertStore, ArchivedEvent, CheckpointNotStoredError
from correlator.store.schema import MIGRATIONS
from correlator.store.state import state_chunk_bytes


def writer(data: bytes, piece: int = 65536) -> Callable[[BinaryIO], None]:
    """Writes ``data`` in pieces of ``piece`` bytes, as the pickler does."""

    def write(out: BinaryIO) -> None:
        for i in range(0, len(data), piece):
            out.write(data[i : i + piece])

    return write


def random_state(n: int, seed: int) -> bytes:
    # Incompressible, like a pickle of distinct addresses is to DuckDB.
    return os.urandom(n) if seed < 0 else bytes((i * 7919 + seed) % 251 for i in range(n))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 70_000), min_size=1, max_size=3),
    piece=st.integers(1, 70_000),
    read=st.integers(1, 9_000),
)
def test_a_state_value_reads_back_byte_for_byte_whatever_its_size(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], piece: int, read: int
) -> None:
    # 32MB: rows of about 1,950 bytes, so values span many rows and windows.
    path = tmp_path_factory.mktemp("state") / "zw.duckdb"
    with AlertStore(path, memory_limit="32MB") as store:
        chunk = store.state_chunk
        assert 1900 < chunk < 2000
        values = [random_state(n, seed) for seed, n in enumerate(sizes)]
        for k, value in enumerate(values):  # each replaces the one before
            store.write([], state={"correlation": writer(value, piece), "small": value[:5]})
            assert store.load_state("correlation") == value
            assert store.load_state("small") == value[:5]
            assert count(store, "state_chunks") == max(1, -(-len(value) // chunk)) + 1, k
        source = store.open_state("correlation")
        assert source is not None
        with source:
            got = b""
            while block := source.read(read):
                got += block
        assert got == values[-1]
        assert store.load_state("missing") is None and store.open_state("missing") is None


def test_rows_are_sized_from_the_memory_limit() -> None:
    # DuckDB pins 2048 rows at once when it commits them: an eighth of the limit.
    assert state_chunk_bytes("512MB") == 31_250
    assert state_chunk_bytes("64MB") == 3_906
    assert state_chunk_bytes("2GB") == state_chunk_bytes(None) == 65_536
    assert state_chunk_bytes("1MB") == 1_024


def test_a_state_several_times_the_memory_limit_is_stored_and_restored(tmp_path: Path) -> None:
    # The flood of issue 20: as one BLOB, a value of a quarter of the limit
    # already failed ("could not allocate block"), at every checkpoint.
    path = tmp_path / "zw.duckdb"
    big = random_state(48 << 20, -1)
    with AlertStore(path, memory_limit="32MB") as store:
        # As bytes, and as a writer (how the stream hands it over).
        store.write([make_alert(1)], state={"correlation": big}, offsets={("t.fw", 0): 10})
        assert store.load_state("correlation") == big
        store.write([make_alert(2)], state={"correlation": writer(big[::-1])})
    with AlertStore(path, memory_limit="32MB") as store:
        assert store.load_state("correlation") == big[::-1]
        assert store.load_offsets() == {("t.fw", 0): 10}
        assert count(store, "alerts") == 2


def test_the_value_is_never_held_whole_on_the_python_side(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb", memory_limit="64MB") as store:
        piece = os.urandom(1 << 16)

        def write(out: BinaryIO) -> None:
            for _ in range(1024):  # 64 MiB, made as it goes
                out.write(piece)

        tracemalloc.start()
        try:
            store.write([], state={"correlation": write})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, peak
        source = store.open_state("correlation")
        assert source is not None
        with source:
            while block := source.read(1 << 20):
                assert block == piece * 16


def make_v3_store(path: Path, snapshot: bytes) -> None:
    """A store as schema version 3 left it, holding ``snapshot`` as its
    correlation state (one BLOB in ``state``)."""
    con = duckdb.connect(str(path))
    for version in (1, 2, 3):
        for statement in MIGRATIONS[version]:
            con.execute(statement)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    con.execute("INSERT INTO state VALUES ('correlation', ?, now())", [snapshot])
    con.close()


def test_state_written_by_an_earlier_version_is_read_until_written_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "zw.duckdb"
    make_v3_store(path, b"v3 snapshot")
    with AlertStore(path) as store:
        assert store.load_state("correlation") == b"v3 snapshot"
        store.write([], state={"correlation": writer(b"v4 snapshot")})
        assert store.load_state("correlation") == b"v4 snapshot"
        assert count(store, "state") == 0


def test_a_correlation_snapshot_stored_by_an_earlier_version_restores(tmp_path: Path) -> None:
    from test_correlation_state import LOADED, engine, failed

    from correlator.correlation import CorrelationEngine, CorrelationSettings
    from correlator.correlation.timeline import feed

    before = engine(allowed_lateness_s=30)
    feed(before, LOADED, [failed(i, f"user{i}@city.example.lg.jp") for i in range(40)])
    path = tmp_path / "zw.duckdb"
    make_v3_store(path, before.snapshot())
    with AlertStore(path) as store:
        source = store.open_state("correlation")
        assert source is not None
        with source:
            after = CorrelationEngine.restore(
                source,
                LOADED.correlations,
                LOADED.resolve,
                CorrelationSettings(allowed_lateness_s=30),
            )
    assert after.metrics()["groups"] == before.metrics()["groups"] > 0
    assert after.metrics()["buffered_events"] == before.metrics()["buffered_events"] > 0


def squeeze(store: AlertStore, limit: str) -> None:
    """Leave DuckDB ``limit`` of memory, as a store whose buffer pool other
    work filled would (the limit is global to the database instance)."""
    store.cursor().execute(f"SET memory_limit = '{limit}'")


@pytest.mark.usefixtures("unlocked_store_configuration")
def test_a_checkpoint_short_of_memory_leaves_the_alerts_stored_and_the_old_checkpoint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "zw.duckdb"
    ev = evidence(7)
    archived = ArchivedEvent(ev.event_id, ev.topic, 0, 7, ev.time, ev.event)
    with AlertStore(path, memory_limit="64MB") as store:
        store.write([make_alert(1)], state={"correlation": writer(b"old")}, offsets={("t", 0): 1})
        squeeze(store, "4MB")
        future = store.submit(
            [make_alert(2)],
            events=[archived],
            state={"correlation": writer(random_state(48 << 20, -1)), "archive-offsets": b"[8]"},
            offsets={("t", 0): 2},
        )
        with pytest.raises(CheckpointNotStoredError, match="memory") as caught:
            future.result()
        assert caught.value.new_ids == [make_alert(2).id]
        # The batch without its checkpoint: alerts, outbox, archive, plain state.
        assert count(store, "alerts") == 2 and count(store, "outbox") == 2
        assert count(store, "events") == 1
        assert store.load_state("archive-offsets") == b"[8]"
        # The checkpoint in force is the previous one, state and offsets alike.
        assert store.load_state("correlation") == b"old"
        assert store.load_offsets() == {("t", 0): 1}
        # Not a failure: the next batch, with a smaller state, is stored.
        squeeze(store, "64MB")
        assert store.write(
            [make_alert(3)], state={"correlation": writer(b"new")}, offsets={("t", 0): 3}
        ) == [make_alert(3).id]
    with AlertStore(path) as store:
        assert store.load_state("correlation") == b"new"
        assert store.load_offsets() == {("t", 0): 3}


def test_a_state_writer_that_fails_stores_nothing_of_its_batch(tmp_path: Path) -> None:
    def broken(out: BinaryIO) -> None:
        out.write(b"x" * (6 << 20))  # past the in-memory part of the spool
        raise ValueError("state cannot be serialized")

    with AlertStore(tmp_path / "zw.duckdb") as store:
        with pytest.raises(ValueError, match="serialized"):
            store.submit([make_alert(1)], state={"b": writer(b"b"), "a": broken})
        assert count(store, "alerts") == 0 and count(store, "state_chunks") == 0
        # Raised before the batch went to DuckDB: the store takes the next one.
        assert store.write([make_alert(2)], state={"a": writer(b"a")}) == [make_alert(2).id]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("zonewatch-state-")]


def test_state_is_read_back_as_a_file(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb", memory_limit="32MB") as store:
        store.write([], state={"lines": writer(b"one\ntwo\n" * 3000, 7)})
        source = store.open_state("lines")
        assert isinstance(source, io.BufferedReader)
        with source:
            assert source.readline() == b"one\n"
            assert source.read(4) == b"two\n"
            assert len(source.read()) == 8 * 3000 - 8
