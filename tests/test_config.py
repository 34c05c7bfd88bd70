"""Settings: precedence, Kafka security options, clear errors, no secrets in logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from zonewatch.config import KafkaSettings, Settings, load_settings
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


def test_precedence_is_arguments_then_environment_then_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "zonewatch.yaml"
    cfg.write_text(
        "correlator:\n  group_id: file\n  max_batch: 50\n  poll_timeout_ms: 70\n"
        "kafka:\n  bootstrap_servers: file:9092\n"
    )
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__GROUP_ID", "env")
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__MAX_BATCH", "60")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "legacy:9092")
    settings = load_settings(cfg, correlator={"group_id": "argument"})
    assert settings.correlator.group_id == "argument"  # argument > env > file
    assert settings.correlator.max_batch == 60  # env > file
    assert settings.correlator.poll_timeout_ms == 70  # file > default
    assert settings.correlator.write_delay_s == 0.25  # default
    # The older names are environment too: above the file...
    assert settings.kafka.bootstrap_servers == "legacy:9092"
    # ...and below ZONEWATCH_<SECTION>__<NAME>.
    monkeypatch.setenv("ZONEWATCH_KAFKA__BOOTSTRAP_SERVERS", "new:9092")
    assert load_settings(cfg).kafka.bootstrap_servers == "new:9092"
    # ZONEWATCH_CONFIG names the file when no path is given; Settings() is the same build.
    monkeypatch.setenv("ZONEWATCH_CONFIG", str(cfg))
    assert load_settings().correlator.poll_timeout_ms == 70
    assert Settings().correlator.poll_timeout_ms == 70


def test_graph_and_teams_options_are_settings_under_their_old_names_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "graph_client_secret"
    secret.write_text("graph-s3cret\n")
    for name, value in {
        "ZONEWATCH_GRAPH_TENANT_ID": "tenant-1",
        "ZONEWATCH_GRAPH_CLIENT_ID": "app-1",
        "ZONEWATCH_GRAPH_CLIENT_SECRET_FILE": str(secret),
        "ZONEWATCH_M365_PUBLISHER_ID": "pub-1",
        "ZONEWATCH_TEAMS_URL": "https://example.webhook.office.com/old",
        "ZONEWATCH_GRAPH__M365_CONTENT_TYPES": "Audit.Exchange, Audit.General",
        "ZONEWATCH_QUERIES_DIR": str(tmp_path / "queries"),
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    graph = settings.graph.check_complete()
    assert (graph.tenant_id, graph.client_id, graph.m365_publisher_id) == (
        "tenant-1",
        "app-1",
        "pub-1",
    )
    assert graph.secret() == "graph-s3cret"
    assert graph.m365_content_types == ("Audit.Exchange", "Audit.General")
    assert graph.token_endpoint.endswith("/tenant-1/oauth2/v2.0/token")
    assert settings.correlator.queries_dir == tmp_path / "queries"
    assert settings.teams.webhook_url is not None
    assert settings.teams.webhook_url.get_secret_value().endswith("/old")
    for shown in (repr(settings), str(settings), repr(graph)):
        assert "graph-s3cret" not in shown and "webhook.office.com" not in shown
    monkeypatch.setenv("ZONEWATCH_TEAMS__WEBHOOK_URL", "https://example.webhook.office.com/new")
    monkeypatch.setenv("ZONEWATCH_GRAPH__TENANT_ID", "tenant-2")
    settings = load_settings()
    assert settings.graph.tenant_id == "tenant-2"
    assert settings.teams.webhook_url is not None
    assert settings.teams.webhook_url.get_secret_value().endswith("/new")


def test_a_config_file_names_secret_files_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    secret = tmp_path / "webhook"
    secret.write_text("https://example.webhook.office.com/from-file\n")
    cfg = tmp_path / "zonewatch.toml"
    cfg.write_text(f'[teams]\nwebhook_url_file = "{secret}"\n[graph]\ntenant_id = "t"\n')
    settings = load_settings(cfg)
    assert settings.teams.webhook_url is not None
    assert settings.teams.webhook_url.get_secret_value().endswith("/from-file")
    assert settings.graph.tenant_id == "t"
    cfg.write_text('[teams]\nwebhook_url_file = "/nonexistent/webhook"\n')
    with pytest.raises(ConfigError, match="cannot read /nonexistent/webhook"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match=r"--graph needs .*ZONEWATCH_GRAPH__CLIENT_ID"):
        load_settings().graph.check_complete()


def test_environment_lists_are_json_and_a_wrong_one_names_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__RULES", '["rules", "more-rules"]')
    assert load_settings().correlator.rules == [Path("rules"), Path("more-rules")]
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__RULES", "rules")
    with pytest.raises(ConfigError, match=r"invalid setting correlator\.rules"):
        load_settings()
