"""One error root, precise subclasses, messages that say what to fix."""

from __future__ import annotations


class ZonewatchError(Exception):
    """Root of every error zonewatch raises on purpose.

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``.
    """

    exit_code = 1


class UsageError(ZonewatchError):
    """The command line names something that does not exist: an input file,
    a format of the source. (Unknown options are click's usage errors, 2 too.)"""

    exit_code = 2  # EX_USAGE as click uses it


class ConfigError(ZonewatchError):
    """A setting is missing, malformed or points at something unusable."""

    exit_code = 78  # EX_CONFIG


class BrokerUnavailableError(ZonewatchError):
    """No Kafka broker answered at the configured bootstrap servers."""

    exit_code = 69  # EX_UNAVAILABLE


class EmbeddedBrokerError(ZonewatchError):
    """The embedded tansu broker could not be found or started."""

    exit_code = 69


class ZoneConfigError(ConfigError):
    """rules/zones.yaml is invalid (overlapping CIDRs, unknown roles, bad syntax)."""


class RuleError(ZonewatchError):
    """A Sigma rule could not be parsed, validated or compiled.

    Carries the file and line so the message points at the place to fix.
    """

    exit_code = 65  # EX_DATAERR

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.reason = message
        self.path = path
        self.line = line
        location = ""
        if path:
            location = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{location}{message}")


class ParseError(ZonewatchError):
    """A log line could not be parsed by the selected format.

    Connectors never let this escape: the line goes to the dead-letter topic.
    """

    exit_code = 65


class StoreError(ZonewatchError):
    """The DuckDB alert store is unavailable or rejected an operation."""

    exit_code = 3


class QueryError(ZonewatchError):
    """A forensic query is invalid or was refused (it tried to write or read files)."""

    exit_code = 2


class DeliveryError(ZonewatchError):
    """An alert could not be delivered to a webhook."""


class TriageError(ZonewatchError):
    """A triage change names an alert the store does not hold, or a bad status."""

    exit_code = 65
