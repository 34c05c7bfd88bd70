"""/metrics and /healthz as an operator's scraper sees them."""

from __future__ import annotations

import httpx
from prometheus_client import Counter

from zonewatch.metrics import serve_metrics

PROBE = Counter("zonewatch_test_probe_total", "A counter only this test increments")


def test_metrics_and_health_endpoints_answer_on_loopback() -> None:
    healthy = {"ok": True}
    server = serve_metrics("127.0.0.1", 0, health=lambda: healthy["ok"])
    try:
        PROBE.inc(3)
        body = httpx.get(f"{server.url}/metrics").text
        assert "zonewatch_test_probe_total 3.0" in body
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        healthy["ok"] = False
        assert httpx.get(f"{server.url}/healthz").status_code == 503
        assert httpx.get(f"{server.url}/nope").status_code == 404
    finally:
        server.close()
