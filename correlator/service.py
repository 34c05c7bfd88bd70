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

from pydantic import SecretStr

from correlator.stream import STATE_KEY, StreamCorrelator, StreamStats
from zonewatch.config import Settings
from zonewatch.errors import ConfigError, RuleError, ZonewatchError
from zonewatch.logs import get_logger

if TYPE_CHECKING:
    from correlator.correlation import CorrelationEngine
    from correlator.detection import RuleSet
    from correlator.ports import Notifier
    from zonewatch.metrics import MetricsServer

log = get_logger(__name__)


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

    corr_settings = CorrelationSettings(
        allowed_lateness_s=settings.correlator.allowed_lateness_s,
        late_events_update_windows=settings.correlator.late_events_update_windows,
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
        teams_url: str | None = None,
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
        self.sender = self._make_sender(teams_url)
        self.metrics: MetricsServer | None = None
        self.loop: StreamCorrelator | None = None
        self._extra = extra_consumer_opts or {}

    def _make_sender(self, teams_url: str | None) -> Notifier | None:
        from correlator.alerting import OutboxSender

        teams = self.settings.teams
        if teams_url is not None:
            teams = teams.model_copy(update={"webhook_url": SecretStr(teams_url)})
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
        """Load the rules again (SIGHUP): new correlation rules start empty,
        removed ones drop their state, unchanged ones (same content) keep it.
        A rule set that does not load leaves the running rules in place."""
        from correlator.detection.pipelines import configured_pipeline

        cfg = self.settings.correlator
        try:
            ruleset = load_ruleset(cfg.rules, configured_pipeline(cfg))
        except ZonewatchError as exc:
            log.error("rules_reload_failed", error=str(exc), keeping="the running rules")
            return None
        except Exception as exc:  # a bad edit must never stop a running correlator
            log.error(
                "rules_reload_failed",
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
                keeping="the running rules",
            )
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
        self.ruleset = ruleset
        self.correlation = engine
        return ruleset, engine

    def start(self) -> CorrelatorService:
        from zonewatch.kafka import ensure_topics, make_consumer

        kafka = self.settings.kafka
        ensure_topics(kafka)
        options: dict[str, Any] = {}
        if self.settings.correlator.scale_out:
            from zonewatch.kafka import correlation_topics

            internal = correlation_topics(kafka)
            ensure_topics(kafka, list(internal), configs=internal)
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
        if self.loop is not None:
            self.loop.close()
        if self.sender is not None:
            self.sender.stop(drain=True, timeout_s=drain_timeout_s)
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()

    def __enter__(self) -> CorrelatorService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
