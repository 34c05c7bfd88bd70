"""The zone policy as detections: Sigma rules for every forbidden crossing of
the allowed-flow matrix in ``rules/zones.yaml`` (``zonewatch rules generate``).

Pure logic lives in ``crossings`` (which traffic the matrix forbids) and
``sigma`` (those crossings as Sigma rule documents); ``files`` writes and
compares the generated folder; ``cli`` is the click command.
"""

from typing import TYPE_CHECKING

from zonewatch.lazy import lazy_exports

if TYPE_CHECKING:
    from correlator.policy.crossings import Crossing, crossings
    from correlator.policy.files import GeneratedFile, generate_files, stale_files, write_files
    from correlator.policy.sigma import crossing_rule, rule_id

# The author of every generated rule: how the rule loader knows a zone-policy
# rule (it takes ``correlator.zone_policy_suppress`` unless it says otherwise).
# Here, not in ``sigma``: the loader imports no generator module for it.
GENERATOR_AUTHOR = "zonewatch rules generate"

# name -> module, imported on first use (zonewatch/lazy.py)
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

__getattr__ = lazy_exports(__name__, _EXPORTS)


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
