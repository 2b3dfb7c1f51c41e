"""``hub run``: every stage of the hub in one process, as a long-lived service.

The same components ``hub serve`` and the ``hub worker ...`` commands run one per process,
here on threads of one process (what the embedded default needs: its in-process broker is
shared only within a process; with RabbitMQ and PostgreSQL the separate processes scale
better, see ``docs/deployment.md``):

    http           the REST and SOAP doors, acknowledgements and the senders' feed (uvicorn)
    amqp-inbound   envelopes published to hub.submit
    relay          committed outbox rows to the broker, with publisher confirms
    routing        hub.routing -> provider.<id> queues
    acks           providers' acknowledgements from hub.acks
    forwarder      events -> signed acknowledgements on sender.<id>.acks
    subscriptions  providers' recipient directory changes from hub.subscriptions
    audit-sealer   chains the audit entries committed since the last second
    lifecycle      retention: expiry warnings and unread reminders to providers, content removed at expiry
    push           deliveries and acknowledgements to webhooks (only when some are configured)

A component that fails (a missing queue, a bug at start) stops them all, and ``run``
raises its error; an outage is retried inside each component and stops nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from hub.broker.consumer import consume_batches
from hub.broker.relay import OutboxRelay, claim_check_of
from hub.broker.topology import declare_at
from hub.inbound.amqp import AmqpDoor
from hub.outbound.forwarding import Forwarder
from hub.outbound.intake import MAX_ACK_BYTES, AckIntake
from hub.outbound.push import PushTarget, run_pushers, targets_for
from hub.routing.directory import Directory
from hub.routing.providers import ProviderCatalog
from hub.routing.worker import RoutingSource, RoutingWorker
from hub.runtime import Runtime
from hub.safexml import ParseLimits
from hub.signing.signer import Signer

log = logging.getLogger("hub.service")

ACKS_QUEUE = "hub.acks"


@dataclass
class Service:
    """The hub's stages on threads (see the module's doc). ``start``, then ``stop`` / ``wait``."""

    runtime: Runtime
    http: bool = True
    """Serve the HTTP doors too (on ``[http] host``/``port``)."""
    check_every: float = 2.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    failures: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        settings = self.runtime.settings
        self.broker_url = settings.broker_url
        self.source = RoutingSource(settings.config_dir, check_every=self.check_every, on_change=self._declare)
        self.intake = self.runtime.intake
        self.acks = AckIntake(
            self.runtime.sessions,
            self.providers,
            clock=lambda: self.intake.clock(),
            parse_limits=ParseLimits(max_bytes=MAX_ACK_BYTES),
        )
        self.forwarder = Forwarder(
            self.runtime.sessions,
            Signer(self.runtime.hub_keys),
            self.runtime.directory,
            gather=self.runtime.settings.gather_s,
            clock=lambda: self.intake.clock(),
        )
        self.routing = RoutingWorker(
            self.runtime.sessions,
            Directory(self.runtime.sessions, clock=lambda: self.intake.clock()),
            self.source,
            clock=lambda: self.intake.clock(),
            parse_limits=ParseLimits(max_bytes=settings.max_envelope_bytes),
        )
        self._server: object | None = None

    def providers(self) -> ProviderCatalog:
        return self.source.current()[0]

    def _declare(self, providers: ProviderCatalog, _rules: object = None) -> None:
        declare_at(self.broker_url, providers.ids(), self.forwarder.pushed_senders())

    # -- running -------------------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:
                log.exception("%s stopped with an error; stopping the hub", name)
                self.failures.append(exc)
                self.stop_event.set()

        thread = threading.Thread(target=guarded, name=f"hub-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def start(self) -> None:
        """Declare the topology and start every component on its thread."""
        settings = self.runtime.settings
        stop = self.stop_event
        backoff = settings.redelivery
        self._declare(self.providers())
        relay = OutboxRelay(
            self.runtime.sessions,
            self.broker_url,
            batch=settings.relay_batch,
            claim_check=claim_check_of(settings.claim_check_bytes, settings.effective_public_url),
            gather=settings.gather_s,
            keep_sent=timedelta(hours=settings.keep_sent_hours),
        )
        door = AmqpDoor(self.intake, self.broker_url)
        self._spawn("relay", lambda: relay.run_forever(stop))
        self._spawn("forwarder", lambda: self.forwarder.run_forever(stop))
        self._spawn("routing", lambda: self.routing.run(self.broker_url, stop, backoff=backoff))
        self._spawn(
            "acks",
            lambda: consume_batches(
                self.broker_url, ACKS_QUEUE, self.acks.handle_batch, batch_size=200, stop=stop, backoff=backoff
            ),
        )
        self._spawn("amqp-inbound", lambda: door.run(stop, backoff=backoff))
        self._spawn("subscriptions", self._subscriptions)
        self._spawn("audit-sealer", self._seal_audit)
        self._spawn("lifecycle", self._retention)
        targets = self._push_targets()
        if targets:
            self._spawn("push", lambda: run_pushers(self.broker_url, targets, stop, backoff))
        if self.http:
            self._spawn("http", self._serve)

    def _subscriptions(self) -> None:
        from hub.routing.subscriptions_amqp import SubscriptionsConsumer

        consumer = SubscriptionsConsumer(
            Directory(self.runtime.sessions, clock=lambda: self.intake.clock()),
            self.providers().tokens(),
            self.broker_url,
            backoff=self.runtime.settings.redelivery,
        )
        try:
            consumer.run(self.stop_event)
        finally:
            consumer.close()

    def _seal_audit(self) -> None:
        """Chain the audit entries committed in the last second (``hub.lifecycle.audit``)."""
        from hub.lifecycle.audit import seal_forever

        seal_forever(self.runtime.sessions, self.stop_event, every=1.0)

    def _retention(self) -> None:
        """Expiry warnings, unread reminders and expiry (``hub.lifecycle.retention``), every ``check_every_s``."""
        from hub.lifecycle.retention import RetentionScheduler

        scheduler = RetentionScheduler.for_runtime(self.runtime, clock=lambda: self.intake.clock())
        scheduler.run_forever(self.stop_event, every=self.runtime.settings.lifecycle_check_every_s)

    def _push_targets(self) -> list[PushTarget]:
        channels = self.runtime.directory.acknowledgement_channels()
        return targets_for(self.providers(), channels, on_provider_delivered=self.acks.delivered_by_push)

    def _serve(self) -> None:
        import asyncio

        import uvicorn
        from uvicorn.config import LOGGING_CONFIG

        from hub.inbound.http import broker_probe, build_app
        from hub.inbound.server import server_options

        settings = self.runtime.settings
        app = build_app(self.runtime, broker_probe=broker_probe(self.broker_url))
        app.state.providers = self.providers()
        app.state.provider_tokens = self.providers().tokens()
        app.state.ack_intake = self.acks
        # the same options as `hub serve` (TLS and client certificates included); text logs: uvicorn's own
        config = uvicorn.Config(app, log_level="warning", **({"log_config": LOGGING_CONFIG} | server_options(settings)))
        server = uvicorn.Server(config)
        # uvicorn installs its signal handlers only on the main thread: here, `stop` ends it
        self._server = server

        async def serve() -> None:
            task = asyncio.create_task(server.serve())
            while not task.done():
                if self.stop_event.is_set():
                    server.should_exit = True
                await asyncio.sleep(0.1)
            await task

        asyncio.run(serve())

    def stop(self, timeout: float = 15.0) -> None:
        """Ask every component to stop, and wait for them (at most ``timeout`` seconds each)."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)

    def wait(self) -> None:
        """Block until the service stops (``stop_event``); raise the first component's failure."""
        while not self.stop_event.wait(0.5):
            pass
        self.stop()
        if self.failures:
            raise self.failures[0]
