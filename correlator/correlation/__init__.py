"""Sigma correlation rules over detection hits, in event time (pure: no Kafka, no DuckDB).

See README.md in this package for the semantics, the crash-safety design and
how the stream loop calls the engine.
"""

from correlator.correlation.compiled import (
    CONDITION_ATTRIBUTE,
    SUPPRESS_ATTRIBUTE,
    CompiledCorrelation,
    compile_rules,
    prepare_correlation_dict,
)
from correlator.correlation.engine import CorrelationEngine, CorrelationStats
from correlator.correlation.errors import CorrelationRuleError, CorrelationStateError
from correlator.correlation.settings import BaseRuleInfo, CorrelationSettings

__all__ = [
    "CONDITION_ATTRIBUTE",
    "SUPPRESS_ATTRIBUTE",
    "BaseRuleInfo",
    "CompiledCorrelation",
    "CorrelationEngine",
    "CorrelationRuleError",
    "CorrelationSettings",
    "CorrelationStateError",
    "CorrelationStats",
    "compile_rules",
    "prepare_correlation_dict",
]
