"""What every VDI format shares: the event skeleton, the vdi-* actions and their
outcomes, field setters and case-insensitive keys.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from connectors import timeparse
from connectors.base import ParseContext

# VDI logs repeat the same second many times (and Citrix ADC lines carry
# three stamps); parsing an ISO stamp is pure, so a cache spares the regex.
parse_iso = lru_cache(maxsize=8192)(timeparse.parse_iso)

SOURCE = "vdi"


def _base(ts: str, original: str, ctx: ParseContext, vendor: str, product: str) -> dict[str, Any]:
    return {
        "@timestamp": ts,
        "event": {
            "kind": "event",
            "category": ["session"],
            "original": original,
            "dataset": SOURCE,
            "module": ctx.format,
        },
        "observer": {"vendor": vendor, "product": product},
    }


_OUTCOME_BY_ACTION = {
    "vdi-login": "success",
    "vdi-connect": "success",
    "vdi-disconnect": "success",
    "vdi-logout": "success",
    "vdi-login-failed": "failure",
}
_TYPE_BY_ACTION = {
    "vdi-login": ["start"],
    "vdi-connect": ["start"],
    "vdi-disconnect": ["end"],
    "vdi-logout": ["end"],
    "vdi-login-failed": ["start"],
}


def _set_action(ev: dict[str, Any], action: str) -> None:
    ev["event"]["action"] = action
    if action in _OUTCOME_BY_ACTION:
        ev["event"]["outcome"] = _OUTCOME_BY_ACTION[action]
        ev["event"]["type"] = _TYPE_BY_ACTION[action]
        if action in ("vdi-login", "vdi-login-failed"):
            ev["event"]["category"] = ["authentication", "session"]
    else:
        ev["event"]["type"] = ["info"]


def _put(ev: dict[str, Any], section: str, key: str, value: Any) -> None:
    """Set a field from a record's value; objects, arrays and empty values
    are not field values and are left out."""
    if value is None or value == "":
        return
    kind = type(value)
    if kind is dict or kind is list:
        return
    ev.setdefault(section, {})[key] = value


def _split_hostport(value: str) -> tuple[str, int | None]:
    """``1.2.3.4:5`` / ``[::1]:5`` / bare address -> (ip, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port) if port.isdigit() else None
    return value, None


# A stream repeats a few key spellings (and JSON records one key order), so the
# folded keys are cached: by key tuple for whole records, by key for pairs.
# Both caches are bounded; keys beyond that are folded every time.
_CI_CACHE_MAX = 1024
_ci_keys: dict[tuple[str, ...], tuple[str, ...]] = {}
_ci_key: dict[str, str] = {}


def _fold(key: str) -> str:
    folded = key.replace("_", "").lower()
    if len(_ci_key) < _CI_CACHE_MAX:
        _ci_key[key] = folded
    return folded


def _ci(d: dict[str, Any]) -> dict[str, Any]:
    """Keys lower-cased without ``_``, so EventType, eventType and event_type meet."""
    keys = tuple(d)
    folded = _ci_keys.get(keys)
    if folded is None:
        folded = tuple(k.replace("_", "").lower() for k in keys)
        if len(_ci_keys) < _CI_CACHE_MAX:
            _ci_keys[keys] = folded
    return dict(zip(folded, d.values(), strict=True))


def _ci_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``_ci`` for ``key="value"`` pairs as found by a regex."""
    get = _ci_key.get
    return {(get(k) or _fold(k)): v for k, v in pairs}


def _first(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = d.get(key)
        if value not in (None, ""):
            return value
    return None
