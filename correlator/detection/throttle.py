"""Per-entity throttling of single-event detection alerts (``suppress:``).

A detection rule takes the attribute correlations take::

    suppress: 10m                                   # the rule as a whole
    suppress: {window: 10m, fields: [source.ip]}    # per source.ip

and then raises at most one alert per suppression key (the ``fields``'
values, strings compared case-insensitively, read as correlations read
their group-by) within ``window`` of EVENT time: an event whose time is less
than ``window`` from an alert of the same rule and key, before or after it,
is counted and dropped. Rules generated from ``zones.yaml`` take the
``correlator.zone_policy_suppress`` default unless they say otherwise. An
event lacking one of the fields is never suppressed: an alert nobody can
attribute is not hidden, nor is one stamped beyond the correlator's time
bounds (its time cannot decide anything; ``stream.py`` flags those alerts).
The admitted alert carries its key as ``group``.

Why event time and both sides: the decision depends on the input only, not
on when it is read, so ``match``, ``correlate`` and ``hunt`` agree on the
same events in the same order; an event arriving after a newer alert of its
key (a slow input partition) is judged against it too, instead of opening a
second alert seconds before the first.

Exact across restarts and ``kill -9`` -- how: the state is
``{rule: {key: [alert times]}}``, and every alert time in it is an alert the
throttle admitted. Admitted alerts are stored in DuckDB atomically with (or
before) the offsets that cover their events, so the state is rebuilt on start
from the stored alerts (``restore``; ``correlator/service.py`` reads them)
rather than checkpointed beside the correlation state. That rebuild may hold
MORE than the state had at the resume offsets: alerts of a batch stored after
the last full checkpoint, whose events the restart reads again. That is what
keeps it exact: such an event finds its own alert time in the state and is
suppressed (its alert is already stored, with the same id), an event the first
run suppressed finds the alert that suppressed it, and a new alert is admitted
only at least ``window`` away from every stored one. So after any number of
crashes the store holds one alert per key and window, never two, and every
dropped event is within ``window`` of a stored alert -- whatever order the
replay reads partitions in. A checkpointed copy of the state could not do
this: it would forget the alerts stored after it, and a replay interleaving
partitions differently could admit a second alert beside one already stored.

Bounded memory: alert times more than ``horizon`` (a day, or the window if
longer) older than the newest alert of their rule are forgotten, both in
memory and in the rebuild, so an event that late may alert again beside an
alert it would otherwise meet. Each time is a float in a list per key
(about 260 bytes per remembered key with its tuple: 100,000 hosts, 26 MB);
a key alerts at most once per window, so a list holds at most
``horizon / window`` times.

``--scale-out``: each member rebuilds from its own store, so a key whose
input partition moves to another member may alert once more there.
``suppressed`` and the metric count decisions: events a restart reads again
are counted again.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from correlator.correlation.fields import Getter
    from zonewatch.config import CorrelatorSettings
    from zonewatch.models import Alert, Evidence

SUPPRESS_ATTRIBUTE = "suppress"
# How far behind its rule's newest alert an alert time is still remembered.
HORIZON_S = 86400.0
# Keys of the zone-policy default: one alert per host and destination zone.
ZONE_POLICY_FIELDS = ("source.ip", "zone.destination")


class _Rule(Protocol):
    """What the throttle reads of a ``_Rule``."""

    @property
    def id(self) -> str: ...
    @property
    def generate(self) -> bool: ...
    @property
    def suppress(self) -> Suppression | None: ...
    @property
    def zone_policy(self) -> bool: ...


@dataclass(frozen=True)
class Suppression:
    """A rule's throttle: one alert per ``fields`` key within ``window`` seconds."""

    window: float
    fields: tuple[str, ...] = ()
    key: Getter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Imported here: ``correlator.correlation`` loads its engine, which
        # commands that only load rules do not need.
        from correlator.correlation.fields import key_getter

        object.__setattr__(self, "key", key_getter(self.fields))

    @classmethod
    def parse(cls, raw: Any) -> Suppression:
        """The ``suppress`` attribute; ``ValueError`` says what to fix (the
        same words as for a correlation rule)."""
        from correlator.correlation.compiled import parse_suppress

        window, fields = parse_suppress(raw)
        if window <= 0:
            raise ValueError(f"suppress window must be longer than 0s, got {raw!r}")
        return cls(window, tuple(fields or ()))


def zone_policy_suppression(window: str | None, fields: Sequence[str]) -> Suppression | None:
    """The settings' default for generated zone-policy rules (``off``/None: none)."""
    if window is None or window.strip().lower() == "off":
        return None
    return Suppression.parse({"window": window, "fields": list(fields)})


def throttle_from_settings(
    cfg: CorrelatorSettings | None = None, on_suppress: Callable[[str], None] | None = None
) -> Throttle:
    """An empty throttle with the zone-policy default of ``cfg`` (default settings if None)."""
    if cfg is None:
        from zonewatch.config import CorrelatorSettings

        cfg = CorrelatorSettings()
    policy = zone_policy_suppression(cfg.zone_policy_suppress, cfg.zone_policy_suppress_fields)
    return Throttle(policy, on_suppress=on_suppress)


