"""Which traffic the flow matrix forbids, zone pair by zone pair (pure).

Every ordered pair of distinct zones is a crossing. The flows whose ends
match it (``any`` matches every zone) are its exceptions: an exception is a
set of (transport, port) pairs, optionally through a role at one end. A
crossing whose exceptions allow everything is not forbidden at all and gets
no rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from zonewatch.zones import Flow, PortSpec, ZonePolicy


@dataclass(frozen=True)
class Exception_:
    """One allowed flow as the generated rule's filter sees it."""

    flow: Flow
    role_field: str | None  # zone.source_role / zone.destination_role
    role: str | None
    ports: tuple[PortSpec, ...]

    @property
    def allows_everything(self) -> bool:
        return self.role is None and (None, None) in self.ports

    def describe(self) -> str:
        ports = ", ".join(_port_text(p) for p in self.ports)
        via = f" via {self.role}" if self.role else ""
        return f"{ports}{via}"


@dataclass(frozen=True)
class Crossing:
    src: str
    dst: str
    exceptions: tuple[Exception_, ...]

    @property
    def key(self) -> str:
        return f"{self.src}->{self.dst}"


def _port_text(spec: PortSpec) -> str:
    transport, port = spec
    if transport is None:
        return "any port"
    return f"{transport}/{'any' if port is None else port}"


def _exception(policy: ZonePolicy, flow: Flow, src: str, dst: str) -> Exception_:
    role_field = None
    if flow.via:
        # The policy loader checked that the role lies at one end of the flow.
        zone = policy.roles[flow.via].zone
        role_field = "zone.source_role" if zone == src else "zone.destination_role"
    return Exception_(flow, role_field, flow.via, tuple(flow.port_specs()))


def crossings(policy: ZonePolicy) -> list[Crossing]:
    """The forbidden crossings of a validated policy, in zone declaration order."""
    names = list(policy.zones)
    out = []
    for src in names:
        for dst in names:
            if src == dst:
                continue
            exceptions = tuple(
                _exception(policy, flow, src, dst)
                for flow in policy.flows
                if flow.src in (src, "any") and flow.dst in (dst, "any")
            )
            if any(e.allows_everything for e in exceptions):
                continue
            out.append(Crossing(src, dst, exceptions))
    return out
