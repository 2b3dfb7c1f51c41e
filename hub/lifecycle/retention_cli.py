"""``hub lifecycle run [--once]``: the retention scheduler on its own (``hub run`` runs it too).

Warns providers before a still-unread message expires, reminds them while it stays unread,
and at expiry removes the content (``hub.lifecycle.retention``). The notices are outbox rows:
the relay (``hub relay`` or ``hub run``) publishes them to the providers' queues.
"""

from __future__ import annotations

import click

from hub.errors import ConfigError, Unavailable
from hub.metrics import metrics_port_option


@click.group("lifecycle")
def lifecycle_group() -> None:
    """Retention: expiry warnings, unread reminders, and removing content at expiry."""


@lifecycle_group.command("run")
@click.option("--once", is_flag=True, help="One round now (what is due), then exit; e.g. from cron.")
@metrics_port_option
def run_command(once: bool) -> None:
    """Warn, remind and expire what is due, every [lifecycle] check_every_s (or once)."""
    from hub.lifecycle.retention import RetentionScheduler
    from hub.runtime import build_runtime
    from hub.settings import load_settings
    from hub.signals import stop_on_signals

    try:
        settings = load_settings()
        runtime = build_runtime(settings)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    try:
        scheduler = RetentionScheduler.for_runtime(runtime)
        if once:
            click.echo(scheduler.run_once().describe())
            return
        every = settings.lifecycle_check_every_s
        click.echo(f"retention: a round every {every:g} s (Ctrl-C stops it); the relay publishes the notices")
        scheduler.run_forever(stop_on_signals(), every=every)
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    finally:
        runtime.close()


__all__ = ["lifecycle_group"]
