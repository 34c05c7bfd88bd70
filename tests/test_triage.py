"""Triage: status, assignee and note of stored alerts, from the CLI and any
process, while the correlator writes, and per member when scaled out."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.store import AlertStore
from correlator.store.server import serve_queries
from correlator.store.triage import apply_triage
from tests.conftest import ROOT
from tests.test_store import make_alert
from zonewatch.errors import TriageError


def zonewatch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZONEWATCH_LOG_LEVEL": "warning"}
    return subprocess.run(
        [sys.executable, "-m", "zonewatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def stored(db: Path, alert_id: str) -> tuple[str, str | None, list[tuple]]:
    with duckdb.connect(str(db), read_only=True) as con:
        status, assignee = con.execute(
            "SELECT status, assignee FROM alerts WHERE id = ?", [alert_id]
        ).fetchone()
        rows = con.execute(
            "SELECT actor, via, from_status, to_status, to_assignee, note FROM triage_history "
            "WHERE alert_id = ? ORDER BY changed_at",
            [alert_id],
        ).fetchall()
    return status, assignee, rows


def test_a_change_sets_the_status_and_is_recorded_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "zw.duckdb"
    alert = make_alert(1)
    with AlertStore(db) as store:
        store.write([alert])
        store.triage(alert.id, "acknowledged", actor="sato", via="console", assignee="sato")
        store.triage(alert.id, "closed", actor="sato", via="console", note="policy 77 reverted")
    status, assignee, rows = stored(db, alert.id)
    assert (status, assignee) == ("closed", "sato")
    assert rows == [
        ("sato", "console", "new", "acknowledged", "sato", None),
        ("sato", "console", "acknowledged", "closed", "sato", "policy 77 reverted"),
    ]
    # SQL and saved queries see the current status
    with AlertStore(db, read_only=True) as store:
        assert store.query("SELECT status FROM alerts")[1] == [("closed",)]


def test_a_replayed_alert_keeps_its_triage(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb") as store:
        alert = make_alert(1)
        store.write([alert])
        store.triage(alert.id, "false_positive", actor="kondo", via="cli", note="test host")
        # the stream replays the batch after a crash: same id, skipped
        assert store.write([alert, make_alert(2)]) == [make_alert(2).id]
        rows = store.query("SELECT id, status FROM alerts ORDER BY status")[1]
    assert dict(rows) == {alert.id: "false_positive", make_alert(2).id: "new"}


def test_unknown_alerts_and_statuses_are_refused_and_change_nothing(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb") as store:
        store.write([make_alert(1)])
        with pytest.raises(TriageError, match="no alert 'feedface'"):
            store.triage("feedface", "closed", actor="a", via="cli")
        with pytest.raises(TriageError, match="unknown status 'done'"):
            store.triage(make_alert(1).id, "done", actor="a", via="cli")
        assert store.query("SELECT count(*) FROM triage_history")[1] == [(0,)]
        assert store.query("SELECT status FROM alerts")[1] == [("new",)]


@settings(max_examples=25, deadline=None)
@given(note=st.text(max_size=300), assignee=st.text(max_size=40))
def test_any_note_and_assignee_text_is_stored_as_given_without_control_characters(
    tmp_path_factory: pytest.TempPathFactory, note: str, assignee: str
) -> None:
    db = tmp_path_factory.mktemp("t") / "zw.duckdb"
    with AlertStore(db) as store:
        store.write([make_alert(1)])
    change = apply_triage(
        db, make_alert(1).id, "closed", actor="a", via="cli", note=note, assignee=assignee
    )

    def printable(text: str) -> str:
        return "".join(c for c in text if c.isprintable() or c in "\n\t").strip()

    status, stored_assignee, rows = stored(db, make_alert(1).id)
    assert status == "closed"
    assert stored_assignee == (printable(assignee) or None)
    assert rows[-1][-1] == (printable(note) or None) == change["note"]


def test_the_cli_changes_a_store_file_and_exits_0_2_65(tmp_path: Path) -> None:
    db = tmp_path / "zw.duckdb"
    alert = make_alert(1)
    with AlertStore(db) as store:
        store.write([alert])
    done = zonewatch(
        "triage", alert.id, "--db", str(db), "--status", "closed", "--note", "対応済み",
        "--assignee", "watanabe", "--by", "watanabe", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    change = orjson.loads(done.stdout)
    assert (change["from_status"], change["to_status"], change["via"]) == ("new", "closed", "cli")
    assert stored(db, alert.id)[:2] == ("closed", "watanabe")
    assert stored(db, alert.id)[2][0][-1] == "対応済み"

    usage = zonewatch("triage", alert.id, "--db", str(db), "--status", "done")
    assert usage.returncode == 2 and "done" in usage.stderr
    unknown = zonewatch("triage", "0" * 32, "--db", str(db), "--status", "closed")
    assert unknown.returncode == 65, unknown.stderr
    assert f"no alert '{'0' * 32}'" in unknown.stderr
    missing = zonewatch("triage", alert.id, "--db", str(tmp_path / "no.duckdb"), "--status", "new")
    assert missing.returncode == 3


def test_changes_go_through_the_writer_while_batches_are_written(tmp_path: Path) -> None:
    """The correlator's store keeps writing; `zonewatch triage` in other
    processes goes through its endpoint, and no alert is lost or reset."""
    db = tmp_path / "zw.duckdb"
    store = AlertStore(db)
    first = [make_alert(n) for n in range(20)]
    store.write(first)
    serve_queries(store)
    stop = threading.Event()
    written: list[str] = []

    def correlator() -> None:
        n = 1000
        while not stop.is_set():
            batch = [make_alert(n + k) for k in range(50)]
            written.extend(store.write(batch))
            store.write(first)  # replays of the triaged alerts: skipped
            n += 50

    writer = threading.Thread(target=correlator)
    writer.start()
    try:
        for i, alert in enumerate(first[:6]):
            done = zonewatch(
                "triage", alert.id, "--db", str(db), "--status", "acknowledged",
                "--assignee", f"officer{i}", "--note", f"note {i}",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        unknown = zonewatch("triage", "f" * 32, "--db", str(db), "--status", "closed")
        assert unknown.returncode == 65
    finally:
        stop.set()
        writer.join()
        store.close()
    with duckdb.connect(str(db), read_only=True) as con:
        statuses = dict(con.execute("SELECT id, status FROM alerts").fetchall())
        history = con.execute("SELECT count(*), min(via) FROM triage_history").fetchone()
    assert len(statuses) == 20 + len(written) and len(written) >= 50
    assert [statuses[a.id] for a in first] == ["acknowledged"] * 6 + ["new"] * 14
    assert history == (6, "cli")


def test_scaled_out_a_change_lives_in_the_store_of_the_member_that_raised_the_alert(
    tmp_path: Path,
) -> None:
    """Scaled out, each member writes its own --db and serves it; an alert is
    stored by exactly one member, and its triage goes to that member's store."""
    a, b = AlertStore(tmp_path / "a.duckdb"), AlertStore(tmp_path / "b.duckdb")
    try:
        a.write([make_alert(1)])
        b.write([make_alert(2)])
        serve_queries(a)
        serve_queries(b)
        done = zonewatch(
            "triage", make_alert(2).id, "--db", str(b.path), "--status", "closed", "--json"
        )
        assert done.returncode == 0, done.stderr
        wrong = zonewatch("triage", make_alert(2).id, "--db", str(a.path), "--status", "closed")
        assert wrong.returncode == 65
        assert "each member's store holds the alerts that member raised" in wrong.stderr
    finally:
        a.close()
        b.close()
    assert stored(tmp_path / "b.duckdb", make_alert(2).id)[0] == "closed"
    assert stored(tmp_path / "a.duckdb", make_alert(1).id)[0] == "new"
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM triage_history").fetchone() == (0,)


