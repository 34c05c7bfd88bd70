"""The console over HTTP (no browser): sign-in rules, Bearer tokens, the
read-only path while a correlator writes, the CLI beside a running console,
and its pure parts (sessions, filters)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.auth import Authenticator, csrf_ok, read_token_file
from console.queries import AlertFilter, TimeRange, time_range
from correlator.store import AlertStore
from correlator.store.server import serve_queries
from tests.conftest import ROOT
from tests.console_fixtures import Console, start_console, stop_console
from tests.test_store import make_alert
from tests.test_triage import stored, zonewatch
from zonewatch.errors import ConfigError

JST = ZoneInfo("Asia/Tokyo")


@pytest.fixture()
def small_db(tmp_path: Path) -> Path:
    db = tmp_path / "zw.duckdb"
    with AlertStore(db) as store:
        store.write([make_alert(n) for n in range(1, 6)])
    return db


@pytest.fixture()
def console(small_db: Path, tmp_path: Path) -> Iterator[Console]:
    running = start_console(small_db, tmp_path)
    yield running
    stop_console(running)


# -- sign-in ----------------------------------------------------------------


def test_every_page_needs_a_token_and_a_bearer_token_opens_them(console: Console) -> None:
    for path in ("/matrix", "/alerts", f"/alerts/{make_alert(1).id}", "/timeline", "/health"):
        assert console.client(token="").get(path).status_code == 401, path
        assert console.client(token="wrong-token-0123456789").get(path).status_code == 401
        answer = console.client().get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
    # the token never shows in the console's log
    assert console.token not in console.log.read_text()


def test_a_browser_without_a_session_is_sent_to_sign_in(console: Console) -> None:
    answer = console.client(token="").get(
        "/alerts?level=high", headers={"Accept": "text/html"}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Falerts%3Flevel%3Dhigh"


def test_sign_in_needs_the_form_token_and_the_right_token(console: Console) -> None:
    client = console.client(token="")
    form = client.get("/login")
    pre = client.cookies["zw_pre"]
    assert f'value="{pre}"' in form.text
    # without the form's CSRF token
    refused = client.post("/login", data={"user": "a", "token": console.token})
    assert refused.status_code == 403 and "zw_session" not in client.cookies
    bad = client.post("/login", data={"user": "a", "token": "nope-nope-nope-nope", "csrf": pre})
    assert bad.status_code == 200 and "zw_session" not in client.cookies
    good = client.post(
        "/login",
        data={"user": "kondo", "token": console.token, "csrf": pre, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert good.status_code == 303 and good.headers["location"] == "/matrix"  # no open redirect
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/alerts").status_code == 200


def test_repeated_bad_tokens_are_throttled(console: Console) -> None:
    client = console.client(token="")
    client.get("/login")
    pre = client.cookies["zw_pre"]
    for _ in range(5):
        client.post("/login", data={"user": "x", "token": "bad-bad-bad-bad-bad", "csrf": pre})
    answer = client.post("/login", data={"user": "x", "token": console.token, "csrf": pre})
    assert "zw_session" not in client.cookies
    assert "しばらく待って" in answer.text


def test_sessions_expire_after_idle_time_and_after_their_lifetime() -> None:
    now = [0.0]
    auth = Authenticator("x" * 32, ttl_s=100, idle_s=10, clock=lambda: now[0])
    sid, session = auth.open_session("sato")
    now[0] = 9
    assert auth.session(sid) is session
    now[0] = 18  # 9 s idle: still alive
    assert auth.session(sid) is session
    now[0] = 29  # 11 s idle
    assert auth.session(sid) is None
    now[0] = 0.0
    sid, _ = auth.open_session("sato")
    for t in range(5, 101, 5):
        now[0] = t
        assert auth.session(sid) is not None
    now[0] = 105
    assert auth.session(sid) is None
    assert (
        not csrf_ok(session, None) and not csrf_ok(session, "") and csrf_ok(session, session.csrf)
    )


def test_a_token_file_must_hold_a_long_enough_token(tmp_path: Path) -> None:
    short = tmp_path / "t"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        read_token_file(short)
    with pytest.raises(ConfigError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_other_addresses_need_a_flag_and_then_a_token_file(small_db: Path) -> None:
    # A TEST-NET address: nothing here could listen on it even if the checks failed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZONEWATCH_CONSOLE")}
    args = [sys.executable, "-m", "zonewatch", "console", "--db", str(small_db)]
    remote = ["--host", "192.0.2.10"]
    done = subprocess.run(
        [*args, *remote], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert done.returncode == 2 and "--allow-remote" in done.stderr
    done = subprocess.run(
        [*args, *remote, "--allow-remote"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 78 and "without authentication" in done.stderr


# -- the store while others use it --------------------------------------------


def test_while_a_correlator_writes_the_console_reads_and_triages_through_it(
    small_db: Path, tmp_path: Path
) -> None:
    """The correlator holds the file; the console reads through its query
    endpoint, and a triage from the console is applied by its writer."""
    store = AlertStore(small_db)
    serve_queries(store)
    console = start_console(small_db, tmp_path)
    try:
        store.write([make_alert(99)])  # written after the console started
        client = console.client()
        listed = client.get("/alerts")
        assert listed.status_code == 200 and make_alert(99).id in listed.text
        changed = client.post(
            f"/alerts/{make_alert(99).id}/triage",
            data={"status": "acknowledged", "assignee": "suzuki", "note": "見ています"},
            headers={"X-Zonewatch-User": "suzuki"},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["to_status"] == "acknowledged"
        # the correlator's own connection sees it at once
        assert store.query("SELECT status, assignee FROM alerts WHERE id = ?", [make_alert(99).id])[
            1
        ] == [("acknowledged", "suzuki")]
        missing = client.post("/alerts/" + "0" * 32 + "/triage", data={"status": "closed"})
        assert missing.status_code == 404
    finally:
        stop_console(console)
        store.close()


def test_triage_and_query_work_while_the_console_runs(console: Console) -> None:
    assert console.client().get("/alerts").status_code == 200
    done = zonewatch(
        "triage", make_alert(2).id, "--db", str(console.db), "--status", "closed", "--note", "ok"
    )
    assert done.returncode == 0, done.stderr
    query = zonewatch(
        "query", "--db", str(console.db), "-f", "csv", "SELECT count(*) FROM triage_history"
    )
    assert query.returncode == 0 and query.stdout.splitlines()[-1] == "1"
    page = console.client().get(f"/alerts/{make_alert(2).id}")
    assert 'id="current-status" class="status status-closed">完了<' in page.text
    assert stored(console.db, make_alert(2).id)[0] == "closed"


# -- filters and time ranges ------------------------------------------------------


def test_time_ranges_are_presets_or_local_times() -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert time_range({"range": "7d"}, JST, now) == TimeRange("7d", now - timedelta(days=7), None)
    custom = time_range({"range": "custom", "since": "2026-11-26T09:00"}, JST, now)
    assert custom.since == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert time_range({"range": "bogus"}, JST, now).key == "all"
    assert time_range({"range": "custom", "since": "yesterday"}, JST, now).key == "all"


EMPTY_STORE = AlertStore(":memory:", memory_limit=None)


@settings(deadline=None, max_examples=50)
@given(st.text(max_size=60), st.sampled_from(["user", "device", "rule", "crossing", "tag"]))
def test_filter_values_only_ever_travel_as_parameters(value: str, name: str) -> None:
    flt = AlertFilter.from_args({name: value, "sort": value, "level": value, "status": value})
    page, count, params = flt.list_sql(TimeRange("all", None, None))
    stripped = value.strip()
    if stripped:
        assert params[name] == stripped[:200]
        # the statement's text is the same whatever the value: only the parameter differs
        others = {"sort": value, "level": value, "status": value}  # a value may be a valid sort
        same = AlertFilter.from_args({name: "x", **others}).list_sql(TimeRange("all", None, None))
        assert (page, count) == same[:2]
    # and the statements run on the read-only query path of a real store
    rows = EMPTY_STORE.query(page, params)[1]
    if count is None:  # the total rides with the page
        assert len(rows) == 1 and rows[0][0] is None and rows[0][-1] == 0
    else:
        assert rows == []
        counted = EMPTY_STORE.query(
            count, {k: v for k, v in params.items() if k not in ("limit", "offset")}
        )
        assert counted[1] == [(0,)]


# -- the alert list on the demo day -----------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    from console.demo_store import build_demo_store

    work = tmp_path_factory.mktemp("demo")
    build_demo_store(work / "zonewatch.duckdb")
    running = start_console(
        work / "zonewatch.duckdb", work, env={"ZONEWATCH_CONSOLE__LOCALE": "en"}
    )
    yield running
    stop_console(running)


def listed(console: Console, query: str) -> list[str]:
    import re

    page = console.client().get(f"/alerts?{query}")
    assert page.status_code == 200, page.text[:500]
    return re.findall(r'<tr data-alert-id="([0-9a-f]+)">', page.text)


def ids(console: Console, where: str, params: list | None = None) -> set[str]:
    with duckdb.connect(str(console.db), read_only=True) as con:
        return {
            r[0]
            for r in con.execute(f"SELECT id FROM alerts WHERE {where}", params or []).fetchall()
        }


def test_each_filter_lists_exactly_the_matching_alerts(demo: Console) -> None:
    assert set(listed(demo, "level=critical")) == ids(demo, "level = 'critical'")
    assert set(listed(demo, "tag=attack.t1599")) == ids(demo, "list_contains(tags, 'attack.t1599')")
    assert set(listed(demo, "crossing=core-%3Elgwan")) == ids(
        demo, "zone_crossing LIKE '%core->lgwan%'"
    )
    # users and devices from the evidence (or group values), any spelling of case
    suzuki = listed(demo, "user=SUZUKI.YUI")
    titles = ids(demo, "rule_title = 'Same User Active in Two Zones From Different Devices'")
    assert titles <= set(suzuki)
    assert set(listed(demo, "device=lt-0142")) >= ids(
        demo, "rule_title LIKE 'Device Turned Non-Compliant%'"
    )
    assert listed(demo, "user=nobody-at-all") == []
    # time: 14:00 JST onwards leaves the two afternoon alerts
    later = listed(demo, "range=custom&since=2026-11-26T14:00")
    afternoon = ids(demo, "last_seen >= TIMESTAMPTZ '2026-11-26 05:00:00+00'")
    assert set(later) == afternoon and 0 < len(later) < len(ids(demo, "true"))


def test_sorting_and_the_default_locale_setting(demo: Console) -> None:
    by_level = listed(demo, "sort=level&dir=desc")
    with duckdb.connect(str(demo.db), read_only=True) as con:
        level = dict(con.execute("SELECT id, level FROM alerts").fetchall())
    ranks = [
        ("critical", "high", "medium", "low", "informational").index(level[i]) for i in by_level
    ]
    assert ranks == sorted(ranks)
    page = demo.client().get("/matrix")
    assert "<h1>Zone matrix</h1>" in page.text  # console.locale = en
    assert "<h1>ゾーンマトリクス</h1>" in demo.client().get("/matrix?lang=ja").text


def test_the_list_is_paged_by_the_store(tmp_path: Path) -> None:
    db = tmp_path / "zw.duckdb"
    with AlertStore(db) as store:
        store.write([make_alert(n) for n in range(120)])
    console = start_console(db, tmp_path)
    try:
        pages = [listed(console, f"page={n}&sort=time") for n in (1, 2, 3, 4)]
        first = console.client().get("/alerts").text
    finally:
        stop_console(console)
    assert [len(p) for p in pages] == [50, 50, 20, 0]
    assert len({i for p in pages for i in p}) == 120
    assert '<span class="muted" id="total">120</span>' in first


def test_the_report_covers_the_asked_period_in_one_file(demo: Console, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    done = zonewatch(
        "report", "--db", str(demo.db), "--since", "2026-11-26T14:00", "--locale", "en",
        "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    with duckdb.connect(str(demo.db), read_only=True) as con:
        afternoon = con.execute(
            "SELECT rule_title FROM alerts WHERE last_seen >= TIMESTAMPTZ '2026-11-26 05:00:00+00'"
        ).fetchall()
    assert html.count('<tr><td class="nowrap">') == len(afternoon) > 0
    assert "Web Traffic That Bypasses the Gateway" in html  # 14:30 JST
    assert "VDI Login Failures Followed by a Success" in html  # 15:04
    assert "Port Scan Across a Zone Boundary" not in html  # 11:08
    # one file: nothing to fetch, and a CSP that forbids fetching anything
    assert "<script src" not in html and "<link" not in html
    head = unescape(html[: html.index("</head>")])
    assert "connect-src 'none'" in head and "default-src 'none'" in head


def _roles_by_hand(db: Path) -> dict[tuple[str, str, str], int]:
    """(role, side, zone at the other end) -> alerts, from the evidence in Python."""
    import orjson

    seen: dict[tuple[str, str, str], set[str]] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for alert_id, event in con.execute("SELECT alert_id, event FROM alert_evidence").fetchall():
            zone = orjson.loads(event).get("zone", {})
            if zone.get("source_role"):
                key = (zone["source_role"], "source", zone.get("destination") or "unknown")
                seen.setdefault(key, set()).add(alert_id)
            if zone.get("destination_role"):
                key = (zone["destination_role"], "destination", zone.get("source") or "unknown")
                seen.setdefault(key, set()).add(alert_id)
    return {k: len(v) for k, v in seen.items()}


def test_the_role_breakdown_counts_alerts_by_evidence_role_and_follows_new_alerts(
    tmp_path: Path,
) -> None:
    from console import views
    from console.data import StoreAccess
    from console.demo_store import build_demo_store
    from zonewatch.zones import load_zone_map

    db = tmp_path / "zw.duckdb"
    build_demo_store(db)
    policy = load_zone_map(ROOT / "rules" / "zones.yaml").policy
    cache = views.AlertsCache()
    window = TimeRange("all", None, None)

    def shown() -> dict[tuple[str, str, str], int]:
        with StoreAccess(db).reader() as reader:
            data = views.matrix(reader, policy, window, cache)
        return {
            (r["name"], r["side"], zone): n for r in data["roles"] for zone, n, _ in r["cells"] if n
        }

    expected = _roles_by_hand(db)
    assert shown() == expected and expected[("vdi_pool_internet", "source", "internet")] == 2
    assert shown() == expected  # from the cache
    pool_alert = replace(
        make_alert(500),
        evidence=[
            replace(
                ev,
                event={
                    **ev.event,
                    "zone": {
                        "source": "vdi",
                        "destination": "mynumber",
                        "source_role": "vdi_pool_lgwan",
                    },
                },
            )
            for ev in make_alert(500).evidence
        ],
    )
    with AlertStore(db) as store:
        store.write([pool_alert])
    after = shown()
    assert after == _roles_by_hand(db)
    assert (
        after[("vdi_pool_lgwan", "source", "mynumber")]
        == expected.get(("vdi_pool_lgwan", "source", "mynumber"), 0) + 1
    )


def test_rule_health_lists_rules_that_never_fired_and_tells_building_blocks_apart(
    demo: Console,
) -> None:
    import re

    page = demo.client().get("/health").text
    rows = re.findall(r'<tr( class="building-block")?><td><a href="/rules/[^"]+">([^<]+)</a>', page)
    never = {unescape(title): bool(block) for block, title in rows}
    with duckdb.connect(str(demo.db), read_only=True) as con:
        fired = {r[0] for r in con.execute("SELECT DISTINCT rule_title FROM alerts").fetchall()}
        titles = {r[0] for r in con.execute("SELECT DISTINCT title FROM rules").fetchall()}
    assert set(never) == titles - fired
    assert never["VDI Login Failed"] is True  # counted by the failures-then-success correlation
    assert never["Zone Policy: Direct Traffic From LGWAN Into Core"] is False
