"""The zone policy as detections: Sigma rules for every forbidden crossing of
the allowed-flow matrix in ``rules/zones.yaml`` (``zonewatch rules generate``).

Pure logic lives in ``crossings`` (which traffic the matrix forbids) and
``sigma`` (those crossings as Sigma rule documents); ``files`` writes and
compares the generated folder; ``cli`` is the click command.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from correlator.policy.crossings import Crossing, crossings
    from correlator.policy.files import GeneratedFile, generate_files, stale_files, write_files
    from correlator.policy.sigma import crossing_rule, rule_id

# name -> module: imported on first use, so that importing a submodule (the
# command line's, for --help) does not load the whole package.
_EXPORTS = {
    "Crossing": "correlator.policy.crossings",
    "crossings": "correlator.policy.crossings",
    "GeneratedFile": "correlator.policy.files",
    "generate_files": "correlator.policy.files",
    "stale_files": "correlator.policy.files",
    "write_files": "correlator.policy.files",
    "crossing_rule": "correlator.policy.sigma",
    "rule_id": "correlator.policy.sigma",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Crossing",
    "GeneratedFile",
    "crossing_rule",
    "crossings",
    "generate_files",
    "rule_id",
    "stale_files",
    "write_files",
]
