"""Small helpers the format parsers share to build ECS events quickly.

Parsers collect fields in a flat ``{"dotted.name": value}`` dict (cheap to
fill from a table of vendor keys) and :func:`nest` turns it into the nested
event once, dropping empty values, so no parser needs per-field ``None``
checks. Vendor "no value" markers (``-``, ``N/A``...) become ``None`` here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from zonewatch.errors import ParseError

# Values devices write for "no value": never worth a field.
EMPTY: frozenset[str] = frozenset({"", "-", "N/A", "n/a", "None", "none", "null", "(null)"})

_IPV4_RE = re.compile(
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
)

# IANA protocol numbers -> ECS network.transport names (as Elastic writes them)
IANA_PROTOCOLS: dict[str, str] = {
    "0": "hopopt", "1": "icmp", "2": "igmp", "4": "ipv4", "6": "tcp", "17": "udp",
    "41": "ipv6", "47": "gre", "50": "esp", "51": "ah", "58": "ipv6-icmp", "89": "ospf",
    "103": "pim", "112": "vrrp", "132": "sctp",
}  # fmt: skip


_PATHS: dict[str, tuple[str, ...]] = {}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": None}`` -> ``{"a": {"b": 1}}``; ``None`` values are dropped."""
    out: dict[str, Any] = {}
    paths = _PATHS
    for name, value in flat.items():
        if value is None:
            continue
        parts = paths.get(name)
        if parts is None:
            # field names come from parser code, not from input: the cache is bounded
            parts = paths[name] = tuple(name.split("."))
        if len(parts) == 1:
            out[name] = value
            continue
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def text(value: str | None) -> str | None:
    """The value, or ``None`` for the vendors' empty markers."""
    if value is None or value in EMPTY:
        return None
    return value


def to_int(value: str | int | None) -> int | None:
    """An integer field, ``None`` when absent, empty or not a number."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if value.isdigit():  # fast path; isdigit also accepts "²", so guard int()
        try:
            return int(value)
        except ValueError:
            return None
    if value[:1] == "-" and value[1:].isdigit():
        return int(value)
    return None


def to_port(value: str | int | None) -> int | None:
    port = to_int(value)
    if port is None or not 0 <= port <= 65535:
        return None
    return port


def to_ip(value: str | None) -> str | None:
    """A valid IPv4/IPv6 address as written (IPv6 compressed), else ``None``."""
    if not value or value in EMPTY:
        return None
    if _IPV4_RE.fullmatch(value):
        return value
    if ":" not in value:
        return None
    try:
        return ipaddress.ip_address(value.strip("[]")).compressed
    except ValueError:
        return None


def transport(value: str | None) -> str | None:
    """A protocol name or IANA number -> lower-case ``network.transport``."""
    if not value or value in EMPTY:
        return None
    if value.isdigit():
        return IANA_PROTOCOLS.get(value, value)
    lowered = value.lower()
    return "ipv6-icmp" if lowered in ("icmpv6", "ipv6-icmp", "icmp6") else lowered


def require(value: Any, what: str) -> Any:
    """Raise ParseError naming ``what`` when a mandatory field is missing."""
    if value is None:
        raise ParseError(f"missing or invalid {what}")
    return value


def base(raw: str, source: str, module: str, vendor: str, product: str) -> dict[str, Any]:
    """The fields every event of a network format carries (flat form)."""
    return {
        "event.original": raw,
        "event.dataset": source,
        "event.module": module,
        "event.kind": "event",
        "observer.vendor": vendor,
        "observer.product": product,
    }


def url_fields(original: str, default_scheme: str | None = None) -> dict[str, Any]:
    """ECS ``url.*`` fields from a URL as a proxy logged it.

    Accepts absolute URLs, scheme-less ``host/path`` (Zscaler) and the
    authority form of CONNECT (``host:443``). ``url.query`` has no ``?``.
    """
    scheme = default_scheme
    rest = original
    sep = original.find("://")
    if sep > 0 and original[:sep].isalpha():
        scheme = original[:sep].lower()
        rest = original[sep + 3 :]
    cut = len(rest)
    for ch in "/?#":
        pos = rest.find(ch)
        if 0 <= pos < cut:
            cut = pos
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:  # never keep credentials embedded in a URL
        authority = authority.rsplit("@", 1)[1]
    host, port = authority, None
    if authority.startswith("["):
        end = authority.find("]")
        host = authority[1:end] if end > 0 else authority
        if end > 0 and authority[end + 1 : end + 2] == ":":
            port = to_port(authority[end + 2 :])
    elif authority.count(":") == 1:
        host, _, port_s = authority.partition(":")
        port = to_port(port_s)
    fragment = None
    if "#" in tail:
        tail, _, fragment = tail.partition("#")
    path, _, query = tail.partition("?")
    full = original if scheme is None or sep > 0 else f"{scheme}://{original}"
    out: dict[str, Any] = {
        "url.original": original,
        "url.full": full,
        "url.scheme": scheme,
        "url.domain": host or None,
        "url.port": port,
        "url.path": path or None,
        "url.query": query or None,
        "url.fragment": fragment or None,
    }
    if path:
        last = path.rsplit("/", 1)[-1]
        if "." in last:
            ext = last.rsplit(".", 1)[1]
            if ext and len(ext) <= 16:
                out["url.extension"] = ext.lower()
    return out