class Throttle:
    """Which detection alerts to raise, in event time (see the module docstring).

    ``zone_policy``: the suppression of generated zone-policy rules that have
    none of their own. ``on_suppress(rule_id)`` is called for each dropped
    alert (the correlator counts it in Prometheus)."""

    def __init__(
        self,
        zone_policy: Suppression | None = None,
        *,
        horizon_s: float = HORIZON_S,
        on_suppress: Callable[[str], None] | None = None,
    ) -> None:
        self.zone_policy = zone_policy
        self.horizon_s = horizon_s
        self.on_suppress = on_suppress
        self.suppressed: dict[str, int] = {}
        # rule id -> key -> sorted alert times (epoch seconds)
        self._times: dict[str, dict[tuple[Any, ...], list[float]]] = {}
        self._newest: dict[str, float] = {}
        self._swept: dict[str, float] = {}

    def suppression(self, rule: _Rule) -> Suppression | None:
        if rule.suppress is not None:
            return rule.suppress
        return self.zone_policy if rule.zone_policy else None

    def throttled(self, rules: Iterable[_Rule]) -> dict[str, Suppression]:
        """Rule id -> suppression, for the rules that have one."""
        out = {}
        for rule in rules:
            spec = self.suppression(rule)
            if spec is not None:
                out[rule.id] = spec
        return out

    def alerts(
        self,
        hits: Iterable[_Rule],
        evidence: Evidence,
        make_alert: Callable[[Any, Evidence], Alert],
    ) -> list[Alert]:
        """The alerts of the rules in ``hits`` that generate alerts, less
        those the throttle drops; throttled alerts carry their key as group."""
        out = []
        for rule in hits:
            if not rule.generate:
                continue
            spec = rule.suppress
            if spec is None and rule.zone_policy:
                spec = self.zone_policy
            if spec is None:
                out.append(make_alert(rule, evidence))
                continue
            key = spec.key(evidence.event)
            if key is None:  # a field is missing: never suppressed
                out.append(make_alert(rule, evidence))
            elif self.admit(rule.id, spec.window, key, evidence.time.timestamp()):
                alert = make_alert(rule, evidence)
                out.append(replace(alert, group=dict(zip(spec.fields, key, strict=True))))
        return out

    def admit(self, rule_id: str, window: float, key: tuple[Any, ...], t: float) -> bool:
        """Whether an event of ``rule_id`` at ``t`` with ``key`` alerts; if so,
        its time is remembered. Otherwise it is counted."""
        horizon = max(self.horizon_s, window)
        table = self._times.get(rule_id)
        if table is None:
            table = self._times[rule_id] = {}
        times = table.get(key)
        if times is not None:
            floor = self._newest[rule_id] - horizon
            i = bisect.bisect_left(times, t)
            # The nearest remembered alert on each side decides.
            if (i < len(times) and times[i] - t < window and times[i] >= floor) or (
                i > 0 and t - times[i - 1] < window and times[i - 1] >= floor
            ):
                self.suppressed[rule_id] = self.suppressed.get(rule_id, 0) + 1
                if self.on_suppress is not None:
                    self.on_suppress(rule_id)
                return False
            times.insert(i, t)
        else:
            table[key] = [t]
        self._remember(rule_id, t, horizon)
        return True

    def _remember(self, rule_id: str, t: float, horizon: float) -> None:
        if t <= self._newest.get(rule_id, -math.inf):
            return
        self._newest[rule_id] = t
        if t - self._swept.setdefault(rule_id, t) >= horizon:
            self._sweep(rule_id, horizon)

    def _sweep(self, rule_id: str, horizon: float) -> None:
        """Forget alert times no decision reads any more (older than the
        rule's newest alert by more than ``horizon``); once per horizon."""
        newest = self._newest[rule_id]
        self._swept[rule_id] = newest
        floor = newest - horizon
        table = self._times[rule_id]
        for key in list(table):
            kept = [a for a in table[key] if a >= floor]
            if kept:
                table[key] = kept
            else:
                del table[key]

    def restore(
        self,
        rules: Iterable[_Rule],
        stored: Iterable[tuple[str, dict[str, Any] | None, datetime | float]],
    ) -> int:
        """Rebuild the state from stored alerts ``(rule_id, group, first_seen)``
        of the stream (``correlator/service.py``, ``throttle_rows``).

        Alerts of rules without a suppression now, or whose group lacks a
        field of it (stored before its ``fields`` changed), are skipped.
        Returns how many alert times were taken."""
        from correlator.correlation.fields import norm

        specs = self.throttled(rules)
        taken = 0
        for rule_id, group, when in stored:
            spec = specs.get(rule_id)
            if spec is None or not isinstance(group, dict):
                continue
            if any(f not in group for f in spec.fields):
                continue
            key = tuple(norm(group[f]) for f in spec.fields)
            if None in key:
                continue
            t = when.timestamp() if isinstance(when, datetime) else float(when)
            times = self._times.setdefault(rule_id, {}).setdefault(key, [])
            bisect.insort(times, t)
            if t > self._newest.get(rule_id, -math.inf):
                self._newest[rule_id] = t
            taken += 1
        for rule_id in self._newest:
            spec = specs.get(rule_id)
            if spec is not None:
                self._sweep(rule_id, max(self.horizon_s, spec.window))
        return taken

    def snapshot(self) -> dict[str, dict[tuple[Any, ...], list[float]]]:
        """The remembered alert times (for tests and debugging)."""
        return {r: {k: list(v) for k, v in t.items()} for r, t in self._times.items() if t}

    def entries(self) -> int:
        return sum(len(v) for t in self._times.values() for v in t.values())
