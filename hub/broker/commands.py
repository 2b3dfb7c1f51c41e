"""``hub broker declare`` and ``hub relay``."""

from __future__ import annotations

from datetime import timedelta

import click

from hub.broker.connection import connect
from hub.broker.relay import OutboxRelay, claim_check_of
from hub.broker.topology import declare
from hub.errors import ConfigError, Unavailable
from hub.metrics import metrics_port_option
from hub.signals import stop_on_signals


@click.group("broker")
def broker_group() -> None:
    """The RabbitMQ topology (exchanges, queues, bindings)."""


@broker_group.command("declare")
@click.option("--url", envvar="HUB_BROKER_URL", default="memory://", show_default=True, help="Broker URL.")
@click.option("--provider", "providers", multiple=True, metavar="ID", help="Declare provider.<ID> (repeatable).")
@click.option("--sender", "senders", multiple=True, metavar="ID", help="Declare sender.<ID>.acks (repeatable).")
def declare_command(url: str, providers: tuple[str, ...], senders: tuple[str, ...]) -> None:
    """Declare every exchange, queue and binding (idempotent)."""
    try:
        connection = connect(url)
        try:
            topology = declare(connection, providers, senders)
        finally:
            connection.release()
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    for line in topology.describe():
        click.echo(line)


@click.command("relay")
@click.option("--database-url", envvar="HUB_DATABASE_URL", help="Default: the settings' database.")
@click.option("--broker-url", envvar="HUB_BROKER_URL", help="Default: the settings' broker.")
@click.option("--batch", type=click.IntRange(min=1), help="Rows per round. Default: the settings' relay_batch.")
@click.option("--once", is_flag=True, help="Publish what is waiting now, then exit.")
@metrics_port_option
def relay_command(database_url: str | None, broker_url: str | None, batch: int | None, once: bool) -> None:
    """Publish committed outbox rows to the broker with confirms, and mark them sent."""
    from hub.settings import load_settings
    from hub.store.db import make_engine, session_factory

    try:
        settings = load_settings()
        database_url = database_url or settings.effective_database_url
        broker_url = broker_url or settings.broker_url
        batch = batch or settings.relay_batch
        claim_check = claim_check_of(settings.claim_check_bytes, settings.effective_public_url)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    if broker_url.startswith("memory:"):
        click.echo(
            "warning: memory:// is in-process: a relay of its own publishes where no other process can read",
            err=True,
        )
    engine = make_engine(database_url)
    relay = OutboxRelay(
        session_factory(engine),
        broker_url,
        batch=batch,
        claim_check=claim_check,
        gather=settings.gather_s,
        keep_sent=timedelta(hours=settings.keep_sent_hours),
    )
    try:
        if once:
            total = 0
            with relay:
                while (published := relay.run_once()) > 0:
                    total += published
                    if published < batch:
                        break
            click.echo(f"published {total} outbox rows")
            return
        relay.run_forever(stop_on_signals())
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    finally:
        engine.dispose()
