"""Errors of the correlation engine."""

from __future__ import annotations

from typing import Any

from zonewatch.errors import RuleError, ZonewatchError


class CorrelationRuleError(RuleError):
    """A correlation rule cannot be evaluated as written (bad condition,
    unknown referenced rule, unsupported combination)."""

    rule: Any = None  # the pySigma rule at fault, so callers can leave it out


class CorrelationStateError(ZonewatchError):
    """A state snapshot cannot be restored (corrupt, or from an incompatible
    version); start from an empty state or replay the input."""

    exit_code = 65
