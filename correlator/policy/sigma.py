"""Forbidden crossings as Sigma rule documents (pure: dicts in, dicts out).

One detection rule per crossing: the firewall let traffic from zone A into
zone B through (``event.outcome: success``) and no allowed flow of the
matrix covers it. Denies are not alerts here: the pack counts them
(``rules/cross_zone/fw_repeated_denied_crossings.yml``).

Ids are UUIDv5 of the crossing, so regenerating after any change elsewhere
in the matrix keeps every rule's id (and its alert history) stable. Each
rule carries test events computed from the matrix itself, so
``zonewatch rules test`` checks that the Sigma filters say what the flows say.
"""

from __future__ import annotations

import textwrap
import uuid
from typing import Any

from correlator.policy import GENERATOR_AUTHOR
from correlator.policy.crossings import Crossing, Exception_
from zonewatch.zones import PortSpec, ZonePolicy

# Changing this namespace would change every generated id: never do it.
ID_NAMESPACE = uuid.UUID("6b1f3c2e-7d4a-5e89-9c0b-2a7f1e3d5c40")
GENERATOR_DATE = "2026-11-27"
# Ports a probe or a misused path typically uses; the tests pick the first
# one the matrix does not allow.
_PROBE_PORTS = (445, 3389, 22, 135, 5985, 1433, 8080, 21)


def rule_id(crossing: Crossing) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"zonewatch:policy:{crossing.key}"))


def rule_name(crossing: Crossing) -> str:
    return f"zw_policy_{crossing.src}_to_{crossing.dst}"


def _title(policy: ZonePolicy, zone: str) -> str:
    return policy.zones[zone].title or zone.capitalize()


def _title_ja(policy: ZonePolicy, zone: str) -> str:
    z = policy.zones[zone]
    return z.title_ja or z.description_ja or zone


def _level(policy: ZonePolicy, crossing: Crossing) -> str:
    if policy.zones[crossing.dst].restricted:
        return "critical"
    if policy.zones[crossing.src].restricted:
        return "high"
    return "medium"


def _tags(policy: ZonePolicy, crossing: Crossing) -> list[str]:
    tags = ["attack.defense-evasion", "attack.t1599"]  # Network Boundary Bridging
    if policy.zones[crossing.dst].restricted:
        tags += ["attack.lateral-movement", "attack.t1021"]
    if policy.zones[crossing.src].restricted and crossing.dst == policy.default_public_zone:
        tags += ["attack.exfiltration", "attack.t1048"]
    return tags


def _filter_maps(exc: Exception_) -> list[dict[str, Any]]:
    """The events one allowed flow lets through, as Sigma maps (ORed)."""
    base: dict[str, Any] = {exc.role_field: exc.role} if exc.role_field else {}
    if (None, None) in exc.ports:
        return [base]
    by_transport: dict[str, list[int]] = {}
    any_port: list[str] = []
    for transport, port in exc.ports:
        assert transport is not None  # (None, None) handled above
        if port is None:
            any_port.append(transport)
        else:
            by_transport.setdefault(transport, []).append(port)
    maps = [{**base, "network.transport": t} for t in any_port]
    for transport, ports in by_transport.items():
        if transport in any_port:
            continue
        maps.append(
            {
                **base,
                "network.transport": transport,
                "destination.port": sorted(set(ports)) if len(ports) > 1 else ports[0],
            }
        )
    return maps


def _allowed(exc: Exception_, role: str | None, transport: str, port: int) -> bool:
    """What the matrix says about one connection (the reference the tests use)."""
    if exc.role is not None and role != exc.role:
        return False
    return any(t is None or (t == transport and (p is None or p == port)) for t, p in exc.ports)


def _event(
    crossing: Crossing,
    transport: str,
    port: int,
    role_field: str | None = None,
    role: str | None = None,
    outcome: str = "success",
) -> dict[str, Any]:
    zone: dict[str, Any] = {
        "source": crossing.src,
        "destination": crossing.dst,
        "crossing": crossing.key,
    }
    if role_field and role:
        zone[role_field.split(".", 1)[1]] = role
    return {
        "event": {"dataset": "firewall", "outcome": outcome},
        "network": {"transport": transport},
        "destination": {"port": port},
        "zone": zone,
    }


def _first_port(ports: tuple[PortSpec, ...]) -> tuple[str, int]:
    for transport, port in ports:
        if transport is not None:
            return transport, port if port is not None else 443
    return "tcp", 443


