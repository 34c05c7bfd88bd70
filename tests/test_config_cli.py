"""``zonewatch config show [--defaults]`` and the generated settings reference."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from zonewatch_cli import run_zonewatch

from zonewatch.config import load_settings
from zonewatch.settings_doc import reference_markdown, settings_info


def _show(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_zonewatch(*args, env=env, timeout=60)


def test_config_show_names_each_value_s_source_and_masks_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "kafka_password"
    secret_file.write_text("correct-horse\n")
    graph_secret = tmp_path / "graph_client_secret"
    graph_secret.write_text("battery-staple\n")
    config = tmp_path / "zonewatch.yaml"
    config.write_text("correlator:\n  group_id: city-soc\nkafka:\n  partitions: 6\n")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093,kafka-2:9093",
        "ZONEWATCH_KAFKA__PARTITIONS": "12",
        "ZONEWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "ZONEWATCH_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "ZONEWATCH_KAFKA__SASL_USERNAME": "zonewatch-correlator",
        "ZONEWATCH_KAFKA__SASL_PASSWORD_FILE": str(secret_file),
        "ZONEWATCH_TEAMS__WEBHOOK_URL": "https://prod-00.japaneast.logic.azure.com/workflows/x",
        "ZONEWATCH_GRAPH_TENANT_ID": "tenant-1",
        "ZONEWATCH_GRAPH_CLIENT_SECRET_FILE": str(graph_secret),
    }
    done = _show("--config", str(config), "config", "show", "--json", env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["kafka.bootstrap_servers"] == {
        "value": "kafka-1:9093,kafka-2:9093",
        "source": "env KAFKA_BOOTSTRAP_SERVERS",
    }
    assert shown["kafka.partitions"] == {"value": "12", "source": "env ZONEWATCH_KAFKA__PARTITIONS"}
    assert shown["correlator.group_id"] == {"value": "city-soc", "source": f"file {config}"}
    assert shown["correlator.db_path"] == {"value": "var/zonewatch.duckdb", "source": "default"}
    assert shown["kafka.sasl_password"]["source"].endswith("ZONEWATCH_KAFKA__SASL_PASSWORD_FILE")
    assert (
        shown["kafka.sasl_password"]["value"] == shown["teams.webhook_url"]["value"] == "********"
    )
    assert shown["graph.tenant_id"]["source"] == "env ZONEWATCH_GRAPH_TENANT_ID"
    assert shown["graph.client_secret"] == {
        "value": "********",
        "source": "file named by env ZONEWATCH_GRAPH_CLIENT_SECRET_FILE",
    }
    table = _show("--config", str(config), "config", "show", env=env)
    for text in (done.stdout, table.stdout, table.stderr):
        assert "correct-horse" not in text and "logic.azure.com" not in text
        assert "battery-staple" not in text
    assert {row["value"] for row in shown.values()} - {"********"}  # not everything masked

    defaults = _show("config", "show", "--defaults", "--json", env=env)
    assert json.loads(defaults.stdout)["kafka.partitions"] == {"value": "3", "source": "default"}


def test_a_secret_read_from_a_file_reaches_kafka_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")
    monkeypatch.setenv("ZONEWATCH_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9093")
    monkeypatch.setenv("ZONEWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("ZONEWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("ZONEWATCH_KAFKA__SASL_USERNAME", "zonewatch")
    monkeypatch.setenv("ZONEWATCH_KAFKA__SASL_PASSWORD_FILE", str(secret))
    kwargs = load_settings().kafka.client_kwargs()
    assert kwargs["sasl_plain_password"] == "s3cret-from-file"


def test_every_setting_is_described() -> None:
    missing = [info.name for info in settings_info() if not info.description.strip()]
    assert not missing, f"describe these in zonewatch/settings_doc.py DESCRIPTIONS: {missing}"


def test_the_settings_reference_in_docs_is_up_to_date() -> None:
    on_disk = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert on_disk == reference_markdown(), (
        "docs/settings.md is stale: run `zonewatch config reference > docs/settings.md`"
    )
    for info in settings_info():
        assert f"`{info.env}`" in on_disk


def test_a_section_or_mapping_given_whole_names_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zonewatch.settings_doc import effective

    config = tmp_path / "zonewatch.yaml"
    config.write_text("correlator:\n  sources:\n    intune: {max_delivery_delay_s: 120}\n")
    env = {
        "ZONEWATCH_CORRELATOR": '{"max_batch": 500}',
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": "city",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)
    shown = {name: (value, source) for name, value, source in effective(settings, config, env)}
    assert shown["correlator.max_batch"] == ("500", "env ZONEWATCH_CORRELATOR")
    assert shown["correlator.sources"][1] == f"file {config}"
    assert "120" in shown["correlator.sources"][0]
    assert shown["kafka.topic_prefix"] == ("city", "env ZONEWATCH_KAFKA__TOPIC_PREFIX")
    assert shown["correlator.group_id"][1] == "default"
