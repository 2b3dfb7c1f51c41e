"""The broker topology of the architecture note, as data: exchanges, queues, bindings.

    exchange           type    routing key          queue                 kind
    hub.submit         direct  ``submit``           hub.inbound           quorum
    hub.route          direct  ``route``            hub.routing           classic, x-max-priority 9
    hub.deliver        topic   ``<provider>``       provider.<provider>   classic, x-max-priority 9
    hub.acks           direct  ``acks``             hub.acks              quorum
    hub.notify         topic   ``<sender>``         sender.<sender>.acks  quorum
    hub.subscriptions  direct  ``subscriptions``    hub.subscriptions     quorum
    hub.dead           fanout  (any)                hub.dead              quorum

Every exchange and queue is durable, and publishers send persistent messages. Every work
queue dead-letters into ``hub.dead`` (``x-dead-letter-exchange``); a fanout keeps the
original routing key on the dead letter, so it still says where it was going. (The consume
loop itself writes its dead letters to ``hub.dead``, with the reason in headers: see
``hub.broker.retry``; the broker's own dead-lettering remains for what is rejected
elsewhere.)

Why two kinds of queue: quorum queues are RabbitMQ's replicated, durable queue type and
the default here. They have no real priorities: RabbitMQ 3.x (3.10.8 on our machines)
refuses ``x-max-priority`` on them (406 PRECONDITION_FAILED) and orders by arrival only,
and 4.x offers just two levels (normal and high).
Routing and delivery must let a high-priority message (``priority`` 0-9, see
``hub.inbound.acceptance.PRIORITIES``) overtake the normal ones already queued, so
``hub.routing`` and ``provider.*`` are classic queues with ``x-max-priority: 9`` (ten
levels, matching the outbox's 0-9). Everything else is a quorum queue.

Retry queues: every queue a hub stage may consume (``hub.inbound``, ``hub.routing``,
``hub.acks``, ``hub.subscriptions``, ``provider.*``, and ``sender.*.acks``, which the hub
pushes to webhook senders with ``hub worker push``; not ``hub.dead``) has a ``<queue>.retry``
beside it, bound to no exchange (the consumer publishes to it through the default
exchange). A message that failed for a transient reason waits there for its per-message
TTL (``expiration``, the back-off delay), then RabbitMQ dead-letters it back to ``<queue>``
(``x-dead-letter-exchange`` "" and ``x-dead-letter-routing-key`` ``<queue>``). Retry queues are quorum queues with
``x-dead-letter-strategy: at-least-once`` (and the ``x-overflow: reject-publish`` it needs):
the broker keeps a message until the work queue has taken it, so the way back loses
nothing. A message expires only at the head of its retry queue: it may wait longer than
its own delay, behind one with a longer delay, but never longer than the policy's maximum.
See ``hub.broker.retry``.

    queue                     kind     dead-letters to
    hub.inbound.retry         quorum   "" -> hub.inbound   (at-least-once)
    hub.routing.retry         quorum   "" -> hub.routing   (idem; the message keeps its priority)
    hub.acks.retry            quorum   "" -> hub.acks
    hub.subscriptions.retry   quorum   "" -> hub.subscriptions
    provider.<id>.retry       quorum   "" -> provider.<id>
    sender.<id>.acks.retry    quorum   "" -> sender.<id>.acks

The in-process ``memory://`` transport ignores queue arguments (no priorities, no
dead-lettering, no TTL); the same declarations work on it, and the consume loop does
retries and dead letters itself there (``hub.broker.consumer``).
Provider and sender ids become queue names and binding keys, so they are restricted to
letters, digits, ``_`` and ``-`` (no ``.``, ``*`` or ``#``, which a topic exchange reads).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from kombu import Connection, Exchange, Queue

from hub.broker.connection import broker_errors
from hub.errors import ConfigError

DEAD_EXCHANGE = "hub.dead"
MAX_PRIORITY = 9


class QueueKind(StrEnum):
    QUORUM = "quorum"
    PRIORITY = "classic"
    """A classic queue with ``x-max-priority`` (quorum queues cannot order by priority)."""


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    """``direct``, ``topic`` or ``fanout``."""

    def kombu(self) -> Exchange:
        return Exchange(self.name, self.type, durable=True, auto_delete=False, delivery_mode="persistent")


RETRY_SUFFIX = ".retry"


def retry_queue_name(queue: str) -> str:
    """The retry queue beside a work queue: ``<queue>.retry``."""
    return queue + RETRY_SUFFIX


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: ExchangeSpec | None
    """None: bound to no exchange (reached through the default exchange, by its name)."""
    routing_key: str
    """The binding key (ignored by a fanout exchange)."""
    kind: QueueKind = QueueKind.QUORUM
    dead_letter: bool = True
    """Rejected and expired messages go to ``hub.dead`` (for a retry queue: back to ``retry_of``)."""
    retried: bool = False
    """A hub stage consumes this queue: it has a retry queue (``retry_spec``)."""
    retry_of: str | None = None
    """This is the retry queue of that work queue."""

    @property
    def arguments(self) -> dict[str, object]:
        arguments: dict[str, object] = {"x-queue-type": self.kind.value}
        if self.kind is QueueKind.PRIORITY:
            arguments["x-max-priority"] = MAX_PRIORITY
        if self.retry_of is not None:
            arguments["x-dead-letter-exchange"] = ""
            arguments["x-dead-letter-routing-key"] = self.retry_of
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
        elif self.dead_letter:
            arguments["x-dead-letter-exchange"] = DEAD_EXCHANGE
        return arguments

    @property
    def retry_spec(self) -> QueueSpec | None:
        """The retry queue of this work queue (None when no hub stage consumes it)."""
        if not self.retried:
            return None
        return QueueSpec(retry_queue_name(self.name), None, "", retry_of=self.name)

    def kombu(self) -> Queue:
        return Queue(
            self.name,
            self.exchange.kombu() if self.exchange is not None else None,
            routing_key=self.routing_key,
            durable=True,
            exclusive=False,
            auto_delete=False,
            queue_arguments=self.arguments,
        )

    def describe(self) -> str:
        extra = ", ".join(f"{key}={value or repr(value)}" for key, value in self.arguments.items())
        source = f"{self.exchange.name} [{self.routing_key or '*'}]" if self.exchange else "(default exchange)"
        return f"queue {self.name} <- {source} ({extra})"


SUBMIT = ExchangeSpec("hub.submit", "direct")
ROUTE = ExchangeSpec("hub.route", "direct")
DELIVER = ExchangeSpec("hub.deliver", "topic")
ACKS = ExchangeSpec("hub.acks", "direct")
NOTIFY = ExchangeSpec("hub.notify", "topic")
SUBSCRIPTIONS = ExchangeSpec("hub.subscriptions", "direct")
DEAD = ExchangeSpec(DEAD_EXCHANGE, "fanout")

EXCHANGES: tuple[ExchangeSpec, ...] = (SUBMIT, ROUTE, DELIVER, ACKS, NOTIFY, SUBSCRIPTIONS, DEAD)

SUBMIT_KEY = "submit"
ROUTE_KEY = "route"
ACKS_KEY = "acks"
SUBSCRIPTIONS_KEY = "subscriptions"

INBOUND_QUEUE = QueueSpec("hub.inbound", SUBMIT, SUBMIT_KEY, retried=True)
ROUTING_QUEUE = QueueSpec("hub.routing", ROUTE, ROUTE_KEY, QueueKind.PRIORITY, retried=True)
ACKS_QUEUE = QueueSpec("hub.acks", ACKS, ACKS_KEY, retried=True)
SUBSCRIPTIONS_QUEUE = QueueSpec("hub.subscriptions", SUBSCRIPTIONS, SUBSCRIPTIONS_KEY, retried=True)
"""Providers' recipient directory changes (``hub worker subscriptions``, ``hub.routing.subscriptions_amqp``)."""
DEAD_QUEUE = QueueSpec("hub.dead", DEAD, "", dead_letter=False)

