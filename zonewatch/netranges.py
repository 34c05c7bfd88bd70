"""Address ranges as sorted integer intervals: parse an address once, then
answer "is it in these networks" and "which range holds it" with a bisect.

Pure logic, shared by the detection runtime (``|cidr``) and the zone policy
(zone and role of an address). IPv4 and IPv6 live in one integer key space,
IPv6 above IPv4 (``V6_BASE``), so one sorted list holds both and a range of
one family never covers an address of the other.

Addresses are parsed with :func:`ipaddress.ip_address`, so every spelling it
accepts (IPv6 compressed or not, upper case, ``%scope`` ids, which do not
change membership) means the same key; what it refuses is no address. An
IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) keeps its IPv6 key and also
carries the IPv4 key it maps to, so each caller decides what it means.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
V6_BASE = 1 << 32
_NO_MAPPED = -1

# text -> (key, mapped IPv4 key or -1), or None when the text is no address.
# The same address strings repeat across events, and parsing one costs more
# than every range test an event needs; bounded so a flood of distinct
# addresses cannot grow it without limit.
_KEYS: dict[str, tuple[int, int] | None] = {}
_KEYS_MAX = 1 << 17


def _parse(text: str) -> tuple[int, int] | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if addr.version == 4:
        return int(addr), _NO_MAPPED
    mapped = addr.ipv4_mapped
    return V6_BASE + int(addr), int(mapped) if mapped is not None else _NO_MAPPED


def address_key(text: str) -> tuple[int, int] | None:
    """``(key, mapped)`` of an address string (``mapped`` is the IPv4 key of an
    IPv4-mapped IPv6 address, else -1); None when ``text`` is no address."""
    try:
        return _KEYS[text]
    except KeyError:
        pass
    keys = _parse(text)
    if len(_KEYS) >= _KEYS_MAX:
        _KEYS.clear()
    _KEYS[text] = keys
    return keys


def network_bounds(net: IPNetwork) -> tuple[int, int]:
    """First and last key of a network."""
    base = 0 if net.version == 4 else V6_BASE
    return base + int(net.network_address), base + int(net.broadcast_address)


def _merged(bounds: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in sorted(bounds):
        if ends and lo <= ends[-1] + 1:
            if hi > ends[-1]:
                ends[-1] = hi
            continue
        starts.append(lo)
        ends.append(hi)
    return starts, ends


class AddressSet:
    """A set of networks (``|cidr`` values) as merged sorted intervals.

    ``match(text)`` holds when the address is in one of the networks; an
    IPv4-mapped IPv6 address also matches the IPv4 networks holding the IPv4
    address it maps to (and still matches IPv6 networks holding it as is).
    """

    __slots__ = ("_ends", "_hi", "_lo", "_starts", "networks")

    def __init__(self, networks: Iterable[IPNetwork]):
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        self._starts, self._ends = _merged(network_bounds(n) for n in self.networks)
        # One interval (the common rule: one network) needs no bisect.
        single = len(self._starts) == 1
        self._lo = self._starts[0] if single else None
        self._hi = self._ends[0] if single else None

    def __repr__(self) -> str:
        return f"AddressSet({', '.join(map(str, self.networks))})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AddressSet) and (self._starts, self._ends) == (
            other._starts,
            other._ends,
        )

    def __hash__(self) -> int:
        return hash((tuple(self._starts), tuple(self._ends)))

    def has_key(self, key: int) -> bool:
        lo = self._lo
        if lo is not None:
            return lo <= key <= self._hi  # type: ignore[operator]
        i = bisect_right(self._starts, key) - 1
        return i >= 0 and key <= self._ends[i]

    def match(self, text: str) -> bool:
        """Is the address ``text`` in the set? False when it is no address."""
        keys = _KEYS.get(text)
        if keys is None:
            keys = address_key(text)
            if keys is None:
                return False
        key, mapped = keys
        lo = self._lo
        if lo is not None:
            if lo <= key <= self._hi:  # type: ignore[operator]
                return True
            return mapped >= 0 and lo <= mapped <= self._hi  # type: ignore[operator]
        if self.has_key(key):
            return True
        return mapped >= 0 and self.has_key(mapped)


class RangeMap:
    """Networks, each with a value; a key's value is that of the longest prefix
    holding it (networks nest or are disjoint, so the innermost wins).

    Built once into disjoint segments, each owned by the innermost network
    covering it, so a lookup is one bisect. Two equal networks: the one given
    last wins.
    """

    __slots__ = ("_ends", "_starts", "_values")

    def __init__(self, items: Iterable[tuple[IPNetwork, Any]]):
        nets = sorted(
            ((*network_bounds(net), n, value) for n, (net, value) in enumerate(items)),
            key=lambda t: (t[0], -t[1], t[2]),
        )
        starts: list[int] = []
        ends: list[int] = []
        values: list[Any] = []

        def emit(lo: int, hi: int, value: Any) -> None:
            if lo <= hi:
                starts.append(lo)
                ends.append(hi)
                values.append(value)

        stack: list[tuple[int, Any]] = []  # (last key, value), outermost first
        cursor = 0
        for lo, hi, _, value in nets:
            while stack and stack[-1][0] < lo:
                end, owner = stack.pop()
                emit(cursor, end, owner)
                cursor = max(cursor, end + 1)
            if stack:
                emit(cursor, lo - 1, stack[-1][1])
            cursor = lo
            stack.append((hi, value))
        while stack:
            end, owner = stack.pop()
            emit(cursor, end, owner)
            cursor = max(cursor, end + 1)
        self._starts, self._ends, self._values = starts, ends, values

    def get(self, key: int, default: Any = None) -> Any:
        """The value of the innermost network holding ``key``; ``default`` when none does."""
        i = bisect_right(self._starts, key) - 1
        if i >= 0 and key <= self._ends[i]:
            return self._values[i]
        return default


_MISSING: Any = object()


class AddressIndex:
    """Several address sets over one field, as one structure: ``mask(value)``
    parses the address once and answers, with one bisect, every set holding it
    as a bit mask (``AddressSet.match`` of each set, all at once).

    The detection engine builds one per field of a block of rules, so a dozen
    ``|cidr`` rules cost one lookup per event, not one per rule and network.
    """

    __slots__ = ("_masks", "_starts")

    def __init__(self, sets: Iterable[tuple[AddressSet, int]]):
        toggles: dict[int, int] = {}
        for aset, bit in sets:
            # Each set's intervals are merged, so its bit flips on and off in turn.
            for lo, hi in zip(aset._starts, aset._ends, strict=True):
                toggles[lo] = toggles.get(lo, 0) ^ bit
                toggles[hi + 1] = toggles.get(hi + 1, 0) ^ bit
        starts, masks = [0], [0]
        current = 0
        for point in sorted(toggles):
            current ^= toggles[point]
            if point == starts[-1]:
                masks[-1] = current
            elif current != masks[-1]:
                starts.append(point)
                masks.append(current)
        self._starts, self._masks = starts, masks

    def mask(self, value: Any) -> int:
        """The bits of the sets holding address ``value`` (a string, or a list
        of them: any element); 0 for anything that is no address."""
        if value.__class__ is str:
            keys = _KEYS.get(value, _MISSING)
            if keys is _MISSING:
                keys = address_key(value)
            if keys is None:
                return 0
            key, mapped = keys
            found: int = self._masks[bisect_right(self._starts, key) - 1]
            if mapped >= 0:
                found |= self._masks[bisect_right(self._starts, mapped) - 1]
            return found
        if value.__class__ is list:
            out = 0
            for item in value:
                out |= self.mask(item)
            return out
        return 0
