"""The ``hub`` command line.

Exit status: 0 when the document is good; 1 when it is refused, with ``CODE: message``
lines on stderr (one per problem); 2 on usage errors (bad options, unreadable files).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import click

from hub.broker.commands import broker_group, relay_command
from hub.broker.deadletters import dlq_group
from hub.demo import demo
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.examples import KINDS, example
from hub.envelope.rules import MessageTypePolicy
from hub.envelope.validation import validate_envelope
from hub.errors import ConfigError, Rejected, Unavailable
from hub.lifecycle.audit_cli import audit_group
from hub.lifecycle.retention_cli import lifecycle_group
from hub.lifecycle.stats_cli import stats_group
from hub.metrics import metrics_port_option
from hub.outbound.commands import provider_group
from hub.outbound.push_command import push_command
from hub.routing.commands import recipients_group
from hub.safexml import DEFAULT_LIMITS, parse
from hub.signals import stop_on_signals
from hub.signing.keys import (
    KeyPair,
    generate_key,
    load_certificates,
    load_key_pair,
    self_signed_certificate,
    write_key_pair,
)
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.web.accounts_cli import web_group

if TYPE_CHECKING:
    from hub.routing.providers import ProviderCatalog
    from hub.routing.recipients import Recipient
    from hub.routing.rules import MessageFacts, RuleSet
    from hub.settings import Settings

F = TypeVar("F", bound=Callable[..., object])


def refusals_exit(command: F) -> F:
    """Turn a refusal into exit 1 with ``CODE: message`` lines, a bad file into exit 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except Rejected as refused:
            for violation in refused.violations:
                click.echo(str(violation), err=True)
            sys.exit(1)
        except ConfigError as bad:
            raise click.UsageError(str(bad)) from bad

    return wrapper  # type: ignore[return-value]


def _read_document(handle: BinaryIO) -> bytes:
    # Read one byte past the limit so that the parser reports TOO_LARGE without reading it all.
    return handle.read(DEFAULT_LIMITS.max_bytes + 1)


def _moment(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _write(output: str, data: bytes) -> None:
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(output).write_bytes(data)


AT_OPTION = click.option(
    "--at", "at", metavar="DATETIME", help="Judge dates and certificates at this moment (ISO 8601) instead of now."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ebox-hub")
def cli() -> None:
    """ebox-hub: an integration hub for official digital post."""
    from hub.logs import configure_from_settings

    configure_from_settings()  # [log] format and level (HUB_LOG_FORMAT, HUB_LOG_LEVEL): text or JSON lines on stderr


@cli.group()
def keys() -> None:
    """Create signing keys and certificates."""


@keys.command("create")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["ec", "rsa"]),
    default="ec",
    show_default=True,
    help="ec: ECDSA P-256 (fast); rsa: RSA 3072.",
)
@click.option("--days", default=730, show_default=True, type=click.IntRange(1, 3650), help="Validity in days.")
@click.option("--organization", help="Organisation name to put in the certificate.")
@refusals_exit
def keys_create(name: str, out_dir: str, kind: str, days: int, organization: str | None) -> None:
    """Create NAME.key.pem (private, mode 0600) and NAME.cert.pem (self-signed) in --out."""
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise click.BadParameter("use letters, digits, '-', '_' and '.' only", param_hint="NAME")
    key = generate_key(kind)
    certificate = self_signed_certificate(key, name, organization=organization, days=days)
    key_path, cert_path = write_key_pair(KeyPair(key, certificate), out_dir, name)
    click.echo(f"key:         {key_path}")
    click.echo(f"certificate: {cert_path}")


@cli.group()
def envelope() -> None:
    """Make, sign, verify and validate envelopes."""


@envelope.command("example")
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.option("-o", "--output", default="-", show_default=True, help="File to write ('-' for stdout).")
@AT_OPTION
def envelope_example(kind: str, output: str, at: str | None) -> None:
    """Write an unsigned example envelope of KIND, created now (or --at)."""
    created = _moment(at).replace(microsecond=0)
    _write(output, to_bytes(build_envelope(example(kind, created=created))))


