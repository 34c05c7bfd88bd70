from __future__ import annotations

import json
from pathlib import Path

import orjson
from click.testing import CliRunner

from tests.graph_double import GraphDouble, audit_event
from zonewatch.app.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml"),
        "ZONEWATCH_CONNECTORS__CHECKPOINT_DIR": str(tmp_path / "cp"),
        "ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS": "off",  # recorded days
        **extra,
    }


def test_parse_prints_ndjson_and_reports_bad_lines(shared_dir: Path, tmp_path: Path) -> None:
    golden = shared_dir / "samples/golden/citrix_adc/test-citrix-log-ica-prefixes-sample.json"
    lines = [e["message"] for e in json.loads(golden.read_text())["events"]][:3]
    path = tmp_path / "adc.log"
    path.write_text("".join(lines) + "this is not a citrix line\n")
    result = CliRunner().invoke(
        cli, ["parse", "--source", "vdi", "--format", "auto", str(path)], env=_env(tmp_path)
    )
    assert result.exit_code == 65
    events = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert [e["event"]["action"] for e in events] == [
        "vdi-disconnect", "vdi-disconnect", "vdi-connect",
    ]  # fmt: skip
    assert all(e["event"]["module"] == "citrix-adc" for e in events)
    detected, bad = (orjson.loads(x) for x in result.stderr.splitlines())
    # the file was sniffed once and stuck to: the odd line is refused by that format
    assert detected == {"input": str(path), "format_detected": "vdi/citrix-adc", "line": 1}
    assert bad["line"] == 4 and bad["raw"] == "this is not a citrix line"
    assert bad["format"] == "citrix-adc" and "not a Citrix ADC syslog line" in bad["reason"]


def test_parse_timezone_flag_applies_to_lines_without_offset(tmp_path: Path) -> None:
    row = {"EventType": "AGENT_ENDED", "Time": "2026-03-02 09:00:00", "UserSID": "S-1-5-21-x"}
    path = tmp_path / "h.json"
    path.write_text(json.dumps(row) + "\n")
    args = ["parse", "--source", "vdi", "--format", "horizon", "--timezone", "UTC", str(path)]
    result = CliRunner().invoke(cli, args, env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["@timestamp"] == "2026-03-02T09:00:00.000Z"


def test_ingest_needs_exactly_one_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ingest", "vdi", "--format", "horizon"], env=_env(tmp_path))
    assert result.exit_code == 2
    assert "exactly one input" in result.output


def test_ingest_graph_once_into_kafka(tmp_path: Path, kafka_settings) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    events = [audit_event(i, f"2026-03-02T00:00:0{i}Z") for i in range(4)]
    with GraphDouble(events, page_size=3) as double:
        env = _env(
            tmp_path,
            KAFKA_BOOTSTRAP_SERVERS=str(kafka_settings.bootstrap_servers),
            ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka_settings.topic_prefix,
        )
        args = [
            "ingest", "intune", "--format", "graph", "--graph", "--once",
            "--graph-tenant-id", "t", "--graph-client-id", double.client_id,
            "--graph-client-secret-file", str(secret), "--graph-base-url", double.url,
            "--graph-token-url", f"{double.url}/token", "--graph-since", "2026-03-01T00:00:00Z",
        ]  # fmt: skip
        first = CliRunner().invoke(cli, args, env=env)
        assert first.exit_code == 0, first.output
        assert "produced 4 events" in first.stdout
        events.append(audit_event(9, "2026-03-02T00:00:09Z"))
        second = CliRunner().invoke(cli, args, env=env)
        assert "produced 1 events" in second.stdout  # the high-water mark persisted


def test_parse_identity_auto_reads_sign_ins_and_m365_audit(tmp_path: Path) -> None:
    data = ROOT / "tests" / "data" / "identity"
    path = tmp_path / "identity.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(json.loads((data / f"{name}.json").read_text()), ensure_ascii=False)
            for name in ("eventhub_signins_batch", "m365_content_blob")
        )
        + "\n"
    )
    result = CliRunner().invoke(
        cli, ["parse", "--source", "identity", "--format", "auto", str(path)], env=_env(tmp_path)
    )
    assert result.exit_code == 0, result.output
    events = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert len(events) == 3 + 10
    assert {e["event"]["module"] for e in events} == {"signins", "m365-audit"}
    formats = CliRunner().invoke(cli, ["parse", "--source", "identity", "--list-formats"])
    assert "signins" in formats.stdout and "m365-audit" in formats.stdout


def test_ingest_identity_signins_from_graph_once_into_kafka(tmp_path: Path, kafka_settings) -> None:
    from tests.cloud_double import CloudDouble

    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    with CloudDouble(page_size=2) as double:
        double.signins = [
            {"id": f"s{i}", "createdDateTime": f"2026-11-26T00:0{i}:00Z", "appId": "a",
             "userPrincipalName": "sato.kenji@city.example.lg.jp", "ipAddress": "192.0.2.4",
             "status": {"errorCode": 0}}
            for i in range(3)
        ]  # fmt: skip
        env = _env(
            tmp_path,
            KAFKA_BOOTSTRAP_SERVERS=str(kafka_settings.bootstrap_servers),
            ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka_settings.topic_prefix,
        )
        args = [
            "ingest", "identity", "--format", "signins", "--graph", "--once",
            "--graph-tenant-id", "t", "--graph-client-id", double.client_id,
            "--graph-client-secret-file", str(secret), "--graph-base-url", double.url,
            "--graph-token-url", f"{double.url}/token", "--graph-since", "2026-11-26T00:00:00Z",
        ]  # fmt: skip
        first = CliRunner().invoke(cli, args, env=env)
        assert first.exit_code == 0, first.output
        assert "produced 3 events" in first.stdout
        second = CliRunner().invoke(cli, args, env=env)
        assert "produced 0 events" in second.stdout  # checkpointed
        wrong = CliRunner().invoke(cli, [*args[:3], "fortigate", *args[4:]], env=env)
        assert wrong.exit_code == 2 and "nothing to pull" in wrong.output
