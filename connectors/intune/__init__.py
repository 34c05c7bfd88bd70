"""Microsoft Intune: Graph audit events, diagnostic-settings records, device snapshots.

Formats:

``graph``
    ``deviceManagement/auditEvents`` objects, one per line, or whole Graph
    pages (``{"value": [...], "@odata.nextLink": ...}``).
``diagnostic``
    Intune diagnostic-settings records as Event Hub delivers them
    (``{"time", "category", "operationName", "properties"}``, or a batch
    ``{"records": [...]}``) or as a Log Analytics export writes them
    (``IntuneAuditLogs`` / ``IntuneOperationalLogs`` / ``IntuneDevices``
    rows with ``TimeGenerated`` and ``Properties``). Device rows come out as
    one informational event each, like Elastic's ``managed_device`` stream.
``devices``
    The same device rows (or Graph ``managedDevice`` objects) read as
    periodic snapshots: a device's first sighting emits ``device-observed``,
    later snapshots emit only changes (``device-compliance-changed``,
    ``device-ownership-changed``, ``device-user-changed``). The previous
    state per device lives in ``ctx.state["intune.devices"]``, which the
    pipeline persists under ``checkpoint_dir`` so a restart does not
    re-announce the whole estate.

Normalized values: ``intune.compliance`` is one of ``compliant``,
``noncompliant``, ``in_grace_period``, ``not_evaluated``, ``conflict``,
``error``, ``config_manager``, ``unknown``; ``intune.ownership`` is
``corporate``, ``personal`` (BYOD) or ``unknown``; a grace period of
``9999-12-31`` means none and is left out.

Layout: ``graph``, ``diagnostic`` and ``devices`` (one reader each),
``formats`` (the diagnostic and devices formats, sniffing, ``--format
auto``) and ``common`` (normalized values, record shape, foreign records).
"""

# In the order the formats registered before the split (the format registry
# keeps insertion order).
# isort: off
from connectors.intune.common import RETRIEVED_ANNOTATION, compliance, ownership
from connectors.intune.graph import parse_graph
from connectors.intune.formats import parse_devices, parse_diagnostic

# isort: on

__all__ = [
    "RETRIEVED_ANNOTATION",
    "compliance",
    "ownership",
    "parse_devices",
    "parse_diagnostic",
    "parse_graph",
]