@envelope.command("sign")
@click.argument("file", type=click.File("rb"))
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False), help="PEM private key.")
@click.option("--cert", "cert_file", required=True, type=click.Path(dir_okay=False), help="PEM certificate.")
@click.option("-o", "--output", default="-", show_default=True, help="File to write ('-' for stdout).")
@refusals_exit
def envelope_sign(file: BinaryIO, key_file: str, cert_file: str, output: str) -> None:
    """Sign FILE with an enveloped XML-DSig signature over the whole document."""
    pair = load_key_pair(key_file, cert_file)
    root = parse(_read_document(file))
    try:
        signed = Signer(pair).sign(root)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    _write(output, to_bytes(signed))


@envelope.command("verify")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--cert",
    "cert_files",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A PEM certificate the signature may come from (repeatable, e.g. during key rotation).",
)
@click.option(
    "--backend",
    type=click.Choice(["fast", "signxml"]),
    default="fast",
    show_default=True,
    help="Verification back end (both apply the same checks).",
)
@AT_OPTION
@refusals_exit
def envelope_verify(file: BinaryIO, cert_files: tuple[str, ...], backend: str, at: str | None) -> None:
    """Check that FILE is signed, over the whole document, by one of the --cert certificates."""
    store = TrustStore(
        trusted(Path(path).name, certificate, source=path)
        for path in cert_files
        for certificate in load_certificates(path)
    )
    verified = Verifier(store, backend=backend).verify(parse(_read_document(file)), now=_moment(at))  # type: ignore[arg-type]
    click.echo(
        f"OK: signed by {verified.signer.subject} ({verified.signer.party}), "
        f"{verified.method.name.lower().replace('_', '-')}"
    )


@envelope.command("validate")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--allow-indefinite", is_flag=True, help="Accept RetainIndefinitely (senders allowed unlimited retention)."
)
@click.option("--min-months", default=1, show_default=True, type=click.IntRange(0, 1200))
@click.option("--max-months", default=36, show_default=True, type=click.IntRange(1, 1200))
@AT_OPTION
@refusals_exit
def envelope_validate(file: BinaryIO, allow_indefinite: bool, min_months: int, max_months: int, at: str | None) -> None:
    """Check FILE against the envelope schema and the business rules (every problem is listed)."""
    policy = MessageTypePolicy(
        min_retention_months=min_months, max_retention_months=max_months, unlimited_allowed=allow_indefinite
    )
    model = validate_envelope(parse(_read_document(file)), now=_moment(at), policy=policy)
    h = model.header
    click.echo(
        f"OK: {h.message_type} from {h.sender.institution_id} to {h.recipient.ebox_type} "
        f"({len(model.content.attachments)} attachment(s), registered={str(h.registered).lower()})"
    )


cli.add_command(demo)
cli.add_command(broker_group)
cli.add_command(relay_command)
cli.add_command(dlq_group)
cli.add_command(recipients_group)
cli.add_command(provider_group)
cli.add_command(stats_group)  # hub stats: monthly figures per institution
cli.add_command(web_group)  # hub web account ...: the web console's accounts
cli.add_command(audit_group)
cli.add_command(lifecycle_group)  # hub lifecycle run: retention (warnings, reminders, expiry)


@keys.command("token")
def keys_token() -> None:
    """Make an API token for a sender: the token for the sender, its sha256 for senders.yaml."""
    import hashlib
    import secrets

    token = secrets.token_urlsafe(32)
    click.echo(f"token (give to the sender):       {token}")
    click.echo(f"api_token_sha256 (senders.yaml):  {hashlib.sha256(token.encode()).hexdigest()}")


@cli.group()
def db() -> None:
    """The hub's database."""


