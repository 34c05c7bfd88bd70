"""Teams cards: Adaptive Card 1.5 schema, Japanese text, escaping, size."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cache
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.alerting.card import MAX_CARD_BYTES, digest_card, message_card, teams_card
from correlator.alerting.text import clean
from tests.conftest import SHARED
from tests.test_store import T0, make_alert
from zonewatch.models import Alert, Evidence

TEAMS_LIMIT = 28 * 1024


@cache
def validator() -> jsonschema.Draft6Validator:
    path = SHARED / "schemas" / "adaptive-card-1.5.json"
    if not path.exists():
        pytest.skip("../shared/schemas is not present")
    return jsonschema.Draft6Validator(json.loads(path.read_text(encoding="utf-8")))


def card_of(message: dict) -> dict:
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    return attachment["content"]


def all_text(card: dict) -> str:
    return json.dumps(card, ensure_ascii=False)


def facts(card: dict) -> dict[str, str]:
    fact_set = next(b for b in card["body"] if b["type"] == "FactSet")
    return {f["title"]: f["value"] for f in fact_set["facts"]}


def test_card_shows_what_the_duty_officer_needs() -> None:
    alert = make_alert(1, evidence_count=3)
    message = teams_card(alert, link_template="https://soc.city.example.lg.jp/alerts/{alert_id}")
    card = card_of(message)
    validator().validate(card)
    assert card["version"] == "1.5"
    assert card["body"][0]["text"] == "[HIGH] 基幹系端末からインターネットへの直接通信"
    shown = facts(card)
    assert shown["ゾーン越境 / Zone crossing"] == "core->internet"
    assert shown["ユーザー / User"] == "tanaka@city.example.lg.jp"
    assert shown["送信元 / Source IP"] == "10.20.1.15"
    assert shown["宛先 / Destination"] == "203.0.113.80"
    # 00:30:10 UTC is 09:30:10 in Tokyo; both are shown
    assert shown["初回 / First seen"] == "2026-11-02 09:30:10 JST (00:30:10 UTC)"
    assert shown["証拠件数 / Evidence"] == "3"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "アラートを開く / Open",
            "url": f"https://soc.city.example.lg.jp/alerts/{alert.id}",
        }
    ]
    assert f"zonewatch query alert-evidence --param alert_id={alert.id}" in all_text(card)


def test_no_link_without_a_template_and_total_evidence_is_reported() -> None:
    card = card_of(teams_card(make_alert(1, evidence_count=2), evidence_total=4000))
    validator().validate(card)
    assert "actions" not in card
    assert facts(card)["証拠件数 / Evidence"] == "4000"
    assert "(+3998 more)" in all_text(card)


def hostile_alert(user: str, url: str, title: str = "Test") -> Alert:
    event = {
        "@timestamp": T0.isoformat(),
        "user": {"name": user},
        "url": {"full": url, "domain": url[:50]},
        "source": {"ip": "10.20.1.15"},
        "event": {"dataset": "gateway.squid", "action": "allowed"},
    }
    ev = Evidence(event_id="zonewatch.events.gateway:0:1", time=T0, event=event)
    return make_alert(1).model_copy(update={"rule_title": title, "evidence": [ev], "group": {}})


def test_attacker_strings_cannot_add_links_markup_or_date_functions() -> None:
    alert = hostile_alert(
        user="[点击这里](https://evil.example/login) **urgent**",
        url="https://evil.example/{{DATE(2017-02-14T06:08:39Z, SHORT)}}",
        title="# fake header\n- injected",
    )
    card = card_of(teams_card(alert))
    text = all_text(card)
    assert "https://evil" not in text
    assert "{{DATE" not in text
    assert facts(card)["ユーザー / User"] == (
        "\\[点击这里\\](hxxps:/\u200b/evil.example/login) \\*\\*urgent\\*\\*"
    )
    assert card["body"][0]["text"] == "[HIGH] \\# fake header - injected"


def test_huge_attacker_fields_still_fit_under_the_teams_limit() -> None:
    giant = "悪" * 50_000
    evs = [
        Evidence(
            event_id=f"zonewatch.events.gateway:0:{i}",
            time=T0 + timedelta(seconds=i),
            event={
                "user": {"name": giant},
                "url": {"full": giant},
                "source": {"ip": f"10.0.0.{i}"},
            },
        )
        for i in range(200)
    ]
    alert = make_alert(1).model_copy(
        update={"rule_title": giant, "evidence": evs, "group": {f"k{i}": giant for i in range(50)}}
    )
    message = teams_card(alert)
    assert len(orjson.dumps(message)) <= MAX_CARD_BYTES < TEAMS_LIMIT
    validator().validate(card_of(message))


def test_digest_card_lists_a_burst_in_one_card() -> None:
    alerts = [make_alert(i) for i in range(12)]
    alerts[3] = alerts[3].model_copy(update={"level": "critical"})
    card = card_of(digest_card(alerts))
    validator().validate(card)
    assert card["body"][0]["text"].startswith("zonewatch: 12 件のアラート / alerts")
    assert card["body"][0]["color"] == "attention"
    assert "critical 1, high 11" in card["body"][0]["text"]
    assert "zonewatch query recent-alerts --since" in all_text(card)


def test_legacy_message_card() -> None:
    card = message_card(make_alert(1), link_template="https://soc.example/a/{alert_id}")
    assert card["@type"] == "MessageCard" and card["themeColor"] == "D13438"
    names = {f["name"] for f in card["sections"][0]["facts"]}
    assert {"ゾーン越境 / Zone crossing", "ユーザー / User"} <= names
    assert card["potentialAction"][0]["targets"][0]["uri"].startswith("https://soc.example/a/")


@settings(max_examples=60, deadline=None)
@given(
    user=st.text(max_size=300),
    url=st.text(max_size=2000),
    title=st.text(min_size=1, max_size=500),
    level=st.sampled_from(["informational", "low", "medium", "high", "critical"]),
)
def test_any_strings_give_a_valid_card_under_the_limit(
    user: str, url: str, title: str, level: str
) -> None:
    alert = hostile_alert(user, url, title).model_copy(update={"level": level})
    message = teams_card(alert, link_template="https://soc.example/a/{alert_id}")
    assert len(orjson.dumps(message)) <= MAX_CARD_BYTES
    validator().validate(card_of(message))


@given(st.text(max_size=500))
def test_cleaned_text_is_one_bounded_line_without_live_markup(value: str) -> None:
    out = clean(value, 100)
    assert "\n" not in out and "\r" not in out
    assert len(out) <= 100 * 2 + 10  # escapes at most double the kept characters
    assert "http://" not in out.lower() and "https://" not in out.lower()
    assert "{{" not in out


def test_shared_schema_path_is_the_one_the_issue_names() -> None:
    assert Path(SHARED, "schemas", "adaptive-card-1.5.json").name == "adaptive-card-1.5.json"
    # A card the schema must reject proves the validator is really checking.
    with pytest.raises(jsonschema.ValidationError):
        validator().validate({"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "Nope"}]})


CONSOLE = "https://soc.city.example.lg.jp/zonewatch/"


def test_cards_open_the_alert_in_the_console_when_its_public_url_is_set() -> None:
    alert = make_alert(1)
    card = card_of(teams_card(alert, console_url=CONSOLE))
    validator().validate(card)
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "コンソールで開く / Open in console",
            "url": f"https://soc.city.example.lg.jp/zonewatch/alerts/{alert.id}",
        }
    ]
    both = card_of(
        teams_card(alert, console_url=CONSOLE, link_template="https://x.example/{alert_id}")
    )
    validator().validate(both)
    assert [a["title"] for a in both["actions"]] == [
        "アラートを開く / Open",
        "コンソールで開く / Open in console",
    ]
    assert "actions" not in card_of(teams_card(alert))
    digest = card_of(digest_card([make_alert(i) for i in range(6)], console_url=CONSOLE))
    validator().validate(digest)
    assert digest["actions"][0]["url"] == f"{CONSOLE}alerts?status=new"
    legacy = message_card(alert, console_url=CONSOLE)
    assert legacy["potentialAction"][0]["targets"][0]["uri"].endswith(f"/alerts/{alert.id}")


def test_a_card_with_the_console_action_still_fits_under_the_teams_limit() -> None:
    giant = "悪" * 50_000
    alert = make_alert(1).model_copy(
        update={"rule_title": giant, "group": {f"k{i}": giant for i in range(50)}}
    )
    message = teams_card(alert, console_url=CONSOLE + "x" * 1000)
    assert len(orjson.dumps(message)) <= MAX_CARD_BYTES < TEAMS_LIMIT
    card = card_of(message)
    validator().validate(card)
    assert card["actions"][0]["title"] == "コンソールで開く / Open in console"
