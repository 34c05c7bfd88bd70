"""Secrets never reach a log, at any level, from any library (issue 20,
point 6): kafka-python logs its configuration with the SASL password at
debug level, httpx logs the URL of every request (a Teams webhook's URL is
its secret), and `--teams-url` puts the URL in the process list."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import string
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from correlator.alerting.teams_receiver import TeamsReceiver
from tests.conftest import ROOT
from tests.test_query_live import direct_crossing
from zonewatch.config import KafkaSettings
from zonewatch.logs import MASK, configure_logging, get_logger, redact_text, register_secret

PASSWORD = "Tr0ub4dor&3-kafka-" + secrets.token_hex(4)
TEMPLATES = (
    "Starting KafkaAdminClient with configuration: {{'sasl_mechanism': 'PLAIN', "
    "'sasl_plain_username': 'zw', 'sasl_plain_password': '{s}', 'request_timeout_ms': 100}}",
    "password={s} and more",
    '{{"client_secret": "{s}", "tenant": "x"}}',
    "Authorization: Bearer {s}",
    "POST https://prod-27.japaneast.logic.azure.com:443/workflows/{s}/triggers/manual/paths/"
    "invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={s}",
    'HTTP Request: POST http://127.0.0.1:8080/x?sv=1.0&sig={s} "HTTP/1.1 202 Accepted"',
    "connecting to https://zonewatch:{s}@kafka.city.example.lg.jp:9093",
)


def workflows_url(base: str) -> tuple[str, str]:
    """A Workflows webhook URL as Teams hands it out; its signature."""
    sig = secrets.token_urlsafe(32)
    flow = uuid.uuid4().hex
    return (
        f"{base}/workflows/{flow}/triggers/manual/paths/invoke"
        f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}",
        sig,
    )


@given(
    secret=st.text(string.ascii_letters + string.digits + "-_.~+/=", min_size=8, max_size=40),
    template=st.sampled_from(TEMPLATES),
)
def test_recognisable_secrets_are_redacted_without_being_registered(
    secret: str, template: str
) -> None:
    text = template.format(s=secret)
    assert secret not in redact_text(text)


def test_registered_secrets_are_redacted_wherever_they_appear() -> None:
    value = "Zx9-" + secrets.token_hex(8)
    register_secret(value)
    assert redact_text(f"weird place: <{value}>") == f"weird place: <{MASK}>"


@pytest.mark.parametrize(
    "text",
    [
        "token_count=5 secrets_file=/etc/zonewatch/teams design: ok",
        "GET https://graph.microsoft.com/v1.0/deviceManagement/managedDevices?$top=999",
        "alert 3f2a9c01 sent to default (host=prod-27.japaneast.logic.azure.com)",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.fixture()
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    kafka_level = logging.getLogger("kafka").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(kafka_level)
    structlog.reset_defaults()


def test_every_library_logger_and_structlog_are_redacted_at_debug(capsys, restore_logging) -> None:
    url, sig = workflows_url("https://prod-27.japaneast.logic.azure.com:443")
    configure_logging("debug", json=True)
    logging.getLogger("httpx").info('HTTP Request: POST %s "HTTP/1.1 202 Accepted"', url)
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTPS connection %s", url)
    logging.getLogger("kafka.conn").debug("config %s", {"sasl_plain_password": PASSWORD})
    try:
        raise RuntimeError(f"cannot post to {url}")
    except RuntimeError:
        logging.getLogger("httpcore").exception("failed")
        get_logger("zonewatch.test").exception("post_failed", detail=f"to {url}")
    get_logger("zonewatch.test").info("kafka_config", extra=f"password={PASSWORD}")
    err = capsys.readouterr().err
    assert "HTTP Request: POST https://prod-27.japaneast.logic.azure.com:443/***" in err
    assert "post_failed" in err and "Traceback" in err
    for secret in (sig, url, PASSWORD, "/workflows/"):
        assert secret not in err


# -- through the real programs -------------------------------------------------


def kafka_env(bootstrap: str, prefix: str) -> dict[str, str]:
    return dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        ZONEWATCH_KAFKA__TOPIC_PREFIX=prefix,
        ZONEWATCH_LOG_JSON="true",
    )


@pytest.mark.integration
def test_the_sasl_password_stays_out_of_a_debug_log(kafka_bootstrap: str) -> None:
    env = kafka_env(kafka_bootstrap, f"zwtest-{uuid.uuid4().hex[:8]}")
    env.update(
        ZONEWATCH_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
        ZONEWATCH_KAFKA__SASL_MECHANISM="PLAIN",
        ZONEWATCH_KAFKA__SASL_USERNAME="zonewatch-correlator",
        ZONEWATCH_KAFKA__SASL_PASSWORD=PASSWORD,
    )
    # The embedded broker has no SASL listener: the clients log their
    # configuration, try, and give up (exit 69). The log is what matters.
    done = subprocess.run(
        [sys.executable, "-m", "zonewatch", "--log-level", "debug", "topics"],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 69, err[-2000:]
    assert "'sasl_plain_password': '***'" in err  # kafka-python did log its configuration
    assert PASSWORD not in err


@pytest.mark.integration
def test_the_webhook_url_stays_out_of_a_debug_log_and_the_flag_is_deprecated(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from zonewatch.kafka import ensure_topics, make_producer

    prefix = f"zwtest-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(kafka)
    log = tmp_path / "correlate.log"
    with TeamsReceiver() as teams, log.open("wb") as err:
        url, sig = workflows_url(teams.base_url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "zonewatch", "--log-level", "debug", "correlate",
             "--rules", str(ROOT / "tests" / "rules"), "--db", str(tmp_path / "zw.duckdb"),
             "--group-id", prefix, "--teams-url", url],
            env=kafka_env(kafka_bootstrap, prefix), cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
        try:
            producer = make_producer(kafka)
            producer.send(kafka.events_topic("firewall"), key=b"k", value=direct_crossing(1))
            producer.flush()
            producer.close()
            assert teams.wait_for_accepted(1, timeout=90), log.read_text()[-3000:]
            deadline = time.monotonic() + 30
            while b"HTTP Request: POST" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert "--teams-url is deprecated" in text
    assert "ZONEWATCH_TEAMS__SECRETS_FILE" in text and "ZONEWATCH_TEAMS_URL" in text
    posts = [line for line in text.splitlines() if "HTTP Request: POST" in line]
    assert posts and all(MASK in line for line in posts)  # httpx logged each post, redacted
    assert sig not in text and "/workflows/" not in text
