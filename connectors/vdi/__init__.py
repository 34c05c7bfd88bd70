"""VDI session events: VMware Horizon, Citrix Monitor OData, Citrix ADC, Azure Virtual Desktop.

Every VDI event says who (``user.name``), from where (``source.ip``, the
client), to which session host (``destination.ip``, ``host.name``), in which
session (``vdi.session_id``) and pool (``vdi.pool``), and what happened as
``event.action``: ``vdi-login``, ``vdi-connect``, ``vdi-disconnect``,
``vdi-logout`` or ``vdi-login-failed``. Events of other kinds keep their
vendor name as a slug (``agent-pending``).

Formats:

``horizon``
    Horizon events as syslog (RFC 5424 with ``[View@6876 ...]`` structured
    data, or RFC 3164 with the same ``key="value"`` pairs in the message) or
    as JSON from the event database / REST ``audit-events``. The user is
    often only a SID (``UserSID``); enrichment maps it to the UPN.
``citrix``
    Citrix Monitor OData ``Sessions`` and ``Connections`` entities, one per
    line or whole pages (``{"value": [...]}``), with ``$expand``-ed User and
    Machine when present.
``citrix-adc``
    Citrix ADC / Gateway syslog (ICASTART, ICAEND_CONNSTAT, LOGIN, LOGOUT).
``avd``
    Azure Virtual Desktop ``WVDConnections`` rows (Log Analytics export or
    Event Hub ``Connection`` records). Rows of one connection share a
    ``CorrelationId``: it becomes ``vdi.session_id``, repeated states are
    dropped and ``Completed`` gets ``event.duration`` from ``Started``.

Layout: one module per format (``horizon``, ``citrix``, ``citrix_adc``,
``avd``) and ``common`` (the event skeleton, actions and key folding).
"""

# In the order the formats registered before the split (the format registry
# keeps insertion order).
# isort: off
from connectors.vdi.horizon import parse_horizon
from connectors.vdi.citrix import parse_citrix
from connectors.vdi.citrix_adc import parse_citrix_adc
from connectors.vdi.avd import parse_avd

# isort: on

__all__ = ["parse_avd", "parse_citrix", "parse_citrix_adc", "parse_horizon"]