def _tests(crossing: Crossing) -> dict[str, Any]:
    candidates: list[tuple[str, int, str | None, str | None]] = []
    for exc in crossing.exceptions:
        transport, port = _first_port(exc.ports)
        candidates.append((transport, port, exc.role_field, exc.role))
        if exc.role:  # the right port from a host without the role
            candidates.append((transport, port, None, None))
        # the role on a port its flow does not list
        listed = {p for _, p in exc.ports}
        probe = next((p for p in _PROBE_PORTS if p not in listed), None)
        if probe is not None and None not in listed:
            candidates.append(("tcp", probe, exc.role_field, exc.role))
    allowed_ports = {p for e in crossing.exceptions for _, p in e.ports}
    probe = next((p for p in _PROBE_PORTS if p not in allowed_ports), _PROBE_PORTS[0])
    candidates.insert(0, ("tcp", probe, None, None))
    match: list[dict[str, Any]] = []
    nomatch: list[dict[str, Any]] = []
    seen: set[tuple[str, int, str | None, str | None]] = set()
    for transport, port, role_field, role in candidates:
        if (transport, port, role_field, role) in seen:
            continue
        seen.add((transport, port, role_field, role))
        event = _event(crossing, transport, port, role_field, role)
        allowed = any(_allowed(e, role, transport, port) for e in crossing.exceptions)
        (nomatch if allowed else match).append(event)
    denied = _event(crossing, "tcp", probe, outcome="failure")
    nomatch.append(denied)
    return {"source": "firewall", "match": match, "nomatch": nomatch}


def _wrap_ja(text: str) -> str:
    """Japanese has no spaces to break at: one sentence per line."""
    return "\n".join(part + "。" for part in text.split("。") if part)


def crossing_rule(policy: ZonePolicy, crossing: Crossing, zones_path: str) -> dict[str, Any]:
    src, dst = _title(policy, crossing.src), _title(policy, crossing.dst)
    src_ja, dst_ja = _title_ja(policy, crossing.src), _title_ja(policy, crossing.dst)
    if crossing.exceptions:
        paths = "; ".join(e.describe() for e in crossing.exceptions)
        paths_ja = paths
        allowed_en = f"The only allowed paths for this crossing: {paths}."
        allowed_ja = f"このゾーン間で許可された経路: {paths_ja}。"
        title = f"Zone Policy: {src} to {dst} Traffic Outside the Allowed Flows"
    else:
        allowed_en = "No flow allows this crossing at all."
        allowed_ja = "このゾーン間の通信は一切許可されていません。"
        title = f"Zone Policy: Direct Traffic From {src} Into {dst}"
    english = (
        f"The firewall let a connection from the {src} zone into the {dst} zone "
        f"through, and no allowed flow in {zones_path} covers it. {allowed_en} "
        "Generated from the flow matrix by `zonewatch rules generate`."
    )
    japanese = (
        f"{src_ja}から{dst_ja}への通信がファイアウォールで許可されましたが、"
        f"{zones_path} の許可フローに該当しません。{allowed_ja}"
    )
    description = textwrap.fill(english, 88) + "\n" + _wrap_ja(japanese) + "\n"
    detection: dict[str, Any] = {
        "selection": {"zone.crossing": crossing.key, "event.outcome": "success"}
    }
    for n, exc in enumerate(crossing.exceptions, 1):
        maps = _filter_maps(exc)
        detection[f"filter_flow_{n}"] = maps[0] if len(maps) == 1 else maps
    detection["condition"] = (
        "selection and not 1 of filter_flow_*" if crossing.exceptions else "selection"
    )
    return {
        "title": title,
        "id": rule_id(crossing),
        "name": rule_name(crossing),
        "status": "stable",
        "description": description,
        "author": GENERATOR_AUTHOR,
        "date": GENERATOR_DATE,
        "tags": _tags(policy, crossing),
        "logsource": {"product": "zonewatch", "service": "firewall"},
        "detection": detection,
        "falsepositives": [
            f"A legitimate path missing from {zones_path}: add it to flows and regenerate",
            "Maintenance traffic opened temporarily by the network vendor (document and close it)",
        ],
        "level": _level(policy, crossing),
        "tests": _tests(crossing),
    }


def any_crossing_rule(crossings: list[Crossing]) -> dict[str, Any]:
    """One correlation over every generated rule, for chains that follow "any
    policy violation" (policy change then violation) without naming each."""
    return {
        "title": "Zone Policy: Any Forbidden Crossing",
        "id": str(uuid.uuid5(ID_NAMESPACE, "zonewatch:policy:any")),
        "name": "zw_policy_any_forbidden_crossing",
        "status": "stable",
        "description": (
            "Each connection any generated zone-policy rule reports, as one rule that\n"
            "chained correlations can refer to. It raises no alert of its own while a\n"
            "correlation refers to it (the rules it lists do).\n"
            "生成されたゾーンポリシー規則のいずれかに該当した通信（連鎖相関用）。\n"
        ),
        "author": GENERATOR_AUTHOR,
        "date": GENERATOR_DATE,
        "correlation": {
            "type": "event_count",
            "rules": sorted(rule_name(c) for c in crossings),
            "group-by": ["zone.crossing"],
            "timespan": "1m",
            "condition": {"gte": 1},
            # The listed rules keep alerting on their own.
            "generate": True,
        },
        "falsepositives": ["As for the rules it lists"],
        "level": "high",
    }