@db.command("upgrade")
@refusals_exit
def db_upgrade() -> None:
    """Create or migrate the database schema (HUB_DATABASE_URL, default SQLite in var/)."""
    from hub.settings import load_settings
    from hub.store.db import make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


@cli.command("serve")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default: http.workers).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: http.port).")
@refusals_exit
def serve_command(workers: int | None, port: int | None) -> None:
    """Serve the REST and SOAP doors (uvicorn, N worker processes, optional TLS)."""
    import dataclasses

    from hub.inbound.server import serve, server_options
    from hub.runtime import build_runtime
    from hub.settings import load_settings
    from hub.store.db import upgrade

    settings = load_settings()
    if port:
        settings = dataclasses.replace(settings, http_port=port)
    server_options(settings)  # the TLS files first: a bad one leaves nothing written
    runtime = build_runtime(settings)  # fails now, with file and line, on a bad configuration
    upgrade(runtime.engine)
    runtime.close()
    serve(settings, workers=workers)


@cli.group()
def worker() -> None:
    """Long-running consumers (one process each; run as many as the load needs)."""


worker.add_command(push_command)  # hub worker push: deliveries and acknowledgements by webhook


@worker.command("inbound")
@metrics_port_option
@refusals_exit
def worker_inbound() -> None:
    """The AMQP door: accept envelopes published to hub.submit, answer to reply_to."""

    from hub.inbound.amqp import AmqpDoor
    from hub.runtime import build_runtime
    from hub.settings import load_settings

    settings = load_settings()
    runtime = build_runtime(settings)
    door = AmqpDoor(runtime.intake, settings.broker_url)
    stop = stop_on_signals()
    click.echo(f"accepting envelopes from hub.submit on {settings.broker_url.split('@')[-1]}")
    try:
        door.run(stop, backoff=settings.redelivery)
    finally:
        door.close()
        runtime.close()


@worker.command("routing")
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Messages routed together (one query per table, one commit); 1 = one by one.",
)
@click.option(
    "--consumers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Consumer threads, each its own connection (with --batch 1, their messages are routed together).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Unacked messages per consumer  [default: twice --batch; 10 with --batch 1]",
)
@click.option(
    "--linger-ms",
    type=click.FloatRange(0, 100),
    default=2.0,
    show_default=True,
    help="With --batch 1 and several consumers: how long a batch waits for the other consumers' messages.",
)
@click.option(
    "--check-every",
    type=click.FloatRange(0.1),
    default=2.0,
    show_default=True,
    help="Seconds between checks of providers.yaml and routing.yaml for changes.",
)
@metrics_port_option
@refusals_exit
def worker_routing(batch_size: int, consumers: int, prefetch: int | None, linger_ms: float, check_every: float) -> None:
    """The routing stage: route accepted messages from hub.routing to the providers' queues."""

    from hub.routing.directory import Directory
    from hub.routing.worker import RoutingSource, RoutingWorker, declare_provider_queues
    from hub.safexml import ParseLimits
    from hub.settings import load_settings
    from hub.store.db import make_engine, session_factory

    settings = load_settings()
    if settings.broker_url.startswith("memory:"):
        click.echo("warning: memory:// is in-process: a routing worker of its own sees no other process", err=True)

    def declare_queues(providers: ProviderCatalog, _rules: RuleSet) -> None:
        declare_provider_queues(settings.broker_url, providers)  # a provider added to the file gets its queue

    # A bad providers.yaml or routing.yaml stops the worker now, with the file and the line.
    source = RoutingSource(settings.config_dir, check_every=check_every, on_change=declare_queues)
    providers, rules = source.current()
    try:
        declare_provider_queues(settings.broker_url, providers)
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    routing = RoutingWorker(
        sessions,
        Directory(sessions),
        source,
        parse_limits=ParseLimits(max_bytes=settings.max_envelope_bytes),
        linger=linger_ms / 1000 if consumers > 1 and batch_size == 1 else 0.0,
    )
    stop = stop_on_signals()
    click.echo(
        f"routing from hub.routing on {settings.broker_url.split('@')[-1]}: "
        f"{len(rules.rules)} rules, providers {', '.join(providers.ids())}; "
        f"{consumers} consumer(s), batches of up to {batch_size}"
    )
    if prefetch is None and batch_size == 1:
        prefetch = 10
    try:
        routing.run(
            settings.broker_url,
            stop,
            prefetch=prefetch,
            consumers=consumers,
            batch_size=batch_size,
            backoff=settings.redelivery,
        )
    finally:
        engine.dispose()


