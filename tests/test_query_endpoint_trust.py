"""`zonewatch query` trusts only an endpoint that is its user's own (issue
20, point 8): whoever can write the endpoint file or serve the socket
decides where the SQL goes and what comes back."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import orjson
import pytest

from correlator.store import AlertStore, query_endpoint
from correlator.store.server import serve_queries
from tests.test_store import make_alert
from zonewatch.errors import StoreError

NOBODY = 65534


@pytest.fixture()
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = tmp_path / "zonewatch.duckdb"
    with AlertStore(db) as store:
        store.write([make_alert(1)])
        server = serve_queries(store)
        yield db, server


def test_the_own_private_endpoint_is_used(served) -> None:  # type: ignore[no-untyped-def]
    db, server = served
    assert oct(server.endpoint_path.stat().st_mode & 0o777) == "0o600"
    assert oct(server.socket_path.stat().st_mode & 0o777) == "0o600"
    table = query_endpoint(db, "SELECT count(*) AS n FROM alerts")
    assert table is not None and table.to_pylist() == [{"n": 1}]


def test_an_endpoint_file_others_can_read_or_write_is_refused(served) -> None:  # type: ignore[no-untyped-def]
    db, server = served
    server.endpoint_path.chmod(0o644)
    with pytest.raises(StoreError, match="mode 0644 lets other users read or change it"):
        query_endpoint(db, "SELECT 1")


def test_an_endpoint_file_of_another_user_is_refused(
    served, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    db, server = served
    try:
        os.chown(server.endpoint_path, NOBODY, NOBODY)
    except PermissionError:
        # Not root: the file stays ours, so look at it as another user would.
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(StoreError, match=r"belongs to uid .*, not to you"):
        query_endpoint(db, "SELECT 1")


def test_a_symlinked_endpoint_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "zonewatch.duckdb"
    target = tmp_path / "elsewhere.json"
    target.write_bytes(orjson.dumps({"unix": str(tmp_path / "rogue.sock")}))
    target.chmod(0o600)
    (tmp_path / "zonewatch.duckdb.query.json").symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        query_endpoint(db, "SELECT 1")


def test_a_socket_with_a_loose_mode_is_refused(tmp_path: Path) -> None:
    # A listener someone else put in place, open to everybody.
    db = tmp_path / "zonewatch.duckdb"
    path = tmp_path / "rogue.sock"
    rogue = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    rogue.bind(str(path))
    rogue.listen()
    path.chmod(0o666)
    endpoint = tmp_path / "zonewatch.duckdb.query.json"
    endpoint.write_bytes(orjson.dumps({"unix": str(path)}))
    endpoint.chmod(0o600)
    try:
        with pytest.raises(StoreError, match=r"query socket .* mode 0666"):
            query_endpoint(db, "SELECT 1")
    finally:
        rogue.close()


def test_an_endpoint_file_naming_a_remote_host_is_refused(tmp_path: Path) -> None:
    endpoint = tmp_path / "zonewatch.duckdb.query.json"
    endpoint.write_bytes(orjson.dumps({"host": "203.0.113.5", "port": 9999, "token": "t"}))
    endpoint.chmod(0o600)
    with pytest.raises(StoreError, match="no unix socket or loopback port"):
        query_endpoint(tmp_path / "zonewatch.duckdb", "SELECT 1")


@pytest.mark.skipif(
    os.geteuid() != 0 or not hasattr(socket, "SO_PEERCRED"), reason="needs root and SO_PEERCRED"
)
def test_a_socket_served_by_another_user_is_refused(tmp_path: Path) -> None:
    # The socket file is ours and private, but the process answering on it
    # runs as somebody else (it called listen() as nobody).
    db = tmp_path / "zonewatch.duckdb"
    path = tmp_path / "zonewatch.duckdb.query.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    path.chmod(0o600)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only listens, as nobody
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock.listen()
            os.write(ready_w, b"x")
            os.read(stop_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        endpoint = tmp_path / "zonewatch.duckdb.query.json"
        endpoint.write_bytes(orjson.dumps({"unix": str(path)}))
        endpoint.chmod(0o600)
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"runs as uid {NOBODY}, not as you"):
            query_endpoint(db, "SELECT 1")
        assert time.monotonic() - started < 5  # refused at once, nothing sent
    finally:
        os.write(stop_w, b"x")
        os.waitpid(child, 0)
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)
        sock.close()


def test_an_older_store_open_to_others_is_narrowed_and_new_files_are_private(
    tmp_path: Path,
) -> None:
    # A store written before (0644, as DuckDB makes it under umask 022).
    import duckdb

    db = tmp_path / "zonewatch.duckdb"
    old_umask = os.umask(0o022)
    try:
        duckdb.connect(str(db)).close()
        assert oct(db.stat().st_mode & 0o777) == "0o644"
        with AlertStore(db) as store:
            store.write([make_alert(1)])  # DuckDB writes a new WAL
            wal = db.with_name(db.name + ".wal")
            assert oct(db.stat().st_mode & 0o777) == "0o600"
            assert wal.exists() and oct(wal.stat().st_mode & 0o777) == "0o600"
    finally:
        os.umask(old_umask)
