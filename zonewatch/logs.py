"""structlog set-up: JSON lines in production, pretty output on a terminal.

Secrets never reach a log, whichever library logs them and at whatever
level. Redaction happens at the logging boundary, for structlog and for every
stdlib logger (kafka-python, httpx, httpcore, urllib3 ...):

- structlog: values of keys that name a secret (``password``, ``url``,
  ``token`` ...) are replaced, and every string value is scrubbed;
- stdlib: a LogRecord factory scrubs each record's message as it is made,
  for every handler, and the handler zonewatch installs scrubs the formatted
  text again (tracebacks included).

Scrubbing replaces the values registered with :func:`register_secret` (the
SASL password, every webhook URL: registered where they are handed to a
library) and whatever looks like one: ``password=...``/``'sasl_plain_password':
'...'``, ``Authorization: Bearer ...``, URL signatures (``sig=``, ``code=``
...), the path of a Teams/Workflows webhook URL, and ``user:pass@`` in URLs.
kafka-python logs its whole configuration at debug level, password included,
and httpx logs the URL of every request, a webhook's signature included.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("url", "password", "secret", "token", "webhook", "authorization")
_SAFE_KEYS = frozenset({"url_domain", "url.full"})
MASK = "***"

# Secret values seen by zonewatch, longest first so a URL goes before its parts.
_secrets: list[str] = []
_secrets_lock = threading.Lock()
_MIN_SECRET = 6  # shorter values would blank out ordinary words

# A key that ends in a secret's name, then its value (quoted or bare).
_KEY_VALUE = re.compile(
    r"""(?ix)
    ( ["']? \b[\w.-]*? (?:password|passwd|secret|token|api[_-]?key|credentials?) ["']?
      \s* [:=] \s* )
    (?: (b?(["'])) (?:\\.|(?!\3).)* \3 | [^"'\s,;&})\]]+ )
    """
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]{6,}")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:sig|signature|code|token|access_token|key|apikey|client_secret|password)=)"
    r"[^&\s\"'#]+"
)
# A Teams / Workflows / Power Automate webhook: the path is the secret.
_WEBHOOK = re.compile(
    r"(?i)(https?://[^\s/\"'<>]+)(?:/[^\s\"'<>]*?)?"
    r"/(?:workflows|webhookb2|IncomingWebhook|powerautomate)/[^\s\"'<>]*"
)
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^\s/@:\"']+:[^\s@\"']+@")


def register_secret(value: str | None) -> None:
    """Never log ``value`` (a password, a webhook URL), whoever logs it."""
    if not value or len(value) < _MIN_SECRET:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)


def redact_text(text: str) -> str:
    """``text`` with every known and every recognisable secret replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _WEBHOOK.sub(rf"\1/{MASK}", text)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    return _KEY_VALUE.sub(_masked_value, text)


def _masked_value(match: re.Match[str]) -> str:
    if match.group(2):  # quoted: keep the quotes
        return f"{match.group(1)}{match.group(2)}{MASK}{match.group(3)}"
    return f"{match.group(1)}{MASK}"


def _redact(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        lowered = key.lower()
        if lowered in _SAFE_KEYS:
            continue
        if any(word in lowered for word in _SECRET_KEYS):
            event_dict[key] = MASK
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


# -- the stdlib side -----------------------------------------------------------

_base_factory: Callable[..., logging.LogRecord] | None = None


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _base_factory is not None
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a library's bad format string: leave it to the handler
        return record
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, None
    return record


def _install_record_factory() -> None:
    global _base_factory
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then scrubs the whole text, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of writing."""

    zonewatch = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing, so a
    logger configured once keeps working when stderr is swapped (test
    capture, daemonizing) instead of writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger (idempotent).

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
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # kafka-python, httpx and friends log through stdlib logging; keep them
    # quiet unless debugging, and scrub what they say either way. kafka-python
    # logs every failed connection attempt as an ERROR: zonewatch reports what
    # went wrong in its own words (one line, with the fix), so kafka-python's
    # own lines show only with --log-level debug.
    _install_record_factory()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "zonewatch", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(RedactingFormatter("%(levelname)s:%(name)s:%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING if numeric > logging.DEBUG else logging.DEBUG)
    logging.getLogger("kafka").setLevel(
        logging.CRITICAL if numeric > logging.DEBUG else logging.DEBUG
    )


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)