@worker.command("subscriptions")
@click.option(
    "--prefetch",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Unacked messages (each up to 1,000 changes).",
)
@metrics_port_option
@refusals_exit
def worker_subscriptions(prefetch: int) -> None:
    """Providers' recipient directory changes published to hub.subscriptions: applied, answered to reply_to."""

    from hub.routing.directory import Directory
    from hub.routing.subscriptions_amqp import SubscriptionsConsumer, provider_tokens
    from hub.settings import load_settings
    from hub.store.db import make_engine, session_factory

    settings = load_settings()
    if settings.broker_url.startswith("memory:"):
        click.echo("warning: memory:// is in-process: this worker sees no other process's messages", err=True)
    tokens = provider_tokens(settings)  # a bad providers.yaml stops the worker now, with the file and the line
    with_tokens = sorted(provider for provider, hashes in tokens.items() if hashes)
    if not with_tokens:
        click.echo("warning: no provider has an api_token_sha256 in providers.yaml: every message is refused", err=True)
    engine = make_engine(settings.effective_database_url)
    consumer = SubscriptionsConsumer(Directory(session_factory(engine)), tokens, settings.broker_url)
    stop = stop_on_signals()
    click.echo(
        f"applying directory changes from hub.subscriptions on {settings.broker_url.split('@')[-1]}: "
        f"providers with a token: {', '.join(with_tokens) or 'none'}"
    )
    try:
        consumer.run(stop, prefetch=prefetch)
    finally:
        consumer.close()
        engine.dispose()


@cli.group()
def routes() -> None:
    """Check and explain the routing rules (config/routing.yaml, config/providers.yaml)."""


@routes.command("check")
@refusals_exit
def routes_check() -> None:
    """Validate the routing and provider files; exit 1 if a rule is unreachable or a fallback impossible."""
    from hub.routing.rules import check, load_routing
    from hub.settings import load_settings

    settings = load_settings()
    providers, rules = load_routing(settings.config_dir)
    problems = check(rules, providers)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"OK: {len(rules.rules)} rules, {len(providers.providers)} providers ({', '.join(providers.ids())})")


@routes.command("explain")
@click.argument("file", type=click.File("rb"))
@AT_OPTION
@refusals_exit
def routes_explain(file: BinaryIO, at: str | None) -> None:
    """Show which rule an envelope FILE matches and where it would go, without sending anything."""
    from hub.envelope.validation import validate_envelope
    from hub.routing.explain import explain
    from hub.routing.rules import MessageFacts, decide, load_routing
    from hub.settings import load_settings

    settings = load_settings()
    now = _moment(at)
    providers, rules = load_routing(settings.config_dir)
    envelope = validate_envelope(parse(_read_document(file)), now=now)
    facts = MessageFacts.of(envelope)
    recipient = _directory_lookup(settings, facts)
    click.echo(explain(facts, recipient, decide(facts, recipient, providers, rules, now), now))


def _directory_lookup(settings: Settings, facts: MessageFacts) -> Recipient | None:
    """The recipient as the hub's directory knows it (None when unknown or no directory yet)."""
    import importlib

    try:
        directory = importlib.import_module("hub.routing.directory")
    except ImportError:
        return None
    from hub.store.db import make_engine, session_factory

    engine = make_engine(settings.effective_database_url)
    try:
        return directory.Directory(session_factory(engine)).get(facts.recipient_kind, facts.recipient_id)
    except Exception:
        return None
    finally:
        engine.dispose()


