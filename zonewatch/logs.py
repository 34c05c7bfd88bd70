"""structlog set-up: JSON lines in production, pretty output on a terminal.

Secrets never reach a log: webhook URLs and credentials are redacted by key
name before rendering, whatever code path logged them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("url", "password", "secret", "token", "webhook", "authorization")
_SAFE_KEYS = frozenset({"url_domain", "url.full"})


def _redact(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        lowered = key.lower()
        if lowered in _SAFE_KEYS:
            continue
        if any(word in lowered for word in _SECRET_KEYS):
            event_dict[key] = "***"
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing, so a
    logger configured once keeps working when stderr is swapped (test
    capture, daemonizing) instead of writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once per process.

    ``json=None`` picks JSON when stderr is not a TTY (services, CI, pipes).
    """
    if json is None:
        json = not sys.stderr.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # kafka-python logs through stdlib logging, and logs every failed
    # connection attempt as an ERROR: zonewatch reports what went wrong in
    # its own words (one line, with the fix), so kafka-python's own lines
    # show only with --log-level debug.
    logging.basicConfig(level=logging.WARNING if numeric > logging.DEBUG else logging.DEBUG)
    logging.getLogger("kafka").setLevel(
        logging.CRITICAL if numeric > logging.DEBUG else logging.DEBUG
    )


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)
