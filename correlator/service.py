"""Wiring of one correlator process: rules, store, engines, sender, metrics, loop.

``zonewatch correlate`` and ``zonewatch demo`` both build the process here, so
the demo runs exactly what production runs.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from prometheus_client import Counter

from correlator.stream import STATE_KEY, StreamCorrelator, StreamStats
from zonewatch.config import Settings
from zonewatch.errors import ConfigError, RuleError, ZonewatchError
from zonewatch.logs import get_logger

if TYPE_CHECKING:
    from correlator.alerting.publish import AlertPublisher
    from correlator.correlation import CorrelationEngine
    from correlator.detection import RuleSet
    from correlator.detection.throttle import Throttle
    from correlator.ports import Notifier
    from correlator.rulewatch import RuleWatcher
    from correlator.store import AlertStore
    from zonewatch.metrics import MetricsServer

log = get_logger(__name__)

SUPPRESSED = Counter(
    "zonewatch_detection_suppressed_total",
    "Detection alerts dropped by their rule's suppress: (or the zone-policy default)",
    ["rule"],
)
RELOADS = Counter(
    "zonewatch_rules_reloads_total", "Rule reloads applied (SIGHUP or a rule file change)"
)
RELOAD_FAILURES = Counter(
    "zonewatch_rules_reload_failures_total",
    "Rule reloads refused (a broken edit): the running rules were kept",
)


def load_ruleset(paths: Sequence[Path], pipeline: Any) -> RuleSet:
    """Load rules; report each bad rule with its location and keep the rest.

    ``pipeline``: a name or a built pipeline (``configured_pipeline``)."""
    from correlator.detection import load_rules

    for path in paths:
        if not Path(path).exists():
            raise ConfigError(
                f"rule path {path} does not exist: pass --rules with a file or folder"
            )
    ruleset = load_rules(paths, pipeline=None if pipeline == "none" else pipeline)
    for error in ruleset.errors:
        log.error("rule_not_loaded", error=str(error))
    if not ruleset.detections:
        first = f" (first error: {ruleset.errors[0]})" if ruleset.errors else ""
        raise RuleError(f"no usable detection rule under {', '.join(map(str, paths))}{first}")
    log.info(
        "rules_loaded",
        detections=len(ruleset.detections),
        correlations=len(ruleset.correlations),
        errors=len(ruleset.errors),
    )
    return ruleset


def zone_titles(settings: Settings) -> dict[str, tuple[str, str]]:
    """The zones' names for Teams cards, from ``connectors.zones_file``; none
    (cards show zone ids) when it cannot be read."""
    from zonewatch.zones import load_zone_map

    try:
        return load_zone_map(settings.connectors.zones_file).policy.titles()
    except ZonewatchError as exc:
        log.warning("card_zone_names_unavailable", error=str(exc), showing="zone ids")
        return {}


def stored_rules(ruleset: RuleSet) -> list[Any]:
    """The rules the store records: detections and correlations (so an
    alert's rule text and version can be shown for both)."""
    from correlator.correlation.compiled import correlation_rule_records

    return [*ruleset.detections, *correlation_rule_records(ruleset.correlations)]


def make_correlation_engine(
    ruleset: RuleSet, settings: Settings, stored: bytes | BinaryIO | None
) -> CorrelationEngine | None:
    """The correlation engine for the ruleset's correlation rules, restored from
    the store's last snapshot when there is one (bytes, or a binary file read
    as it goes: ``AlertStore.open_state``); None without correlations."""
    if not ruleset.correlations:
        return None
    from correlator.correlation import CorrelationEngine, CorrelationSettings
    from correlator.correlation.clock import SourceClock

    corr_settings = CorrelationSettings(
        # the largest of the sources': what the stream releases in order
        allowed_lateness_s=SourceClock.from_settings(settings.correlator).max_lateness,
        late_events_update_windows=settings.correlator.late_events_update_windows,
        late_horizon_s=settings.correlator.late_horizon_s,
        max_groups_per_rule=settings.correlator.max_groups_per_rule,
        max_state_bytes=settings.correlator.max_state_bytes,
    )
    resolve = ruleset.rule
    if stored:
        try:
            engine = CorrelationEngine.restore(stored, ruleset.correlations, resolve, corr_settings)
        except Exception as exc:  # an incompatible snapshot must not stop the service
            # Error level: open windows are lost, so correlations spanning the
            # restart can be missed (this once hid a snapshot format bug).
            log.error(
                "correlation_state_discarded",
                reason=str(exc)[:200],
                consequence="correlation windows start empty; correlations across the restart "
                "may be missed",
            )
        else:
            # A state written before event times were bounded may hold a clock
            # in year 9999, which would keep correlation off for good.
            engine.clamp_clock(time.time() + settings.correlator.max_future_skew_s)
            return engine
    return CorrelationEngine(ruleset.correlations, resolve, corr_settings)


# The stream's stored detection alerts of throttled rules whose group holds
# the rule's fields, within the horizon of the rule's newest such alert
# (correlator/detection/throttle.py, ``Throttle.restore``).
_THROTTLE_ROWS = """
    WITH wanted AS (
        SELECT unnest(?::VARCHAR[]) AS rule_id, unnest(?::DOUBLE[]) AS horizon_s,
               unnest(?::VARCHAR[][]) AS fields
    ), kept AS (
        SELECT a.rule_id, a.group_values, a.first_seen, w.horizon_s
        FROM alerts a JOIN wanted w USING (rule_id)
        WHERE a.type = 'detection' AND a.origin = 'stream'
          AND list_has_all(json_keys(a.group_values), w.fields)
    )
    SELECT rule_id, group_values, epoch(first_seen) FROM (
        SELECT *, max(first_seen) OVER (PARTITION BY rule_id) AS newest FROM kept
    )
    WHERE epoch(first_seen) >= epoch(newest) - horizon_s
"""


def restored_throttle(settings: Settings, ruleset: RuleSet, store: AlertStore) -> Throttle:
    """The detection throttle as of the alerts the store holds: exact after
    any stop or crash, because alerts are stored with (or before) the offsets
    covering their events (the reasoning: correlator/detection/throttle.py)."""
    from correlator.detection.throttle import throttle_from_settings

    throttle = throttle_from_settings(
        settings.correlator, on_suppress=lambda rule: SUPPRESSED.labels(rule=rule).inc()
    )
    specs = throttle.throttled(ruleset.detections)
    if not specs:
        return throttle
    ids = list(specs)
    horizons = [max(throttle.horizon_s, specs[r].window) for r in ids]
    fields = [list(specs[r].fields) for r in ids]
    cur = store.cursor()
    try:
        rows = cur.execute(_THROTTLE_ROWS, [ids, horizons, fields]).fetchall()
    finally:
        cur.close()
    taken = throttle.restore(
        ruleset.detections, ((r, orjson.loads(g), float(t)) for r, g, t in rows)
    )
    log.info("detection_throttle_restored", rules=len(specs), alert_times=taken)
    return throttle


def preflight(settings: Settings) -> None:
    """What must hold before the correlator creates anything (its DuckDB file
    first): the metrics port is free, the broker answers with the configured
    security, the store can be written. Each failure is one line naming the
    fix, within the broker wait's bound (kafka.connect_timeout_s)."""
    from zonewatch.kafka import wait_for_broker
    from zonewatch.preflight import check_port_free, check_writable

    cfg = settings.correlator
    if cfg.metrics_port is not None:
        check_port_free(
            cfg.metrics_host, cfg.metrics_port, "the correlator's /metrics", "--metrics-port"
        )
    check_writable(cfg.db_path, "alert store (--db)")
    wait_for_broker(settings.kafka, settings.kafka.connect_timeout_s)


class CorrelatorService:
    """Owns the resources of one correlator; ``with`` closes them in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_consumer_opts: dict[str, Any] | None = None,
    ):
        from datetime import timedelta

        from correlator.alerting.webhooks import load_routing
        from correlator.budget import check_memory_budget
        from correlator.detection.pipelines import configured_pipeline
        from correlator.store import AlertStore
        from correlator.store.limits import QueryLimits

        self.settings = settings
        cfg = settings.correlator
        # Settings that cannot hold together stop here (exit 78), not at the
        # first flood (correlator/budget.py), and before any network wait.
        log.info("memory_budget", bytes=check_memory_budget(cfg))
        preflight(settings)
        self.ruleset = load_ruleset(cfg.rules, configured_pipeline(cfg))
        cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.routing = (
            load_routing(settings.teams.routing_file) if settings.teams.routing_file else None
        )
        retention = timedelta(days=cfg.events_retention_days) if cfg.events_retention_days else None
        store_options: dict[str, Any] = {
            "events_retention": retention,
            "memory_limit": cfg.store_memory_limit,
            "query_limits": QueryLimits.from_settings(cfg),
        }
        if self.routing is not None:
            store_options["router"] = self.routing
        self.store = AlertStore(cfg.db_path, **store_options)
        self.store.register_rules(stored_rules(self.ruleset))
        # Scaled out, each shard's state comes from the changelog on assignment.
        # Read a few megabytes at a time as the engine unpickles it.
        stored = None if cfg.scale_out else self.store.open_state(STATE_KEY)
        try:
            self.correlation = make_correlation_engine(self.ruleset, settings, stored)
        finally:
            if stored is not None:
                stored.close()
        self.sender = self._make_sender()
        self.metrics: MetricsServer | None = None
        self.loop: StreamCorrelator | None = None
        self.watcher: RuleWatcher | None = None
        self.publisher: AlertPublisher | None = None
        self._extra = extra_consumer_opts or {}

    def _make_sender(self) -> Notifier | None:
        from correlator.alerting import OutboxSender

        teams = self.settings.teams
        has_default = teams.webhook_url is not None or (
            teams.secrets_file is not None and OutboxSender.read_secret_file(teams.secrets_file)
        )
        if not has_default and self.routing is None:
            log.info("teams_disabled", reason="no webhook configured")
            return None
        return OutboxSender.from_settings(
            self.store,
            teams,
            self.routing,
            db_path_in_cards=str(self.settings.correlator.db_path),
            console_url=self.settings.console.public_url,
            locale=teams.locale or self.settings.console.locale,
            zones=zone_titles(self.settings),
        )

    def reload_rules(self) -> tuple[Any, Any] | None:
        """Load the rules again (SIGHUP, or a change the rule watcher saw): new
        correlation rules start empty, removed ones drop their state,
        unchanged ones (same content) keep it.

        A rule set that does not load, or that has an error the running one
        did not have (a broken edit), is refused: the running rules stay in
        place, the refusal is logged (``rules_reload_refused``) and counted
        (``zonewatch_rules_reload_failures_total``)."""
        from correlator.detection.pipelines import configured_pipeline

        cfg = self.settings.correlator
        try:
            ruleset = load_ruleset(cfg.rules, configured_pipeline(cfg))
        except ZonewatchError as exc:
            self._reload_refused(str(exc))
            return None
        except Exception as exc:  # a bad edit must never stop a running correlator
            self._reload_refused(f"{type(exc).__name__}: {str(exc)[:300]}")
            return None
        known = {str(e) for e in self.ruleset.errors}
        new_errors = [str(e) for e in ruleset.errors if str(e) not in known]
        if new_errors:
            # Loading around a broken rule would silently drop it: refuse the
            # edit instead, so the rule keeps working until it is fixed.
            self._reload_refused(new_errors[0], errors=new_errors)
            return None
        self.store.register_rules(stored_rules(ruleset))
        old = self.correlation
        if not ruleset.correlations:
            engine = None
        elif old is None:
            engine = make_correlation_engine(ruleset, self.settings, None)
        else:
            engine = old.reload(ruleset.correlations, ruleset.rule)
        before = {c.rule_hash: c.id for c in old.rules} if old is not None else {}
        after = {c.rule_hash: c.id for c in engine.rules} if engine is not None else {}
        log.info(
            "rules_reloaded",
            detections=len(ruleset.detections),
            correlations_kept=sorted(after[h] for h in after.keys() & before.keys()),
            correlations_started=sorted(after[h] for h in after.keys() - before.keys()),
            correlations_dropped=sorted(before[h] for h in before.keys() - after.keys()),
        )
        RELOADS.inc()
        self.ruleset = ruleset
        self.correlation = engine
        from correlator.alerting import OutboxSender

        if isinstance(self.sender, OutboxSender):
            self.sender.zones = zone_titles(self.settings)  # zones.yaml may have changed
        return ruleset, engine

    def _reload_refused(self, error: str, errors: Sequence[str] = ()) -> None:
        RELOAD_FAILURES.inc()
        log.error(
            "rules_reload_refused",
            error=error,
            errors=len(errors) or 1,
            keeping="the running rules",
            fix="correct the rule file; the next save reloads (or send SIGHUP)",
        )

    def _watch_rules(self) -> None:
        """Reload when a rule file, ``zones.yaml`` or the placeholder file
        changes (``correlator.watch_rules``)."""
        from correlator.rulewatch import RuleWatcher

        cfg = self.settings.correlator
        if not cfg.watch_rules or self.loop is None:
            return
        loop = self.loop
        self.watcher = RuleWatcher(
            cfg.rules,
            [self.settings.connectors.zones_file, cfg.placeholders_file],
            lambda _files: loop.request_reload(),
            debounce_s=cfg.watch_debounce_s,
        ).start()

    def start(self) -> CorrelatorService:
        from zonewatch.kafka import ensure_topics, make_consumer

        kafka = self.settings.kafka
        ensure_topics(kafka)
        options: dict[str, Any] = {}
        if self.settings.correlator.scale_out:
            from zonewatch.kafka import correlation_topics, legacy_topics_note

            names = self.settings.scale_out_topics
            internal = correlation_topics(names)
            # Created now: the group's first start, or its first since the
            # internal topics became per group (an upgrade may leave windows).
            if ensure_topics(kafka, list(internal), configs=internal):
                note = legacy_topics_note(kafka, names)
                if note:
                    log.warning("legacy_scale_out_topics", note=note)
            # kafka-python fetches again only once everything buffered is
            # returned: with a large source backlog buffered, the hits topic
            # would wait for all of it. Smaller fetches keep it flowing.
            options = {"fetch_max_bytes": 1 << 20, "max_partition_fetch_bytes": 256 << 10}
        consumer = make_consumer(
            kafka,
            self.settings.correlator.group_id,
            max_poll_records=self.settings.correlator.max_batch,
            **{**options, **self._extra},
        )
        if self.settings.correlator.scale_out:
            from correlator.scaleout.stage import RepartitionedStream

            self.loop = RepartitionedStream(
                self.settings,
                self.ruleset,
                self.store,
                correlation=self.correlation,
                consumer=consumer,
            )
        else:
            self.loop = StreamCorrelator(
                self.settings,
                self.ruleset,
                self.store,
                correlation=self.correlation,
                consumer=consumer,
            )
        self.loop.reloader = self.reload_rules
        self.loop.throttle = restored_throttle(self.settings, self.ruleset, self.store)
        self._watch_rules()
        port = self.settings.correlator.metrics_port
        if port is not None:
            from zonewatch.metrics import serve_metrics

            self.metrics = serve_metrics(
                self.settings.correlator.metrics_host, port, health=self.loop.healthy
            )
        # While this process holds the DuckDB file, `zonewatch query` asks it.
        from correlator.store.server import serve_queries

        serve_queries(self.store)
        if self.sender is not None:
            self.sender.start()
        if self.settings.correlator.publish_alerts:
            from correlator.alerting.publish import AlertPublisher

            self.publisher = AlertPublisher(
                self.store,
                kafka,
                transaction_records=self.settings.correlator.publish_transaction_records,
                in_child=self.settings.correlator.publish_process,
            ).start()
        return self

    def run(
        self,
        until: Callable[[StreamStats], bool] | None = None,
        idle_timeout_s: float | None = None,
        install_signal_handlers: bool = False,
        end_of_input: bool = False,
    ) -> StreamStats:
        assert self.loop is not None, "start() first"
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            loop = self.loop

            def _graceful(signum: int, _frame: FrameType | None) -> None:
                log.info("stopping", signal=signal.Signals(signum).name)
                loop.stop()

            def _reload(_signum: int, _frame: FrameType | None) -> None:
                log.info("reload_requested", signal="SIGHUP")
                loop.request_reload()

            signal.signal(signal.SIGTERM, _graceful)
            signal.signal(signal.SIGINT, _graceful)
            signal.signal(signal.SIGHUP, _reload)
        return self.loop.run(until=until, idle_timeout_s=idle_timeout_s, end_of_input=end_of_input)

    def close(self, drain_timeout_s: float = 10.0) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.loop is not None:
            self.loop.close()
        if self.sender is not None:
            self.sender.stop(drain=True, timeout_s=drain_timeout_s)
        if self.publisher is not None:
            self.publisher.stop(drain=True, timeout_s=drain_timeout_s)
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()

    def __enter__(self) -> CorrelatorService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
