"""``hub provider``: the providers' side, for demos and load tests.

hub provider simulate NAME    run a simulated provider (myebox, doccle, irisbox, enterprise, paper) on the
                              hub's broker: consume provider.NAME, acknowledge delivered (paper: printed),
                              then opened and replied as the options say; Ctrl-C (or SIGTERM) stops it

The broker is the settings' (``HUB_BROKER_URL``). Without ``--key``/``--certificate`` the provider's key
is created once under ``<data_dir>/providers/NAME.key.pem`` / ``NAME.cert.pem`` and reused; the hub
believes its acknowledgements only once that certificate is listed under the provider's
``certificates`` in ``config/providers.yaml`` (the command says so when it is not).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import click
from cryptography.hazmat.primitives.serialization import Encoding
from kombu import Connection

from hub.broker.connection import connect
from hub.broker.topology import declare
from hub.errors import ConfigError, Unavailable
from hub.outbound.simulated import PROFILES, Behaviour, SimulatedProvider, profile
from hub.settings import Settings
from hub.signing.keys import KeyPair, generate_key, load_key_pair, self_signed_certificate, write_key_pair
from hub.signing.truststore import fingerprint

PROGRESS_EVERY_S = 5.0
COUNTED = ("delivered", "printed", "opened", "replied", "failed")


def provider_key_pair(settings: Settings, name: str) -> tuple[KeyPair, Path, bool]:
    """The simulated provider's key under ``<data_dir>/providers``, created on first use.

    Returns the pair, the certificate's path and whether it was just created.
    """
    folder = settings.data_dir / "providers"
    key_path, cert_path = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
    created = False
    if not key_path.exists() and not cert_path.exists():
        key = generate_key("ec")
        start = datetime.now(UTC) - timedelta(minutes=5)  # a little clock skew between hosts
        certificate = self_signed_certificate(key, f"simulated provider {name}", organization=name, not_before=start)
        write_key_pair(KeyPair(key, certificate), folder, name)
        created = True
    elif not (key_path.exists() and cert_path.exists()):
        missing = cert_path if key_path.exists() else key_path
        raise ConfigError("missing: the key and certificate go together; restore it or remove both", file=str(missing))
    return load_key_pair(key_path, cert_path), cert_path, created


def _trust_hint(settings: Settings, name: str, pair: KeyPair, cert_path: Path) -> str | None:
    """What the operator must do for the hub to believe this provider (None: nothing)."""
    path = settings.config_dir / "providers.yaml"
    if not path.exists():
        return f"no {path}: the hub knows no providers yet"
    from hub.routing.providers import load_providers

    try:
        catalog = load_providers(path)
    except ConfigError as bad:
        return f"cannot read the providers ({bad})"
    if name not in catalog:
        return f"{name!r} is not in {path} (known: {', '.join(catalog.ids())}): the hub routes nothing to it"
    mine = fingerprint(pair.certificate.public_bytes(Encoding.DER))
    if any(entry.fingerprint == mine for entry in catalog[name].certificates):
        return None
    return (
        f"the hub does not trust this certificate yet: add it to {path} under {name}:\n"
        f"    certificates:\n      - file: {cert_path.resolve()}"
    )


def _progress(name: str, simulated: SimulatedProvider) -> str:
    counts = ", ".join(f"{what} {simulated.stats[what]}" for what in COUNTED if simulated.stats[what])
    return f"{name}: {counts or 'nothing yet'} ({simulated.pending} scheduled)"


@click.group("provider")
def provider_group() -> None:
    """Mailbox providers: simulate one on the hub's broker."""


