"""The outbox sender: drains the store's outbox to Teams, in order, once.

Each destination has its own worker thread, DuckDB cursor, HTTP client and
pacing, so one webhook's outage never delays another's alerts. A row goes
``pending -> sending -> delivered``; ``sending`` is committed *before* the
request, so a row found in ``sending`` at start-up was in flight when the
process died: its outcome is unknown, it is counted and sent again. That is
the only way an alert reaches Teams twice. Rows are marked delivered only on
a 2xx answer.

Outcomes: 2xx delivered; 429/5xx/refused connection retried with backoff
(``Retry-After`` wins); timeouts and resets after the request was sent are
retried and counted as unknown outcomes; 400/413 reject the row (the card
itself is refused; the row keeps the status for an operator);
401/403/404/410 keep the row and back off, because the webhook needs fixing
and the alert must not be lost meanwhile.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import httpx
import orjson

from correlator.alerting.card import digest_card, message_card, teams_card
from correlator.alerting.labels import Locale, ZoneTitles, rule_description
from correlator.alerting.policy import (
    Backoff,
    Clock,
    Outcome,
    Pacer,
    RealClock,
    classify_status,
    parse_retry_after,
)
from correlator.alerting.webhooks import (
    Destination,
    Routing,
    WebhookUrl,
    read_secrets_file,
    resolve_webhooks,
)
from correlator.store.read import load_alerts, rule_text
from zonewatch.logs import get_logger

if TYPE_CHECKING:
    from correlator.store.alert_store import AlertStore
    from zonewatch.config import TeamsSettings

log = get_logger(__name__)

METRIC_NAMES = (
    "requests",
    "delivered_alerts",
    "digests",
    "retries",
    "rate_limited",
    "unknown_outcomes",
    "rejected_alerts",
    "misconfigured",
    "store_errors",
)


@dataclass(frozen=True)
class _Row:
    seq: int
    alert_id: str
    state: str
    created_at: datetime


class OutboxSender:
    """Delivers outbox rows of an :class:`AlertStore` to their webhooks."""

    def __init__(
        self,
        store: AlertStore,
        webhooks: Mapping[str, WebhookUrl | str] | WebhookUrl | str,
        routing: Routing | None = None,
        *,
        requests_per_second: float = 4.0,
        timeout_s: float = 10.0,
        link_template: str | None = None,
        db_path_in_cards: str | None = None,
        console_url: str | None = None,
        locale: Locale = "ja",
        zones: ZoneTitles | None = None,
        poll_s: float = 1.0,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        registry: Any = None,
    ) -> None:
        self.store = store
        if isinstance(webhooks, str | WebhookUrl):
            webhooks = {"default": webhooks}  # one URL: everything goes to "default"
        self.webhooks = {
            name: url if isinstance(url, WebhookUrl) else WebhookUrl(name, url)
            for name, url in webhooks.items()
        }
        self.routing = routing or Routing()
        self.requests_per_second = requests_per_second
        self.timeout_s = timeout_s
        self.link_template = link_template
        self.db_path_in_cards = db_path_in_cards
        self.console_url = console_url
        self.locale: Locale = locale
        self.zones: ZoneTitles = zones or {}
        # (rule id, rule hash) -> description: a rule version's text never changes
        self._descriptions: dict[tuple[str, str | None], str | None] = {}
        self.poll_s = poll_s
        self.clock: Clock = clock or RealClock()
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._workers: list[_Worker] = []
        self._pacers: dict[str, Pacer] = {}
        self._metrics = dict.fromkeys(METRIC_NAMES, 0)
        self._metrics_lock = threading.Lock()
        # commit-to-2xx seconds of recent deliveries (wall clock), for p99
        self.latencies: deque[float] = deque(maxlen=10_000)
        self._prom = _prometheus(registry) if registry is not None else None
        store.on_commit(self._wake_all)

    @classmethod
    def from_settings(
        cls,
        store: AlertStore,
        teams: TeamsSettings,
        routing: Routing | None = None,
        **kwargs: Any,
    ) -> OutboxSender:
        """Sender for ``settings.teams``; ConfigError when a destination has no URL."""
        routing = routing or Routing()
        hooks = resolve_webhooks(
            routing.destinations,
            secrets_file=teams.secrets_file,
            default_url=teams.webhook_url.get_secret_value() if teams.webhook_url else None,
        )
        kwargs.setdefault("requests_per_second", teams.requests_per_second)
        kwargs.setdefault("timeout_s", teams.timeout_s)
        kwargs.setdefault("link_template", teams.alert_link_template)
        return cls(store, hooks, routing, **kwargs)

    def description(self, cur: duckdb.DuckDBPyConnection, alert: Any) -> str | None:
        """The ``description`` of the rule version that raised ``alert``, from
        the store's ``rules`` table (cached: a version's text never changes)."""
        key = (str(alert.rule_id), alert.rule_hash)
        try:
            return self._descriptions[key]
        except KeyError:
            pass
        found = rule_description(rule_text(cur, *key))
        if len(self._descriptions) >= 4096:  # workers share it; a clear costs a re-read
            self._descriptions.clear()
        self._descriptions[key] = found
        return found

    @staticmethod
    def read_secret_file(path: Path | str) -> str | None:
        """The ``default`` webhook URL from a secrets file, if it names one."""
        return read_secrets_file(path).get("default")

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> OutboxSender:
        if self._workers:
            return self
        self._stop.clear()
        for name, url in self.webhooks.items():
            worker = _Worker(self, self.routing.destination(name), url)
            worker.start()
            self._workers.append(worker)
        log.info("outbox_sender_started", destinations=sorted(self.webhooks))
        return self

    def stop(self, drain: bool = True, timeout_s: float = 30.0) -> bool:
        """Stop the workers; with ``drain`` first wait for the outbox to empty."""
        drained = self.drain(timeout_s) if drain and self._workers else False
        self._stop.set()
        self._wake_all()
        for worker in self._workers:
            worker.join(timeout=self.timeout_s + 5)
        self._workers = []
        return drained

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait (real time) until nothing is pending for our destinations."""
        deadline = time.monotonic() + timeout_s
        self._wake_all()
        while True:
            if self.pending() == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._progress:
                self._progress.wait(min(left, 0.05))

    def pending(self) -> int:
        names = list(self.webhooks)
        if not names:
            return 0
        cur = self.store.cursor()
        try:
            row = cur.execute(
                "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending') "
                "AND destination IN (SELECT unnest(?::VARCHAR[]))",
                [names],
            ).fetchone()
        finally:
            cur.close()
        return int(row[0]) if row else 0

    @property
    def metrics(self) -> dict[str, int]:
        with self._metrics_lock:
            return dict(self._metrics)

    def _count(self, name: str, destination: str, n: int = 1) -> None:
        with self._metrics_lock:
            self._metrics[name] += n
        if self._prom is not None:
            self._prom.labels(destination=destination, result=name).inc(n)

    def _pacer_for(self, url: WebhookUrl, rate: float) -> Pacer:
        # One pacer per webhook URL: two destinations posting to the same
        # channel share its 4 requests per second.
        with self._metrics_lock:
            pacer = self._pacers.get(url.secret())
            if pacer is None:
                pacer = self._pacers[url.secret()] = Pacer(rate, self.clock)
            return pacer

    def _wake_all(self) -> None:
        for worker in self._workers:
            worker.wake.set()

    def _progressed(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def __enter__(self) -> OutboxSender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(drain=False)


def _prometheus(registry: Any) -> Any:
    from prometheus_client import Counter

    return Counter(
        "zonewatch_teams_outbox_total",
        "Outbox sender events by destination and result",
        ["destination", "result"],
        registry=registry,
    )


class _Worker(threading.Thread):
    def __init__(self, sender: OutboxSender, dest: Destination, url: WebhookUrl) -> None:
        super().__init__(name=f"outbox-{dest.name}", daemon=True)
        self.sender = sender
        self.dest = dest
        self.url = url
        self.wake = threading.Event()
        self.failures = 0
        self.no_digest_through = 0  # seq up to which digests were refused
        self.misconfigured_reported = False
        rate = dest.requests_per_second or sender.requests_per_second
        self.pacer = sender._pacer_for(url, rate)
        self.log = log.bind(destination=dest.name, host=url.host)

    # -- loop --------------------------------------------------------------

    def run(self) -> None:
        s = self.sender
        cur = s.store.cursor()
        client = httpx.Client(timeout=s.timeout_s, follow_redirects=False)
        try:
            while not s._stop.is_set():
                self.wake.clear()
                try:
                    rows = self._pending(cur)
                except duckdb.Error as exc:
                    s._count("store_errors", self.dest.name)
                    self.log.error("outbox_read_failed", error=str(exc))
                    self._pause(self.sender.backoff.delay(1, s.rng))
                    continue
                if not rows:
                    s.clock.wait(self.wake, s.poll_s)
                    continue
                try:
                    self._deliver(cur, client, self._batch(rows))
                except duckdb.Error as exc:
                    s._count("store_errors", self.dest.name)
                    self.log.error("outbox_update_failed", error=str(exc))
                    self._pause(self.sender.backoff.delay(1, s.rng))
                except Exception:  # never let the worker die: alerts would stall
                    s._count("store_errors", self.dest.name)
                    self.log.exception("outbox_worker_error")
                    self._pause(self.sender.backoff.delay(2, s.rng))
                s._progressed()
        finally:
            client.close()
            cur.close()

    def _pause(self, seconds: float) -> None:
        self.sender.clock.wait(self.sender._stop, seconds)

    def _pending(self, cur: duckdb.DuckDBPyConnection) -> list[_Row]:
        limit = max(self.dest.digest_max, (self.dest.digest_threshold or 0) + 1, 1)
        found = cur.execute(
            "SELECT seq, alert_id, state, created_at FROM outbox "
            "WHERE destination = ? AND state IN ('pending', 'sending') ORDER BY seq LIMIT ?",
            [self.dest.name, limit],
        ).fetchall()
        return [_Row(*r) for r in found]

    def _batch(self, rows: list[_Row]) -> list[_Row]:
        threshold = self.dest.digest_threshold
        if (
            threshold is not None
            and self.dest.format == "adaptive"
            and len(rows) > threshold
            and rows[0].seq > self.no_digest_through
        ):
            return rows[: self.dest.digest_max]
        return rows[:1]

    # -- one request ---------------------------------------------------------

    def _deliver(
        self, cur: duckdb.DuckDBPyConnection, client: httpx.Client, batch: list[_Row]
    ) -> None:
        s = self.sender
        seqs = [r.seq for r in batch]
        alerts = load_alerts(cur, [r.alert_id for r in batch], evidence_limit=5)
        missing = [r.seq for r in batch if r.alert_id not in alerts]
        if missing:
            self._finish(cur, missing, "rejected", None, "alert row missing from the store")
            s._count("rejected_alerts", self.dest.name, len(missing))
            return
        try:
            body = orjson.dumps(self._payload(cur, batch, alerts))
        except Exception as exc:  # a card that cannot be built must not block the queue
            self.log.exception("teams_card_failed", seqs=seqs)
            self._finish(cur, seqs, "rejected", None, f"card could not be built: {exc!r}"[:200])
            s._count("rejected_alerts", self.dest.name, len(seqs))
            return

        in_flight_before = [r.seq for r in batch if r.state == "sending"]
        if in_flight_before:
            # The previous process died mid-request: Teams may have it already.
            s._count("unknown_outcomes", self.dest.name, len(in_flight_before))
            self.log.warning("outbox_unknown_outcome_resend", seqs=in_flight_before)
        cur.execute(
            "UPDATE outbox SET unknown_outcomes = unknown_outcomes + "
            "CASE WHEN state = 'sending' THEN 1 ELSE 0 END, state = 'sending', "
            "attempts = attempts + 1, last_attempt_at = ? "
            "WHERE seq IN (SELECT unnest(?::BIGINT[]))",
            [s.clock.wall(), seqs],
        )

        if not self.pacer.acquire(s._stop):
            # Stopped while waiting for its turn: nothing was sent.
            self._finish(cur, seqs, "pending", None, None)
            return
        s._count("requests", self.dest.name)
        status, retry_after, outcome, error = self._post(client, body)

        if outcome is Outcome.DELIVERED:
            self._finish(cur, seqs, "delivered", status, None, digest_of=len(batch))
            s._count("delivered_alerts", self.dest.name, len(batch))
            if len(batch) > 1:
                s._count("digests", self.dest.name)
            now = datetime.now(UTC)
            s.latencies.extend((now - r.created_at).total_seconds() for r in batch)
            self.failures = 0
            self.misconfigured_reported = False
            return
        if outcome is Outcome.REJECTED:
            if len(batch) > 1:
                # A digest was refused (too big?): send these one by one instead.
                self.no_digest_through = seqs[-1]
                self._finish(cur, seqs, "pending", status, error)
                return
            self._finish(cur, seqs, "rejected", status, error)
            s._count("rejected_alerts", self.dest.name)
            self.log.error("teams_rejected_alert", seq=seqs[0], status=status, error=error)
            return

        unknown = outcome is Outcome.UNKNOWN
        cur.execute(
            "UPDATE outbox SET state = 'pending', last_status = ?, last_error = ?, "
            "unknown_outcomes = unknown_outcomes + ? WHERE seq IN (SELECT unnest(?::BIGINT[]))",
            [status, error, 1 if unknown else 0, seqs],
        )
        self.failures += 1
        if unknown:
            s._count("unknown_outcomes", self.dest.name, len(batch))
        else:
            s._count("retries", self.dest.name)
        if status == 429:
            s._count("rate_limited", self.dest.name)
        if outcome is Outcome.MISCONFIGURED:
            s._count("misconfigured", self.dest.name)
            if not self.misconfigured_reported:
                self.misconfigured_reported = True
                self.log.error(
                    "teams_webhook_refused",
                    status=status,
                    fix="the webhook was removed or its URL changed: update the secrets; "
                    "alerts are kept and retried",
                )
        delay = s.backoff.after(self.failures, retry_after, s.rng)
        self.log.warning(
            "teams_delivery_retry",
            status=status,
            error=error,
            unknown_outcome=unknown,
            retry_in_s=round(delay, 3),
            failures=self.failures,
        )
        self._pause(delay)

    def _payload(
        self,
        cur: duckdb.DuckDBPyConnection,
        batch: list[_Row],
        alerts: Mapping[str, tuple[Any, int]],
    ) -> dict[str, Any]:
        s = self.sender
        words: dict[str, Any] = {"locale": s.locale, "zones": s.zones}
        if len(batch) > 1:
            return digest_card(
                [alerts[r.alert_id][0] for r in batch],
                link_template=s.link_template,
                db_path=s.db_path_in_cards,
                console_url=s.console_url,
                **words,
            )
        alert, total = alerts[batch[0].alert_id]
        words["description"] = s.description(cur, alert)
        if self.dest.format == "messagecard":
            return message_card(
                alert,
                link_template=s.link_template,
                evidence_total=total,
                console_url=s.console_url,
                **words,
            )
        return teams_card(
            alert,
            link_template=s.link_template,
            db_path=s.db_path_in_cards,
            evidence_total=total,
            console_url=s.console_url,
            **words,
        )

    def _post(
        self, client: httpx.Client, body: bytes
    ) -> tuple[int | None, float | None, Outcome, str | None]:
        try:
            response = client.post(
                self.url.secret(), content=body, headers={"Content-Type": "application/json"}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return None, None, Outcome.RETRY, f"not sent: {type(exc).__name__}"
        except httpx.TransportError as exc:
            # Sent, but no answer: Teams may or may not have posted it.
            return None, None, Outcome.UNKNOWN, f"no answer: {type(exc).__name__}"
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        error = None if status < 300 else response.text[:200]
        return status, retry_after, classify_status(status), error

    def _finish(
        self,
        cur: duckdb.DuckDBPyConnection,
        seqs: Sequence[int],
        state: str,
        status: int | None,
        error: str | None,
        digest_of: int | None = None,
    ) -> None:
        delivered_at = self.sender.clock.wall() if state == "delivered" else None
        cur.execute(
            "UPDATE outbox SET state = ?, last_status = ?, last_error = ?, delivered_at = ?, "
            "digest_of = ? WHERE seq IN (SELECT unnest(?::BIGINT[]))",
            [state, status, error, delivered_at, digest_of, list(seqs)],
        )
