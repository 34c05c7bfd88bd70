"""The zone policy as detections: Sigma rules for every forbidden crossing of
the allowed-flow matrix in ``rules/zones.yaml`` (``zonewatch rules generate``).

Pure logic lives in ``crossings`` (which traffic the matrix forbids) and
``sigma`` (those crossings as Sigma rule documents); ``files`` writes and
compares the generated folder; ``cli`` is the click command.
"""

from correlator.policy.crossings import Crossing, crossings
from correlator.policy.files import GeneratedFile, generate_files, stale_files, write_files
from correlator.policy.sigma import crossing_rule, rule_id

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