FIXED_QUEUES: tuple[QueueSpec, ...] = (INBOUND_QUEUE, ROUTING_QUEUE, ACKS_QUEUE, SUBSCRIPTIONS_QUEUE, DEAD_QUEUE)

_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _checked(kind: str, identifier: str) -> str:
    if not _ID.fullmatch(identifier):
        raise ConfigError(f"{kind} id {identifier!r} must be 1-100 letters, digits, '_' or '-'")
    return identifier


def deliver_key(provider_id: str) -> str:
    """The routing key to publish to ``hub.deliver`` for one provider."""
    return _checked("provider", provider_id)


def notify_key(sender_id: str) -> str:
    """The routing key to publish to ``hub.notify`` for one sender."""
    return _checked("sender", sender_id)


def provider_queue(provider_id: str) -> QueueSpec:
    return QueueSpec(f"provider.{provider_id}", DELIVER, deliver_key(provider_id), QueueKind.PRIORITY, retried=True)


def sender_queue(sender_id: str) -> QueueSpec:
    return QueueSpec(f"sender.{sender_id}.acks", NOTIFY, notify_key(sender_id), retried=True)


def _with_retry(spec: QueueSpec) -> tuple[QueueSpec, ...]:
    retry = spec.retry_spec
    return (spec,) if retry is None else (spec, retry)


