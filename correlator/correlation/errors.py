"""Errors of the correlation engine."""

from __future__ import annotations

from zonewatch.errors import RuleError, ZonewatchError


class CorrelationRuleError(RuleError):
    """A correlation rule cannot be evaluated as written (bad condition,
    unknown referenced rule, unsupported combination)."""


class CorrelationStateError(ZonewatchError):
    """A state snapshot cannot be restored (corrupt, or from an incompatible
    version); start from an empty state or replay the input."""

    exit_code = 65
