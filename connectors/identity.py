"""Source ``identity``: who signed in from where, and what they did in Microsoft 365.

Formats:

``signins``
    Microsoft Entra ID sign-in logs, interactive and non-interactive, in every
    delivery: Graph ``auditLogs/signIns`` objects or pages, diagnostic-settings
    records as Event Hub delivers them (``{"records": [...]}`` batches of
    ``SignInLogs``, ``NonInteractiveUserSignInLogs``, service principal and
    managed identity categories), and Log Analytics ``SigninLogs`` rows
    (``connectors/entra.py``). Stateful: the last positions per user, for
    ``entra.travel``.
``m365-audit``
    The Microsoft 365 unified audit log from the Office 365 Management Activity
    API: content blobs (``Audit.AzureActiveDirectory``, ``Audit.Exchange``,
    ``Audit.SharePoint``, ``Audit.General`` incl. Teams), one record per line or
    whole blobs (``connectors/m365.py``).

``zonewatch ingest identity --format signins --graph`` polls Graph and
``--format m365-audit --graph`` the Management Activity API
(``connectors/inputs/cloud.py``).
"""

from __future__ import annotations

from typing import Any

from connectors import entra, m365
from connectors.base import ParseContext, register
from connectors.entra import SOURCE, TRAVEL_STATE, signin_event
from connectors.jsonrecords import loads, unwrap
from connectors.m365 import audit_event

SHARED_STATE = (TRAVEL_STATE,)


def _signins_sniff(line: str) -> bool:
    if '"CreationTime"' in line:
        return False
    return (
        "SignInLogs" in line
        or "SigninLogs" in line
        or '"Sign-in activity"' in line
        or ('"createdDateTime"' in line and ('"userPrincipalName"' in line or '"appId"' in line))
    )


@register(
    SOURCE,
    entra.MODULE,
    "Entra ID sign-ins: Graph auditLogs/signIns, diagnostic settings (Event Hub), SigninLogs rows",
    sniff=_signins_sniff,
    shared_state=SHARED_STATE,
)
def parse_signins(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    doc = loads(raw)
    return [signin_event(rec, original, ctx) for rec, original in unwrap(doc, raw)]


@register(
    SOURCE,
    m365.MODULE,
    "Microsoft 365 unified audit log (Office 365 Management Activity API content)",
    sniff=lambda line: '"CreationTime"' in line and '"Operation"' in line,
)
def parse_m365(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    doc = loads(raw)
    return [audit_event(rec, original, ctx) for rec, original in unwrap(doc, raw)]
