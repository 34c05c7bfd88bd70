"""The bundled sample day (``samples/``): which files, as which source and
format, in which order. ``zonewatch demo`` sends them through Kafka; the
console's demo store (``console.demo_store``) parses them offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The checkout (or installed tree) holding samples/ and rules/.
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SampleInput:
    source: str
    format: str
    path: Path


# In this order because the connectors learn identities from each other
# (connectors/bindings.py): Intune and VDI first (devices, client addresses,
# open restricted sessions), then the sign-ins, then what gets filled in.
SAMPLES = (
    SampleInput("intune", "devices", Path("samples/intune-devices.jsonl")),
    SampleInput("intune", "graph", Path("samples/intune-audit.jsonl")),
    SampleInput("vdi", "horizon", Path("samples/horizon-events.log")),
    # Entra ID sign-ins as diagnostic settings deliver them, and the M365 audit log
    SampleInput("identity", "signins", Path("samples/entra-signins.jsonl")),
    SampleInput("identity", "m365-audit", Path("samples/m365-audit.jsonl")),
    SampleInput("gateway", "squid", Path("samples/squid-access.log")),
    # the prefecture's security cloud in front of the Internet VDI pool
    SampleInput("gateway", "zscaler", Path("samples/securitycloud-web.jsonl")),
    SampleInput("firewall", "fortigate", Path("samples/fortigate-traffic.log")),
)
