"""The vendor-neutral allowed/blocked fields every gateway format sets."""

from __future__ import annotations

from typing import Any


def _decide_web(event: dict[str, Any], blocked: bool) -> None:
    """Set the vendor-neutral allowed/blocked fields on ``event`` (fresh lists
    per event: a later stage may extend them)."""
    event["category"] = ["network", "web"]
    event["action"] = "blocked" if blocked else "allowed"
    event["outcome"] = "failure" if blocked else "success"
    event["type"] = ["access", "denied" if blocked else "allowed"]