@provider_group.command("simulate")
@click.argument("name", metavar="NAME", type=click.Choice(sorted(PROFILES)))
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM key.")
@click.option(
    "--certificate", "cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM certificate."
)
@click.option("--open-probability", default=0.7, show_default=True, type=click.FloatRange(0, 1))
@click.option("--open-delay-s", default=2.0, show_default=True, type=click.FloatRange(min=0), help="Seconds.")
@click.option("--reply-probability", default=0.3, show_default=True, type=click.FloatRange(0, 1))
@click.option(
    "--reply-delay-s", type=click.FloatRange(min=0), help="Seconds after the opening. Default: --open-delay-s."
)
@click.option("--seed", type=int, help="Seed the random choices (a run can be replayed). Default: a fresh one.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds. Default: Ctrl-C.")
@click.option(
    "--batch",
    "batch_size",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Take up to this many waiting deliveries at once and acknowledge their arrival under one signature.",
)
@click.option(
    "--hub-url",
    help="The hub's HTTP door, to fetch envelopes that travel by reference. Default: the settings' [http] public_url.",
)
@click.option(
    "--api-token",
    envvar="HUB_PROVIDER_TOKEN",
    help="This provider's API token (its SHA-256 in providers.yaml), for those envelopes. Env: HUB_PROVIDER_TOKEN.",
)
def simulate_command(
    name: str,
    key_file: Path | None,
    cert_file: Path | None,
    open_probability: float,
    open_delay_s: float,
    reply_probability: float,
    reply_delay_s: float | None,
    seed: int | None,
    duration: float | None,
    batch_size: int,
    hub_url: str | None,
    api_token: str | None,
) -> None:
    """Run the simulated provider NAME (doccle, enterprise, irisbox, myebox, paper): consume
    provider.NAME and acknowledge like a real one, until Ctrl-C (or --duration)."""
    from hub.settings import load_settings

    if (key_file is None) != (cert_file is None):
        raise click.UsageError("--key and --certificate go together: give both or neither")
    try:
        settings = load_settings()
        if key_file is not None and cert_file is not None:
            pair, cert_path = load_key_pair(key_file, cert_file), cert_file
            click.echo(f"certificate: {cert_path}")
        else:
            pair, cert_path, created = provider_key_pair(settings, name)
            click.echo(f"certificate: {cert_path.resolve()}{' (created)' if created else ''}")
        behaviour = Behaviour(
            open_probability=open_probability,
            open_delay_s=open_delay_s,
            reply_probability=reply_probability,
            reply_delay_s=reply_delay_s,
            seed=seed,
        )
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    hint = _trust_hint(settings, name, pair, cert_path)
    if hint:
        click.echo(f"note: {hint}", err=True)
    url = settings.broker_url
    if url.startswith("memory:"):
        click.echo("warning: memory:// is in-process: a provider of its own receives nothing from the hub", err=True)
    simulated = SimulatedProvider(
        profile(name),
        url,
        pair,
        behaviour=behaviour,
        backoff=settings.redelivery,
        batch_size=batch_size,
        hub_url=hub_url or settings.effective_public_url,
        api_token=api_token,
    )
    if api_token is None and settings.claim_check_bytes:
        click.echo(
            f"note: envelopes above {settings.claim_check_bytes} bytes travel by reference; without --api-token "
            "they cannot be fetched (they are retried, then dead-lettered)",
            err=True,
        )
    click.echo(
        f"simulating {name} ({simulated.profile.name}) on {Connection(url).as_uri()}, seed {simulated.seed}; "
        "Ctrl-C stops"
    )
    stop = threading.Event()
    previous = _on_signals(lambda: stop.set())
    reporter = threading.Thread(target=_report, args=(name, simulated, stop, duration), daemon=True)
    try:
        connection = connect(url)
        try:
            declare(connection, [name])
        finally:
            connection.release()
        reporter.start()
        simulated.run(stop)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    finally:
        stop.set()
        _restore(previous)
        simulated.close()
        if reporter.is_alive():
            reporter.join(1.0)
    click.echo(_progress(name, simulated))


def _report(name: str, simulated: SimulatedProvider, stop: threading.Event, duration: float | None) -> None:
    """Print the counters when they changed (every few seconds); end the run after ``duration``."""
    end = None if duration is None else time.monotonic() + duration
    shown = ""
    while not stop.is_set():
        wait = PROGRESS_EVERY_S if end is None else min(PROGRESS_EVERY_S, max(0.0, end - time.monotonic()))
        if stop.wait(wait):
            return
        if end is not None and time.monotonic() >= end:
            stop.set()
            return
        line = _progress(name, simulated)
        if line != shown:
            click.echo(line)
            shown = line


def _on_signals(action: Callable[[], None]) -> dict[int, Any]:
    """SIGINT and SIGTERM call ``action`` (main thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        action()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


__all__ = ["provider_group", "provider_key_pair"]
