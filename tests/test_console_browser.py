"""The console in a real headless browser, on the demo day's store: the
matrix shows the demo's crossings, an alert opens with its raw evidence
lines, a triage change shows in the list and in DuckDB, and requests
without sign-in or without the CSRF token are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import orjson
import pytest

from console.demo_store import build_demo_store
from tests.console_fixtures import Console, browser_or_skip, start_console, stop_console
from tests.test_demo_story import EXPECTED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("demo") / "zonewatch.duckdb"
    assert build_demo_store(db) == len(EXPECTED)  # the demo story's alerts
    return db


@pytest.fixture(scope="module")
def console(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    running = start_console(demo_db, tmp_path_factory.mktemp("console"))
    yield running
    stop_console(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_or_skip()


@pytest.fixture()
def page(browser: Any, console: Console) -> Iterator[Any]:
    """A signed-in page; every request it makes is recorded."""
    context = browser.new_context(locale="ja-JP")
    page = context.new_page()
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.goto(f"{console.url}/matrix")
    assert "/login" in page.url  # not signed in yet
    page.fill("input[name=user]", "sato")
    page.fill("input[name=token]", console.token)
    page.click("button[type=submit]")
    page.wait_for_url("**/matrix")
    yield page
    context.close()


def sql(db: Path, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def test_the_matrix_shows_the_demo_days_crossings(page: Any, console: Console) -> None:
    cells = page.eval_on_selector_all(
        "#zone-matrix td[data-crossing]",
        "els => els.map(e => [e.dataset.crossing, Number(e.dataset.alerts)])",
    )
    shown = {crossing: n for crossing, n in cells if n}
    stored = dict(
        sql(
            console.db,
            "SELECT c, count(*) FROM (SELECT unnest(string_split(zone_crossing, ', ')) AS c "
            "FROM alerts) GROUP BY 1",
        )
    )
    assert shown == stored
    # the story's forbidden crossings: core -> LGWAN, an LGWAN pool host -> My Number
    assert shown["core->lgwan"] >= 1 and shown["vdi->mynumber"] >= 1
    assert page.locator("h1").inner_text() == "ゾーンマトリクス"  # Japanese by default
    # a click lists that crossing's alerts
    page.click('#zone-matrix td[data-crossing="core->lgwan"] a')
    page.wait_for_url("**/alerts?*crossing=core-%3Elgwan*")
    rows = page.locator("#alert-list tbody tr")
    assert rows.count() == stored["core->lgwan"]
    titles = rows.locator("td:nth-child(3)").all_inner_texts()
    assert "Zone Policy: Direct Traffic From Core Into LGWAN" in titles
    # nothing but the console itself was asked for anything
    assert {urlparse(u).netloc for u in page.requested} == {urlparse(console.url).netloc}


def test_an_alert_opens_with_its_raw_evidence_lines(page: Any, console: Console) -> None:
    ((alert_id,),) = sql(
        console.db, "SELECT id FROM alerts WHERE rule_title = 'Port Scan Across a Zone Boundary'"
    )
    page.goto(f"{console.url}/alerts?lang=en")
    page.click("#alert-list a:text('Port Scan Across a Zone Boundary')")
    page.wait_for_url(f"**/alerts/{alert_id}")
    raw = page.locator("pre.raw").all_inner_texts()
    events = sql(
        console.db,
        "SELECT event FROM alert_evidence WHERE alert_id = ? ORDER BY ordinal",
        [alert_id],
    )
    originals = [orjson.loads(e)["event"]["original"] for (e,) in events]
    assert raw == originals and len(raw) >= 10  # ten ports or more of one server
    assert all("devname=" in line and "dstport=" in line for line in raw)  # FortiGate lines
    # English UI after the switch, and the rule's description in both languages
    assert page.locator("h2", has_text="Evidence").count() == 1
    assert page.locator("p[lang=ja]").count() == 1 and page.locator("p[lang=en]").count() == 1
    # the rule text and version behind it
    page.click("a[href^='/rules/']")
    assert "version 1" in page.locator("h2").first.inner_text()
    assert "timespan" in page.locator("pre.raw").first.inner_text()


def test_a_triage_change_shows_in_the_list_and_in_duckdb(page: Any, console: Console) -> None:
    ((alert_id,),) = sql(
        console.db,
        "SELECT id FROM alerts WHERE rule_title = 'Web Traffic That Bypasses the Gateway'",
    )
    page.goto(f"{console.url}/alerts/{alert_id}")
    page.select_option("#triage-form select[name=status]", "closed")
    page.fill("#triage-form input[name=assignee]", "watanabe")
    page.fill("#triage-form textarea[name=note]", "プロキシ設定漏れ、修正済み")
    page.click("#triage-form button[type=submit]")
    page.wait_for_url(f"**/alerts/{alert_id}?saved=1")
    assert page.locator("#current-status").inner_text() == "完了"
    history = page.locator("#history tbody tr").all_inner_texts()
    assert len(history) == 1 and "sato" in history[0] and "新規 → 完了" in history[0]

    page.goto(f"{console.url}/alerts?status=closed")
    rows = page.locator("#alert-list tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-alert-id") == alert_id
    assert "watanabe" in rows.first.inner_text()

    assert sql(console.db, "SELECT status, assignee FROM alerts WHERE id = ?", [alert_id]) == [
        ("closed", "watanabe")
    ]
    assert sql(
        console.db,
        "SELECT actor, via, from_status, to_status, note FROM triage_history WHERE alert_id = ?",
        [alert_id],
    ) == [("sato", "console", "new", "closed", "プロキシ設定漏れ、修正済み")]


def test_requests_without_sign_in_or_csrf_token_are_refused(
    browser: Any, page: Any, console: Console
) -> None:
    ((alert_id, status),) = sql(
        console.db,
        "SELECT id, status FROM alerts WHERE rule_title = 'Port Scan Across a Zone Boundary'",
    )
    # a browser that never signed in is sent to the sign-in form
    stranger = browser.new_context()
    other = stranger.new_page()
    other.goto(f"{console.url}/alerts/{alert_id}")
    assert urlparse(other.url).path == "/login"
    assert other.locator("#triage-form").count() == 0
    answer = stranger.request.post(
        f"{console.url}/alerts/{alert_id}/triage", form={"status": "closed"}
    )
    assert answer.status == 401
    stranger.close()
    # a signed-in session without (or with a wrong) CSRF token
    for form in ({"status": "closed"}, {"status": "closed", "csrf": "forged"}):
        answer = page.request.post(f"{console.url}/alerts/{alert_id}/triage", form=form)
        assert answer.status == 403
    assert sql(console.db, "SELECT status FROM alerts WHERE id = ?", [alert_id]) == [(status,)]
    assert sql(
        console.db, "SELECT count(*) FROM triage_history WHERE alert_id = ?", [alert_id]
    ) == [(0,)]


def test_pages_carry_a_strict_csp_and_charts_draw_under_it(page: Any, console: Console) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    answer = page.goto(f"{console.url}/timeline?kind=user&name=tanaka.hanako@city.example.lg.jp")
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    page.wait_for_selector(".chart .main-svg")
    assert page.locator("#timeline-events tbody tr").count() > 10
    page.goto(f"{console.url}/health")
    page.wait_for_selector(".chart .main-svg")
    assert errors == []


def test_the_report_opens_offline_and_makes_no_request(
    browser: Any, demo_db: Path, tmp_path: Path
) -> None:
    from tests.test_triage import zonewatch

    out = tmp_path / "report.html"
    done = zonewatch("report", "--db", str(demo_db), "-o", str(out))
    assert done.returncode == 0, done.stderr
    context = browser.new_context(offline=True)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_selector("[data-figure='fig-entities'] .main-svg")
    assert requested == [out.as_uri()]
    assert errors == []
    assert page.locator(".chart .main-svg").count() >= 4
    assert page.locator("#alert-list tbody tr").count() == len(EXPECTED)
    assert page.locator("#total").inner_text() == str(len(EXPECTED))
    context.close()