@pytest.mark.integration
def test_triage_while_correlate_consumes_from_kafka_loses_and_resets_nothing(
    tmp_path: Path, kafka_settings
) -> None:
    """A real correlator consumes and writes; `zonewatch triage` in other
    processes changes alerts it stored meanwhile. Every event still becomes
    exactly one alert, and the triaged ones keep their status."""
    from correlator.service import CorrelatorService
    from tests.test_query_live import CrossingFeed, live_settings

    db = tmp_path / "zonewatch.duckdb"
    settings = live_settings(kafka_settings, db)
    feed = CrossingFeed(kafka_settings)

    triaged: list[str] = []
    with CorrelatorService(settings) as service:
        service.start()
        runner = threading.Thread(
            target=service.run,
            kwargs={"until": lambda s: feed.stopping.is_set() and s.consumed >= feed.produced},
        )
        feed.start()
        runner.start()
        try:
            while len(triaged) < 4:
                answer = zonewatch(
                    "query", "--db", str(db), "-f", "csv",
                    "SELECT id FROM alerts WHERE status = 'new' ORDER BY first_seen LIMIT 1",
                )  # fmt: skip
                assert answer.returncode == 0, answer.stderr
                found = answer.stdout.splitlines()[1:]
                if not found:
                    continue  # nothing stored yet
                done = zonewatch(
                    "triage", found[0], "--db", str(db), "--status", "closed",
                    "--note", "handled while the correlator ran",
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                triaged.append(found[0])
        finally:
            feed.stop()
            runner.join(timeout=60)
        assert not runner.is_alive()
        count, closed = service.store.query(
            "SELECT count(*), count(*) FILTER (WHERE status = 'closed') FROM alerts"
        )[1][0]
        history = service.store.query("SELECT alert_id FROM triage_history ORDER BY changed_at")[1]
    assert count == feed.produced  # one alert per event: none lost, none twice
    assert closed == 4 and [r[0] for r in history] == triaged
