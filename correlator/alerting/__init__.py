"""Teams delivery: Adaptive Cards, webhook routing and the outbox sender.

``OutboxSender(store, webhooks, routing).start()`` drains the store's outbox
in order; ``teams_card(alert)`` builds the Workflows webhook message;
``TeamsReceiver`` (in :mod:`correlator.alerting.teams_receiver`) plays Teams
locally for the demo and tests.
"""

from correlator.alerting.card import digest_card, message_card, teams_card
from correlator.alerting.outbox import OutboxSender
from correlator.alerting.policy import Backoff, FakeClock, RealClock
from correlator.alerting.teams_receiver import Reply, TeamsReceiver
from correlator.alerting.webhooks import (
    Destination,
    Route,
    Routing,
    WebhookUrl,
    load_routing,
    resolve_webhooks,
    routing_from_dict,
    validate_webhook_url,
)

__all__ = [
    "Backoff",
    "Destination",
    "FakeClock",
    "OutboxSender",
    "RealClock",
    "Reply",
    "Route",
    "Routing",
    "TeamsReceiver",
    "WebhookUrl",
    "digest_card",
    "load_routing",
    "message_card",
    "resolve_webhooks",
    "routing_from_dict",
    "teams_card",
    "validate_webhook_url",
]