@cli.command("run")
@click.option("--no-http", is_flag=True, help="Run the workers only (another process serves HTTP: hub serve).")
@metrics_port_option
@refusals_exit
def run_command(no_http: bool) -> None:
    """Every stage of the hub in one process: HTTP doors, relay, routing, acknowledgements, forwarding."""

    from hub.runtime import build_runtime
    from hub.service import Service
    from hub.settings import load_settings
    from hub.store.db import make_engine, upgrade

    settings = load_settings()
    if not settings.database_url:  # the embedded default: the SQLite file is created and migrated here
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(make_engine(settings.effective_database_url))
    service = Service(build_runtime(settings), http=not no_http)
    stop_on_signals(service.stop_event)
    service.start()
    where = "" if no_http else f"; HTTP on {settings.http_host}:{settings.http_port}"
    click.echo(f"hub running on {settings.broker_url.split('@')[-1]}{where} (Ctrl-C stops it)")
    try:
        service.wait()
    finally:
        service.runtime.close()


@worker.command("acks")
@metrics_port_option
@refusals_exit
def worker_acks() -> None:
    """Providers' acknowledgements from hub.acks: verified, applied, audited."""

    from hub.broker.consumer import consume_batches
    from hub.outbound.intake import MAX_ACK_BYTES, AckIntake
    from hub.routing.worker import RoutingSource
    from hub.safexml import ParseLimits
    from hub.settings import load_settings
    from hub.store.db import make_engine, session_factory

    settings = load_settings()
    source = RoutingSource(settings.config_dir)
    engine = make_engine(settings.effective_database_url)
    intake = AckIntake(
        session_factory(engine), lambda: source.current()[0], parse_limits=ParseLimits(max_bytes=MAX_ACK_BYTES)
    )
    stop = stop_on_signals()
    click.echo(f"applying acknowledgements from hub.acks on {settings.broker_url.split('@')[-1]}")
    try:
        consume_batches(
            settings.broker_url, "hub.acks", intake.handle_batch, batch_size=200, stop=stop, backoff=settings.redelivery
        )
    finally:
        engine.dispose()


@worker.command("forward")
@metrics_port_option
@refusals_exit
def worker_forward() -> None:
    """Events -> acknowledgements signed by the hub, on the senders' queues (sender.<id>.acks)."""

    from hub.outbound.forwarding import Forwarder
    from hub.runtime import build_runtime
    from hub.settings import load_settings
    from hub.signing.signer import Signer

    settings = load_settings()
    runtime = build_runtime(settings)
    forwarder = Forwarder(
        runtime.sessions, Signer(runtime.hub_keys), runtime.directory, gather=runtime.settings.gather_s
    )
    stop = stop_on_signals()
    click.echo("forwarding events to senders' queues (the relay publishes them)")
    try:
        forwarder.run_forever(stop)
    finally:
        runtime.close()


@cli.command("send")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, envvar="HUB_URL", help="The hub.")
@click.option("--receipts", type=click.Path(file_okay=False, path_type=Path), help="Write each receipt here.")
def send_command(files: tuple[Path, ...], url: str, receipts: Path | None) -> None:
    """Submit signed envelope FILES to a running hub; exit 1 if any is refused."""
    from hub.inbound.sending import send_file

    refused = 0
    for path in files:
        try:
            sent = send_file(url, path)
        except OSError as exc:
            raise click.ClickException(f"cannot reach the hub at {url}: {exc}") from exc
        click.echo(sent.describe(), err=not sent.accepted)
        if sent.accepted and receipts:
            receipts.mkdir(parents=True, exist_ok=True)
            (receipts / f"{path.stem}.receipt.xml").write_bytes(sent.body)
        refused += not sent.accepted
    if refused:
        sys.exit(1)


def main() -> None:
    cli(prog_name="hub")


__all__ = ["cli", "main"]
