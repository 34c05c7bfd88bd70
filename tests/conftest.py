"""Shared fixtures: one Kafka broker per test session, paths to shared data.

The broker is the embedded tansu (real Kafka wire protocol) on a free
loopback port, unless KAFKA_BOOTSTRAP_SERVERS points at a real cluster.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zonewatch.config import KafkaSettings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
if not SHARED.exists():  # CI lays shared/ beside the clone
    SHARED = Path(os.environ.get("ZONEWATCH_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from zonewatch.app.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture()
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Settings with a unique topic prefix, so tests never see each other's data."""
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"zwtest-{uuid.uuid4().hex[:8]}",
        partitions=2,
    )


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def unlocked_store_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores opened in this test leave DuckDB's configuration unlocked, so the
    test can squeeze the memory limit mid-run as other work in the database
    would. A correlator's store locks it (no query can change a setting)."""
    from correlator.store import alert_store

    monkeypatch.setattr(
        alert_store,
        "_LOCKDOWN",
        tuple(s for s in alert_store._LOCKDOWN if "lock_configuration" not in s),
    )


def cli_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """The environment of a ``zonewatch`` subprocess on the test's broker and
    topics (``extra``: more ``ZONEWATCH_*`` settings)."""
    return dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers or "",
        ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        ZONEWATCH_KAFKA__PARTITIONS=str(kafka.partitions),
        **extra,
    )
