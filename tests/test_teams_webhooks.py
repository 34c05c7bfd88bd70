"""Webhook URLs (validation, env, secrets file) and routing configuration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from correlator.alerting.webhooks import (
    load_routing,
    read_secrets_file,
    resolve_webhooks,
    validate_webhook_url,
)
from tests.test_store import make_alert
from zonewatch.config import TeamsSettings
from zonewatch.errors import ConfigError

WORKFLOW = (
    "https://prod-27.japaneast.logic.azure.com:443/workflows/0f1e2d/triggers/manual/paths/"
    "invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Zx9-secretsig"
)


@pytest.mark.parametrize(
    "url",
    [WORKFLOW, "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/x"],
)
def test_acceptable_webhooks(url: str) -> None:
    assert validate_webhook_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://teams.example.com/hook", "must be an https"),
        ("ftp://example.com/x", "must be an https"),
        ("https://user:pass@example.com/hook", "user:password"),
        ("https:///nohost", "no host"),
        ("https://example.com:notaport/x", "not a valid URL"),
    ],
)
def test_bad_webhooks_are_refused_without_echoing_them(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        validate_webhook_url(url, "soc")
    assert url not in str(err.value) and "'soc'" in str(err.value)


def test_env_beats_secrets_file_beats_settings(tmp_path: Path) -> None:
    secrets = tmp_path / "teams.yaml"
    secrets.write_text(f"soc: {WORKFLOW}\nciso: https://ciso.example.jp/hook\n", encoding="utf-8")
    secrets.chmod(0o600)
    env = {"ZONEWATCH_WEBHOOK_CISO": "https://override.example.jp/hook"}
    found = resolve_webhooks(
        ["soc", "ciso", "default"],
        secrets_file=secrets,
        default_url="https://default.example.jp/hook",
        environ=env,
    )
    assert found["soc"].secret() == WORKFLOW
    assert found["ciso"].host == "override.example.jp"
    assert found["default"].host == "default.example.jp"


def test_missing_urls_are_all_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"soc .*ZONEWATCH_WEBHOOK_SOC.*; ciso-jp .*CISO_JP"):
        resolve_webhooks(["soc", "ciso-jp"], environ={})


def test_secrets_file_with_one_bare_url_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "webhook.url"
    path.write_text(WORKFLOW + "\n", encoding="utf-8")
    path.chmod(0o600)
    assert read_secrets_file(path) == {"default": WORKFLOW}


def test_world_readable_secrets_file_is_warned_about(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    path = tmp_path / "webhook.url"
    path.write_text(WORKFLOW, encoding="utf-8")
    path.chmod(0o644)
    with capture_logs() as logs:
        read_secrets_file(path)
    assert [e["fix"] for e in logs if e["event"] == "secrets_file_readable_by_others"] == [
        "chmod 600"
    ]
    assert "secretsig" not in repr(logs)


def test_settings_url_becomes_the_default_destination() -> None:
    from correlator.alerting import OutboxSender

    teams = TeamsSettings(webhook_url=WORKFLOW, requests_per_second=2, timeout_s=3)

    class _Store:
        path = Path("x")

        def on_commit(self, _cb: object) -> None:
            pass

    sender = OutboxSender.from_settings(_Store(), teams)  # type: ignore[arg-type]
    assert list(sender.webhooks) == ["default"]
    assert (sender.requests_per_second, sender.timeout_s) == (2, 3)


def test_routing_file(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "destinations:\n  soc: {digest_threshold: 5}\n"
        "routes:\n"
        "  - {levels: [HIGH, critical], to: [soc]}\n"
        "  - {crossings: ['core->lgwan'], to: [lgwan-team]}\n"
        "  - {origins: [hunt], to: [hunters]}\n"
        "fallback: [soc]\n",
        encoding="utf-8",
    )
    routing = load_routing(path)
    assert routing.destination("soc").digest_threshold == 5
    high = make_alert(1)
    low_lgwan = replace(high, level="low", zone_crossing="core->lgwan")
    hunt = replace(high, origin="hunt", level="low", zone_crossing=None)
    assert routing(high) == ("soc",)
    assert routing(low_lgwan) == ("lgwan-team",)
    assert routing(hunt) == ("hunters",)
    assert set(routing.destinations) == {"soc", "lgwan-team", "hunters"}


def test_bad_routing_file_says_where(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("routes:\n  - {levels: [high]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"routing\.yaml: invalid routing"):
        load_routing(path)
