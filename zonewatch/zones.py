"""The zone policy (rules/zones.yaml): zones, roles, identities, allowed flows.

Pure logic: load and validate the YAML, then answer "which zone and role is
this IP in" (longest prefix wins, IPv4 and IPv6) and "who is this account".
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zonewatch import bounded_yaml
from zonewatch.errors import ZoneConfigError
from zonewatch.netranges import V6_BASE, RangeMap, address_key

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ZONE_UNKNOWN = "unknown"


class Zone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="", description="name for people (rule titles); default: key")
    title_ja: str = Field(default="", description="Japanese name (rule descriptions)")
    description: str = ""
    description_ja: str = ""
    cidrs: list[str] = Field(default_factory=list)
    restricted: bool = Field(
        default=False,
        description="holds protected data (My Number, LGWAN): crossings into it are critical",
    )


class Role(BaseModel):
    """A named set of hosts inside a zone (VDI pool, proxy, sanitization server...)."""

    model_config = ConfigDict(extra="forbid")
    zone: str
    kind: str = Field(description="vdi_pool, vdi_broker, proxy, sanitizer, lgwan_asp, ...")
    cidrs: list[str] = Field(default_factory=list)
    target_zone: str | None = Field(default=None, description="for VDI pools: the zone served")
    description: str = ""


class Identity(BaseModel):
    """One person, under every name the sources use for them."""

    model_config = ConfigDict(extra="forbid")
    upn: str
    sam: list[str] = Field(default_factory=list, description="DOMAIN\\sam names")
    sid: list[str] = Field(default_factory=list)
    logins: list[str] = Field(default_factory=list, description="proxy or VDI login names")
    devices: list[str] = Field(default_factory=list)

    @field_validator("sam", "sid", "logins", "devices", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Flow(BaseModel):
    """An allowed path between zones.

    ``via`` names a role at one end of the flow: a role in the ``from`` zone
    must be the source (proxy, VDI pool, relay), a role in the ``to`` zone
    the destination (sanitization server).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    src: str = Field(alias="from")
    dst: str = Field(alias="to")
    ports: list[str] = Field(default_factory=lambda: ["any"], description="tcp/443, udp/53, any")
    via: str | None = Field(default=None, description="role the flow must pass through")
    description: str = ""

    def port_specs(self) -> list[PortSpec]:
        """The ports as (transport, port) pairs; ``None`` stands for any."""
        return [parse_port(p) for p in self.ports]


PortSpec = tuple[str | None, int | None]
_TRANSPORTS = ("tcp", "udp", "sctp", "icmp")


def parse_port(spec: str) -> PortSpec:
    """``tcp/443`` -> ("tcp", 443); ``udp/any`` -> ("udp", None); ``any`` -> (None, None)."""
    text = str(spec).strip().lower()
    if text == "any":
        return None, None
    transport, sep, port = text.partition("/")
    if not sep or transport not in _TRANSPORTS:
        raise ValueError(f"port {spec!r}: write transport/port (tcp/443, udp/4172, tcp/any) or any")
    if port == "any":
        return transport, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {spec!r}: the port must be a number from 1 to 65535 or any")
    return transport, int(port)


class ZonePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    default_public_zone: str = "internet"
    zones: dict[str, Zone]
    roles: dict[str, Role] = Field(default_factory=dict)
    identities: list[Identity] = Field(default_factory=list)
    flows: list[Flow] = Field(default_factory=list)

    def titles(self) -> dict[str, tuple[str, str]]:
        """zone -> (Japanese name, English name), for people (console, cards)."""
        return {
            name: (z.title_ja or z.title or name, z.title or name) for name, z in self.zones.items()
        }


