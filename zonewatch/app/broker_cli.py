"""``zonewatch broker`` and ``zonewatch topics``."""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from zonewatch.config import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", default=9092, show_default=True, type=int, help="0 picks a free port.")
@click.option("--create-topics/--no-create-topics", default=True, show_default=True)
@click.pass_obj
def broker(settings: Settings, host: str, port: int, create_topics: bool) -> None:
    """Run the embedded Kafka-compatible broker (tansu, memory storage) in the foreground.

    For demos and tests; production uses Apache Kafka (docker-compose.yml).
    Prints the bootstrap address on stdout, then runs until SIGINT/SIGTERM.
    """
    from zonewatch.app.broker import EmbeddedBroker
    from zonewatch.kafka import ensure_topics, wait_for_broker

    embedded = EmbeddedBroker(host=host, port=port or None).start()
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": embedded.bootstrap})

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # Only unwind here: stopping the child inside the handler would wait
        # on a Popen that the interrupted main thread is already waiting on.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        wait_for_broker(kafka, kafka.connect_timeout_s)
        if create_topics:
            ensure_topics(kafka)
        click.echo(embedded.bootstrap, nl=True)
        embedded.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


@click.command()
@click.option(
    "--group-id",
    help="Consumer group whose `correlate --scale-out` topics to create "
    "[default: correlator.group_id].",
)
@click.pass_obj
def topics(settings: Settings, group_id: str | None) -> None:
    """Create zonewatch's topics on the configured cluster (idempotent).

    Besides the events, dead-letter and checkpoint topics: the internal topics
    of `correlate --scale-out` for one consumer group,
    <prefix>.correlation.<group>.hits and .state (each group has its own; run
    once per group, or let `correlate --scale-out` create them).
    """
    from zonewatch.kafka import all_topics, correlation_topics, ensure_topics, legacy_topics_note

    if group_id:
        settings = settings.updated(correlator={"group_id": group_id})
    kafka = settings.kafka
    names = settings.scale_out_topics
    internal = correlation_topics(names)
    created = ensure_topics(kafka)
    created += ensure_topics(kafka, [kafka.checkpoints_topic], partitions=1)
    created += ensure_topics(kafka, list(internal), configs=internal)
    for name in [*all_topics(kafka), kafka.checkpoints_topic, *internal]:
        click.echo(f"{name}\t{'created' if name in created else 'exists'}")
    note = legacy_topics_note(kafka, names)
    if note:
        click.echo(f"note: {note}", err=True)
