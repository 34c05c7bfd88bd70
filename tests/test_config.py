"""Settings: precedence, Kafka security options, clear errors, no secrets in logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from zonewatch.config import KafkaSettings, load_settings
from zonewatch.errors import ConfigError
from zonewatch.logs import _redact


def test_environment_wins_over_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "zonewatch.yaml"
    cfg.write_text("correlator:\n  group_id: from-file\n  max_batch: 50\nkafka:\n  partitions: 6\n")
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__GROUP_ID", "from-env")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = load_settings(cfg)
    assert settings.correlator.group_id == "from-env"
    assert settings.correlator.max_batch == 50
    assert settings.kafka.partitions == 6
    assert settings.kafka.client_kwargs()["bootstrap_servers"] == ["kafka-1:9092", "kafka-2:9092"]


def test_toml_config_files_work_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    cfg = tmp_path / "zonewatch.toml"
    cfg.write_text('[connectors]\ntimezone = "UTC"\n')
    assert load_settings(cfg).connectors.timezone == "UTC"


def test_sasl_scram_settings_reach_kafka_python() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="zonewatch",
        sasl_password="s3cret",
        ssl_cafile=Path("/etc/ssl/city-ca.pem"),
    )
    kwargs = kafka.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["ssl_cafile"] == "/etc/ssl/city-ca.pem"
    assert "s3cret" not in repr(kafka)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kafka:\n  security_protocol: SASL_SSL\n", "needs sasl_mechanism"),
        ("kafka:\n  partitions: 0\n", "invalid setting kafka.partitions"),
        ("correlator:\n  colour: red\n", "invalid setting correlator.colour"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("kafka: [unclosed\n", "not valid yaml"),
    ],
)
def test_bad_settings_name_what_to_fix(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg)


def test_missing_bootstrap_servers_explains_how_to_get_a_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(ConfigError, match="zonewatch broker"):
        load_settings().kafka.client_kwargs()


def test_secrets_are_redacted_from_log_lines() -> None:
    url = "https://city.webhook.office.com/webhookb2/abc@def/IncomingWebhook/123/456"
    with capture_logs(processors=[_redact]) as logs:
        import structlog

        structlog.get_logger().info("posting", webhook_url=url, sasl_password="pw", rule="x")
    assert logs[0]["webhook_url"] == "***"
    assert logs[0]["sasl_password"] == "***"
    assert logs[0]["rule"] == "x"


def test_updated_settings_are_validated_and_keep_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZONEWATCH_TEAMS__WEBHOOK_URL", "https://example.webhook.office.com/x")
    settings = load_settings()
    changed = settings.updated(correlator={"db_path": Path("/srv/zw.duckdb"), "max_batch": 10})
    assert changed.correlator.db_path == Path("/srv/zw.duckdb")
    assert changed.correlator.max_batch == 10
    assert changed.correlator.group_id == settings.correlator.group_id
    assert changed.teams.webhook_url is not None
    assert changed.teams.webhook_url.get_secret_value().endswith("/x")
    with pytest.raises(ConfigError, match=r"invalid setting correlator\.max_batch"):
        settings.updated(correlator={"max_batch": 0})
