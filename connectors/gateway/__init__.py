"""Web gateway / proxy formats -> ECS: Squid, Zscaler NSS web, ProxySG ELFF, CEF.

Gateways say "allowed" or "blocked" in their own words (Squid ``TCP_DENIED``,
ProxySG ``DENIED``, Zscaler ``Blocked``); every event here carries
``event.action`` ``allowed``/``blocked`` and ``event.outcome``
``success``/``failure`` so one Sigma condition covers every vendor. The
vendor's own word stays in ``<vendor>.*``. See FIELDS.md for each mapping.

Layout: one module per vendor format (``squid``, ``zscaler``, ``proxysg``,
``cef``) and ``decision`` (the allowed/blocked fields they share).
"""

# In the order the formats registered before the split (the format registry
# keeps insertion order).
# isort: off
from connectors.gateway.squid import parse_squid
from connectors.gateway.zscaler import parse_zscaler
from connectors.gateway.proxysg import parse_proxysg
from connectors.gateway.cef import cef_extensions, cef_header, parse_cef, sniff_cef

# isort: on

__all__ = [
    "cef_extensions",
    "cef_header",
    "parse_cef",
    "parse_proxysg",
    "parse_squid",
    "parse_zscaler",
    "sniff_cef",
]