class ZoneMap:
    """Compiled policy: IP -> (zone, role) by longest prefix; account -> UPN."""

    def __init__(self, policy: ZonePolicy, source: str = "<policy>"):
        self.policy = policy
        self.source = source
        self._zone_nets: list[tuple[IPNetwork, str]] = []
        self._role_nets: list[tuple[IPNetwork, str]] = []
        self._names: dict[str, str] = {}
        self._validate_and_index()
        self.lookup = lru_cache(maxsize=65536)(self._lookup)

    # -- building -------------------------------------------------------------
    def _net(self, cidr: str, owner: str) -> IPNetwork:
        try:
            return ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ZoneConfigError(f"{self.source}: {owner}: invalid CIDR {cidr!r}") from exc

    def _validate_and_index(self) -> None:
        zones = self.policy.zones
        if self.policy.default_public_zone not in zones:
            raise ZoneConfigError(
                f"{self.source}: default_public_zone {self.policy.default_public_zone!r} "
                "is not a defined zone"
            )
        for name, zone in zones.items():
            for cidr in zone.cidrs:
                self._zone_nets.append((self._net(cidr, f"zone {name}"), name))
        _check_overlaps(self._zone_nets, self.source)
        for name, role in self.policy.roles.items():
            if role.zone not in zones:
                raise ZoneConfigError(
                    f"{self.source}: role {name} names unknown zone {role.zone!r}"
                )
            if role.target_zone and role.target_zone not in zones:
                raise ZoneConfigError(
                    f"{self.source}: role {name} names unknown target_zone {role.target_zone!r}"
                )
            for cidr in role.cidrs:
                net = self._net(cidr, f"role {name}")
                zone_of = self._longest(self._zone_nets, net.network_address)
                if zone_of != role.zone:
                    raise ZoneConfigError(
                        f"{self.source}: role {name} CIDR {cidr} lies in zone "
                        f"{zone_of or 'none'}, not in its zone {role.zone}"
                    )
                self._role_nets.append((net, name))
        _check_role_overlaps(self._role_nets, self.source)
        for n, flow in enumerate(self.policy.flows, 1):
            self._check_flow(n, flow)
        for ident in self.policy.identities:
            upn = ident.upn.lower()
            for alias in [ident.upn, *ident.sam, *ident.sid, *ident.logins]:
                owner = self._names.get(alias.lower())
                if owner is not None and owner != upn:
                    raise ZoneConfigError(
                        f"{self.source}: identity alias {alias!r} belongs to both {owner} "
                        f"and {upn}; give each person their own names"
                    )
                self._names[alias.lower()] = upn
            for sam in ident.sam:  # DOMAIN\sam also answers to bare sam
                self._names.setdefault(sam.split("\\")[-1].lower(), upn)
        # One bisect answers "longest prefix" (zonewatch.netranges).
        self._zone_ranges = RangeMap(self._zone_nets)
        self._role_ranges = RangeMap(self._role_nets)

    def _check_flow(self, n: int, flow: Flow) -> None:
        where = f"{self.source}: flow #{n} ({flow.src} -> {flow.dst})"
        zones = self.policy.zones
        for end in (flow.src, flow.dst):
            if end not in zones and end != "any":
                known = ", ".join(sorted(zones))
                raise ZoneConfigError(f"{where} names unknown zone {end!r} (zones: {known})")
        if flow.src == flow.dst:
            raise ZoneConfigError(f"{where}: a flow joins two different zones")
        if flow.via:
            role = self.policy.roles.get(flow.via)
            if role is None:
                known = ", ".join(sorted(self.policy.roles)) or "none defined"
                raise ZoneConfigError(f"{where} via unknown role {flow.via!r} (roles: {known})")
            if role.zone not in (flow.src, flow.dst):
                raise ZoneConfigError(
                    f"{where} via role {flow.via}: the role lies in zone {role.zone}, which is "
                    "neither end of the flow"
                )
        for port in flow.ports:
            try:
                parse_port(port)
            except ValueError as exc:
                raise ZoneConfigError(f"{where}: {exc}") from exc

    @staticmethod
    def _longest(
        nets: Iterable[tuple[IPNetwork, str]], ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> str | None:
        best: tuple[int, str] | None = None
        for net, name in nets:
            if (
                ip.version == net.version
                and ip in net
                and (best is None or net.prefixlen > best[0])
            ):
                best = (net.prefixlen, name)
        return best[1] if best else None

    # -- answering -------------------------------------------------------------
    def _lookup(self, ip: str) -> tuple[str, str | None]:
        """(zone, role) of an IP string; ``("unknown", None)`` when not an IP."""
        text = ip.split("%")[0]
        keys = None if text[:1].isspace() or text[-1:].isspace() else address_key(text)
        if keys is None:
            return ZONE_UNKNOWN, None
        key, mapped = keys
        if mapped >= 0:  # an IPv4-mapped IPv6 address is the IPv4 host
            key = mapped
        zone = self._zone_ranges.get(key)
        if zone is None:
            zone = self.policy.default_public_zone if _is_global(key) else ZONE_UNKNOWN
        return zone, self._role_ranges.get(key)

    def zone_of(self, ip: str) -> str:
        return self.lookup(ip)[0]

    def role_of(self, ip: str) -> str | None:
        return self.lookup(ip)[1]

    def canonical_user(self, name: str) -> str | None:
        """UPN for any known alias (UPN, DOMAIN\\sam, SID, login); None if unknown."""
        return self._names.get(name.strip().lower())

    def roles_of_kind(self, kind: str) -> dict[str, Role]:
        return {n: r for n, r in self.policy.roles.items() if r.kind == kind}


def _is_global(key: int) -> bool:
    if key < V6_BASE:
        return ipaddress.IPv4Address(key).is_global
    return ipaddress.IPv6Address(key - V6_BASE).is_global


def _check_overlaps(nets: list[tuple[IPNetwork, str]], source: str) -> None:
    """Zones may nest (a more specific CIDR carves out of a broad one) only across
    zones; the same CIDR twice is ambiguous, and one zone listing overlapping
    CIDRs is a typo that hides which range was meant: both are refused."""
    seen: dict[IPNetwork, str] = {}
    for net, name in nets:
        if net in seen and seen[net] != name:
            raise ZoneConfigError(
                f"{source}: CIDR {net} is claimed by zones {seen[net]} and {name}"
            )
        seen[net] = name
    by_zone: dict[str, list[IPNetwork]] = {}
    for net, name in nets:
        by_zone.setdefault(name, []).append(net)
    for name, own in by_zone.items():
        ordered = sorted(own, key=lambda n: (n.version, n.network_address, n.prefixlen))
        for a, b in itertools.pairwise(ordered):
            if a.version == b.version and a.overlaps(b):
                raise ZoneConfigError(
                    f"{source}: zone {name} lists overlapping CIDRs {a} and {b}; keep one"
                )


def _check_role_overlaps(nets: list[tuple[IPNetwork, str]], source: str) -> None:
    """An address has one role: two roles (or one role twice) may not claim
    overlapping CIDRs, or the role of an address would depend on list order."""
    ordered = sorted(nets, key=lambda item: (item[0].version, item[0].network_address))
    for (net_a, name_a), (net_b, name_b) in itertools.pairwise(ordered):
        if net_a.version == net_b.version and net_a.overlaps(net_b):
            who = f"roles {name_a} and {name_b}" if name_a != name_b else f"role {name_a}"
            raise ZoneConfigError(
                f"{source}: {who} claim overlapping CIDRs {net_a} and {net_b}; "
                "an address may have only one role"
            )


def load_zone_map(path: Path | str) -> ZoneMap:
    path = Path(path)
    try:
        data = bounded_yaml.safe_load(bounded_yaml.read_text(path))
    except OSError as exc:
        raise ZoneConfigError(f"cannot read zone policy {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ZoneConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        policy = ZonePolicy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ZoneConfigError(f"{path}: {where}: {err['msg']}") from exc
    return ZoneMap(policy, source=str(path))