def queues(providers: Iterable[str] = (), senders: Iterable[str] = ()) -> tuple[QueueSpec, ...]:
    """Every queue of the hub for these providers and senders (each id once), each retry queue after its queue."""
    return tuple(
        spec
        for work in (
            *FIXED_QUEUES,
            *(provider_queue(p) for p in dict.fromkeys(providers)),
            *(sender_queue(s) for s in dict.fromkeys(senders)),
        )
        for spec in _with_retry(work)
    )


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]

    def describe(self) -> list[str]:
        return [f"exchange {e.name} ({e.type})" for e in self.exchanges] + [q.describe() for q in self.queues]


def topology(providers: Iterable[str] = (), senders: Iterable[str] = ()) -> Topology:
    return Topology(EXCHANGES, queues(providers, senders))


def declare(connection: Connection, providers: Iterable[str] = (), senders: Iterable[str] = ()) -> Topology:
    """Declare every exchange, queue and binding; idempotent (declaring twice is fine).

    Raises ``Unavailable`` when the broker cannot be reached, ``ConfigError`` when a queue
    already exists with other arguments (e.g. declared classic, now quorum).
    """
    wanted = topology(providers, senders)
    with broker_errors("declaring the broker topology"):
        channel = connection.channel()
        try:
            for exchange in wanted.exchanges:
                exchange.kombu()(channel).declare()
            for queue in wanted.queues:
                queue.kombu()(channel).declare()
        finally:
            _close_quietly(channel)
    return wanted


def declare_at(url: str, providers: Iterable[str] = (), senders: Iterable[str] = ()) -> Topology:
    """``declare`` on a connection of its own to the broker at ``url``."""
    from hub.broker.connection import connect

    connection = connect(url)
    try:
        return declare(connection, providers, senders)
    finally:
        connection.release()


def _close_quietly(channel: object) -> None:
    with contextlib.suppress(Exception):  # a channel the broker already closed; nothing to release
        channel.close()  # type: ignore[attr-defined]


HUB_QUEUE_PREFIXES = ("hub.", "provider.", "sender.")
"""Prefixes of the queues of the hub's topology: never a ``reply_to``."""


def reply_queue(reply_to: str | None) -> str | None:
    """Where to answer a message published to one of the hub's doors: its ``reply_to``, unless it is
    missing or names a queue of the hub's own (anyone may publish to a door, and its answers must not
    land in a provider's deliveries, another sender's acknowledgements or the hub's work queues)."""
    if not reply_to or reply_to.startswith(HUB_QUEUE_PREFIXES):
        return None
    return reply_to
