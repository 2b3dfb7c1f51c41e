"""``hub worker push``: push provider deliveries and sender acknowledgements to their webhooks.

Targets (read once, when the worker starts; restart it to take a change):

- every provider of ``providers.yaml`` with ``delivery: {channel: http, url: ...}``: queue
  ``provider.<id>``;
- every institution or integrator of ``senders.yaml`` with ``acknowledgements: {channel:
  webhook, url: ...}``: queue ``sender.<id>.acks``.

See ``hub.outbound.push`` for the requests and what each answer leads to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from hub.metrics import metrics_port_option

if TYPE_CHECKING:
    from hub.outbound.push import ProviderHook, PushTarget
    from hub.settings import Settings


def push_targets(settings: Settings, *, on_provider_delivered: ProviderHook | None = None) -> list[PushTarget]:
    """Every queue to push and its URL, from ``providers.yaml`` and ``senders.yaml`` (a missing file: none from it).

    ``on_provider_delivered`` is the hook for the hub's acknowledgement intake (recording a
    provider push as ``delivered``: ``AckIntake.delivered_by_push``). ``ConfigError`` (file and
    line) when a file is wrong.
    """
    from hub.inbound.senders import load_senders
    from hub.outbound.push import targets_for
    from hub.routing.providers import ProviderCatalog, load_providers

    providers_file = settings.config_dir / "providers.yaml"
    catalog = load_providers(providers_file) if providers_file.exists() else ProviderCatalog({})
    channels = load_senders(settings.senders_file).acknowledgement_channels() if settings.senders_file.exists() else {}
    return targets_for(catalog, channels, on_provider_delivered=on_provider_delivered)


def declare_push_queues(broker_url: str, targets: Sequence[PushTarget]) -> None:
    """Declare the targets' queues with their retry queues and ``hub.dead`` (idempotent)."""
    from hub.broker.topology import declare_at

    providers = [t.queue.removeprefix("provider.") for t in targets if t.queue.startswith("provider.")]
    senders = [t.queue.removeprefix("sender.").removesuffix(".acks") for t in targets if t.queue.startswith("sender.")]
    declare_at(broker_url, providers, senders)


@click.command("push")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a receiver (to connect, and for each read and write).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Unacked messages per queue (pushed one at a time).",
)
@metrics_port_option
def push_command(timeout_s: float, prefetch: int) -> None:
    """Push deliveries (providers with an http channel) and acknowledgements (senders with a webhook) by HTTPS."""
    from hub.errors import ConfigError, Unavailable
    from hub.outbound.intake import AckIntake
    from hub.outbound.push import run_pushers, safe_url
    from hub.routing.providers import ProviderCatalog, load_providers
    from hub.settings import load_settings
    from hub.signals import stop_on_signals
    from hub.store.db import make_engine, session_factory

    try:
        settings = load_settings()
        providers_file = settings.config_dir / "providers.yaml"
        catalog = load_providers(providers_file) if providers_file.exists() else ProviderCatalog({})
        engine = make_engine(settings.effective_database_url)
        intake = AckIntake(session_factory(engine), catalog)
        # a provider's 2xx is its delivery's `delivered`, recorded as its own acknowledgement would be
        targets = push_targets(settings, on_provider_delivered=intake.delivered_by_push)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    if not targets:
        click.echo(
            "nothing to push: no provider with delivery channel http in providers.yaml "
            "and no sender with webhook acknowledgements in senders.yaml",
            err=True,
        )
        return
    if settings.broker_url.startswith("memory:"):
        click.echo("warning: memory:// is in-process: this worker sees no other process's messages", err=True)
    try:
        declare_push_queues(settings.broker_url, targets)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    stop = stop_on_signals()
    click.echo(
        f"pushing on {settings.broker_url.split('@')[-1]}: "
        + ", ".join(f"{t.queue} -> {safe_url(t.url)}" for t in targets)
    )
    try:
        run_pushers(settings.broker_url, targets, stop, settings.redelivery, timeout_s=timeout_s, prefetch=prefetch)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
