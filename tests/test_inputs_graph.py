from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.inputs.graph import GraphError, GraphInput
from tests.graph_double import GraphDouble, audit_event
from zonewatch.config import GraphSettings, load_settings
from zonewatch.errors import ConfigError


def _events() -> list[dict]:
    # two share a timestamp, so the high-water mark alone cannot tell them apart
    times = [f"2026-03-02T00:00:0{i // 2}Z" for i in range(8)]
    return [audit_event(i, t) for i, t in enumerate(times)]


def _settings(double: GraphDouble, **kw) -> GraphSettings:
    return GraphSettings(
        tenant_id="t", client_id=double.client_id, client_secret=double.client_secret,
        base_url=double.url, token_url=f"{double.url}/token", once=True,
        lookback_s=10 * 365 * 86400, **kw,
    )  # fmt: skip


def _ids(records) -> list[str]:
    return [orjson.loads(r.data)["id"] for r in records if r is not None]


def test_pages_and_retry_after_are_followed() -> None:
    with GraphDouble(_events(), page_size=3, throttle=2) as double:
        source = GraphInput(_settings(double))
        assert _ids(source) == [f"evt-{i}" for i in range(8)]
        assert source.retries == 2
        assert double.tokens_issued == 1
        assert sum("skiptoken" in p for p in double.requests) == 2


def test_restart_mid_poll_neither_repeats_nor_skips() -> None:
    events = _events()
    with GraphDouble(events, page_size=2) as double:
        first = GraphInput(_settings(double))
        it = iter(first)
        got = [orjson.loads(next(it).data)["id"] for _ in range(3)]  # crash after 3
        cp = orjson.loads(orjson.dumps(first.checkpoint()))
        second = GraphInput(_settings(double))
        second.restore(cp)
        got += _ids(second)
        assert got == [f"evt-{i}" for i in range(8)]
        # next poll after new events: only the new ones
        events.append(audit_event(8, "2026-03-02T00:00:09Z"))
        third = GraphInput(_settings(double))
        third.restore(second.checkpoint())
        assert _ids(third) == ["evt-8"]


def test_bad_credentials_say_what_to_fix(tmp_path: Path) -> None:
    with GraphDouble(_events()) as double:
        bad = GraphSettings(
            tenant_id="t", client_id="wrong", client_secret="x", base_url=double.url,
            token_url=f"{double.url}/token", once=True,
        )  # fmt: skip
        with pytest.raises(GraphError, match="401"):
            list(GraphInput(bad))
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    env = {
        "ZONEWATCH_GRAPH_TENANT_ID": "t",
        "ZONEWATCH_GRAPH_CLIENT_ID": "c",
        "ZONEWATCH_GRAPH_CLIENT_SECRET_FILE": str(secret),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        s = load_settings().graph.check_complete()
    assert s.secret() == "s3cret" and "s3cret" not in repr(s)
    with pytest.raises(ConfigError, match="ZONEWATCH_GRAPH__CLIENT_SECRET_FILE"):
        GraphSettings(tenant_id="t", client_id="c").check_complete()
