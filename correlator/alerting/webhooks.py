"""Webhook destinations, their URLs (from env or a secrets file) and routing.

A webhook URL is a credential (Workflows URLs carry a signature in their
query string), so it lives only in memory: never in the store, never in a
log line (logs name the destination and host), never in an exception text.

Routing file (YAML), all keys optional::

    destinations:            # name -> options; URLs come from the secrets
      soc: {digest_threshold: 5, digest_max: 20}
      legacy: {format: messagecard}
    routes:                  # every matching route adds its destinations
      - {levels: [high, critical], to: [soc]}
      - {crossings: ["core->internet"], tags: [attack.exfiltration], to: [soc, legacy]}
    fallback: [default]      # when no route matches (hunt hits are not sent
                             # unless a route lists origins: [hunt])

URL sources, first found wins: environment ``ZONEWATCH_WEBHOOK_<NAME>``; the
secrets file (``name: url`` YAML, or one bare URL meaning ``default``);
``settings.teams.webhook_url`` for ``default``.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import yaml

from zonewatch import bounded_yaml
from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger, register_secret
from zonewatch.models import Alert

log = get_logger(__name__)

CardFormat = Literal["adaptive", "messagecard"]
_LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_webhook_url(url: str, name: str = "default") -> str:
    """Return ``url`` if it is an acceptable webhook, else raise ConfigError.

    HTTPS only (plain HTTP is allowed to loopback, for the local receiver);
    no user:password in the URL. The error never repeats the URL itself.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ConfigError(f"webhook {name!r}: not a valid URL") from exc
    if not host:
        raise ConfigError(f"webhook {name!r}: the URL has no host")
    if parts.username or parts.password:
        raise ConfigError(
            f"webhook {name!r}: the URL carries user:password credentials; use the "
            "Workflows URL Teams gives you (its signature is in the query string)"
        )
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _is_loopback(host):
        return url
    raise ConfigError(f"webhook {name!r}: must be an https:// URL (got scheme {parts.scheme!r})")


class WebhookUrl:
    """A validated webhook URL whose text never appears in repr/str."""

    __slots__ = ("_url", "host", "name")

    def __init__(self, name: str, url: str) -> None:
        self._url = validate_webhook_url(url, name)
        self.name = name
        parts = urlsplit(self._url)
        self.host = parts.hostname or "?"
        # httpx logs every request's URL at debug level; whatever logs it, or
        # a piece of it, shows *** instead (zonewatch.logs).
        register_secret(self._url)
        register_secret(parts.path + ("?" + parts.query if parts.query else ""))
        for value in parse_qs(parts.query).get("sig", []):
            register_secret(value)

    def secret(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"WebhookUrl({self.name!r}, host={self.host!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class Destination:
    name: str
    format: CardFormat = "adaptive"
    requests_per_second: float | None = None  # None: the sender's default (4/s)
    # When more than digest_threshold alerts wait, up to digest_max of them go
    # out as one card: a burst should not bury the channel (or hit 429s).
    digest_threshold: int | None = None
    digest_max: int = 20


@dataclass(frozen=True)
class Route:
    to: tuple[str, ...]
    levels: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    crossings: frozenset[str] = frozenset()
    origins: frozenset[str] = frozenset({"stream", "match"})

    def matches(self, alert: Alert) -> bool:
        if alert.origin not in self.origins:
            return False
        if self.levels and alert.level.lower() not in self.levels:
            return False
        if self.tags and not self.tags.intersection(t.lower() for t in alert.tags):
            return False
        return not self.crossings or (alert.zone_crossing or "").lower() in self.crossings


@dataclass(frozen=True)
class Routing:
    destinations: Mapping[str, Destination] = field(
        default_factory=lambda: {"default": Destination("default")}
    )
    routes: tuple[Route, ...] = ()
    fallback: tuple[str, ...] = ("default",)

    def __call__(self, alert: Alert) -> Sequence[str]:
        """Destinations for ``alert`` (usable as the store's router)."""
        chosen: dict[str, None] = {}
        for route in self.routes:
            if route.matches(alert):
                chosen.update(dict.fromkeys(route.to))
        if not chosen and alert.origin != "hunt":
            chosen.update(dict.fromkeys(self.fallback))
        return tuple(chosen)

    def destination(self, name: str) -> Destination:
        return self.destinations.get(name) or Destination(name)


def _lower_set(values: Iterable[Any] | None) -> frozenset[str]:
    return frozenset(str(v).lower() for v in values or ())


def routing_from_dict(data: Mapping[str, Any], source: str = "<routing>") -> Routing:
    try:
        dests = {
            str(name): Destination(name=str(name), **(opts or {}))
            for name, opts in (data.get("destinations") or {}).items()
        }
        routes = tuple(
            Route(
                to=tuple(str(t) for t in r["to"]),
                levels=_lower_set(r.get("levels")),
                tags=_lower_set(r.get("tags")),
                crossings=_lower_set(r.get("crossings")),
                origins=_lower_set(r.get("origins")) or frozenset({"stream", "match"}),
            )
            for r in data.get("routes") or ()
        )
        fallback = tuple(str(f) for f in data.get("fallback", ["default"]) or ())
    except (TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"{source}: invalid routing ({exc}); see correlator.alerting.webhooks"
        ) from exc
    for name in {n for r in routes for n in r.to} | set(fallback):
        dests.setdefault(name, Destination(name))
    return Routing(destinations=dests, routes=routes, fallback=fallback)


def load_routing(path: Path | str) -> Routing:
    path = Path(path)
    try:
        data = bounded_yaml.safe_load(bounded_yaml.read_text(path)) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read routing file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"routing file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"routing file {path} must hold a mapping")
    return routing_from_dict(data, str(path))


def read_secrets_file(path: Path | str) -> dict[str, str]:
    """``name: url`` pairs (YAML) or one bare URL for ``default``."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = bounded_yaml.read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the webhook secrets file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"webhook secrets file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets_file_readable_by_others", file=str(path), fix="chmod 600")
    stripped = text.strip()
    if stripped and "\n" not in stripped and stripped.startswith(("https://", "http://")):
        return {"default": stripped}
    try:
        data = bounded_yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"webhook secrets file {path} is not YAML name: url pairs") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"webhook secrets file {path} must map destination names to URLs")
    return {str(k): str(v) for k, v in data.items()}


def resolve_webhooks(
    names: Iterable[str],
    *,
    secrets_file: Path | str | None = None,
    default_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, WebhookUrl]:
    """URLs for ``names``; ConfigError naming every destination without one."""
    env = os.environ if environ is None else environ
    from_file = read_secrets_file(secrets_file) if secrets_file else {}
    found: dict[str, WebhookUrl] = {}
    missing = []
    for name in names:
        key = "ZONEWATCH_WEBHOOK_" + "".join(c if c.isalnum() else "_" for c in name.upper())
        url = env.get(key) or from_file.get(name) or (default_url if name == "default" else None)
        if not url:
            missing.append(f"{name} (set {key} or add it to the secrets file)")
            continue
        found[name] = WebhookUrl(name, url)
    if missing:
        raise ConfigError("no webhook URL for: " + "; ".join(missing))
    return found
