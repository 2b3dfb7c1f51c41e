"""The provider SDK: what a mailbox provider embeds to take deliveries and acknowledge them.

The contract
------------

**Deliveries.** The hub publishes each delivery to the provider's queue ``provider.<id>``
(exchange ``hub.deliver``, routing key the provider id). The body is the signed envelope
exactly as the sender sent it; the headers say what a provider needs before reading it:

    header            value
    hub-message-id    the hub's message id (a UUID)
    delivery-id       this delivery's id (``<hub message id>:<provider id>``), at most 64 characters
    priority          low / normal / high
    registered        true when the sender asked for registered mail (proofs of delivery and opening)
    sender            the institution's CBE number
    expires-at        ISO 8601; absent when the message is kept indefinitely
    content_type      application/xml

No recipient identifier travels in headers: the recipient is inside the signed envelope.

**Large envelopes travel by reference** (claim check, ``hub.outbound.claims``): above the
hub's ``claim_check_bytes`` the body is empty and the headers ``envelope-url``,
``envelope-bytes`` and ``envelope-sha256`` say where and what it is. Give ``ProviderClient``
``hub_url`` and ``api_token`` and it fetches such envelopes before the handler sees them
(checked against the announced size and digest); the handler always gets the envelope.

**Notices.** The same queue also carries the hub's notices about a document the provider
holds (``hub.lifecycle.retention``): ``documentExpirationAlert`` (it expires in a few days and
is still unread: tell the recipient), ``newDocumentReminder`` (still unread: remind the
recipient) and ``expired`` (the message expired: remove the document). A notice has the
header ``notice`` (the event) beside ``hub-message-id``, ``delivery-id`` and ``expires-at``;
its body is an ``Acknowledgement`` signed by the hub (``Issuer`` hub). ``run`` hands notices
to ``on_notice`` as a ``Notice`` (without ``on_notice`` they are logged), and acknowledges
them on the broker when it returns (a notice needs no acknowledgement to the hub).
``ProviderClient.run`` consumes the queue and hands each one to the provider's handler as a
``Delivery``. A delivery without its headers (or with unreadable ones) can never be handled:
it is refused (``Rejected``) and dead-lettered to ``hub.dead`` at once, and the handler never
sees it. When the handler returns, the delivery is done (acked on the broker); when it
raises ``Rejected`` it is dead-lettered; when it raises anything else (``Unavailable``, a
bug) it is retried later with back-off, then dead-lettered (``hub.broker.consumer``).
Delivery is at-least-once: the same delivery may come again (same ``delivery_id``), and
acknowledging it again sends the same acknowledgement (same id), which the hub ignores.

**Acknowledgements.** ``ProviderClient.acknowledge(delivery, event, ...)`` reports one event
of a delivery (``delivered``, ``opened``, ``replied``, ``failed``, ``printed``, ``expired``, or
a notice) as an ``Acknowledgement`` document (``schemas/acknowledgement-1.xsd``):

- ``Issuer`` and ``Provider``: the provider id; ``HubMessageId``, ``DeliveryId`` from the delivery;
  ``EnvelopeDigest``: SHA-256 of the envelope bytes as received;
- ``AcknowledgementId``: ``ack_id(delivery_id, event)``, deterministic, so a repeat is the
  same acknowledgement: ``<delivery id>:<event>`` when that fits ``t:Token64`` (letters,
  digits and ``. _ : / -``, 1 to 64 characters), else the 64 hex digits of its SHA-256;
- a registered delivery's ``delivered`` and ``opened`` carry a ``Proof`` (the digest, the
  provider, when it was delivered / opened, the assurance level used to open it);
- ``replied`` carries the ``Reply`` (one of the envelope's choices, or free text);
  ``failed`` may carry an ``ErrorDetail``;
- signed with the provider's key (its certificate must be listed under the provider's
  ``certificates`` in ``config/providers.yaml``: the hub checks the signature against those
  only) and published persistent, with publisher confirms, to exchange ``hub.acks`` with
  routing key ``acks`` (``content_type`` ``application/xml``, ``message_id`` the ack id).
  ``acknowledge`` returns once the broker confirmed it; else it raises ``Unavailable``.

**In bulk.** ``run_batches`` hands the handler the deliveries already waiting (up to
``batch_size``; one when only one waits), and ``acknowledge_all(deliveries, event)`` reports
the same event for all of them as one ``Acknowledgements`` document (an ``Item`` per
acknowledgement, same ids as one by one) under one signature, published with one confirm
(header ``items``: how many). A signature costs about a millisecond: under load this is what
keeps a provider's cost per delivery low. The hub applies a batch item by item (a refused
item is logged; the others stand).

Publishing is thread-safe: a provider may acknowledge from other threads than the one
running ``run`` (e.g. "opened" when the recipient reads the message, much later).

Example::

    import threading
    from hub.outbound.acks import Event
    from hub.outbound.sdk import Delivery, ProviderClient
    from hub.signing.keys import load_key_pair

    keys = load_key_pair("myebox.key.pem", "myebox.cert.pem")
    stop = threading.Event()
    with ProviderClient("myebox", "amqp://guest:guest@rabbitmq:5672//", keys) as client:

        def handle(delivery: Delivery) -> None:
            envelope = delivery.envelope_model()       # the hub's reader, on the bytes as received
            store_in_mailbox(delivery.delivery_id, envelope)
            client.acknowledge(delivery, Event.DELIVERED)

        client.run(handle, stop)                       # until stop.set()

Later, when the recipient opens it: ``client.acknowledge(delivery, Event.OPENED)``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hub.broker.connection import DEFAULT_OPTIONS, ConnectionOptions, RetryPolicy
from hub.broker.consumer import HANDLER_BACKOFF, Incoming, Properties, consume, consume_batches
from hub.broker.retry import Copy, Republisher
from hub.broker.topology import ACKS, ACKS_KEY, provider_queue
from hub.envelope.model import ENVELOPE_NS, AssuranceLevel, Envelope
from hub.envelope.reader import read_envelope
from hub.envelope.schema import check_root, validate
from hub.errors import ErrorCode, Rejected, Unavailable
from hub.outbound.acks import (
    MAX_ITEMS,
    Acknowledgement,
    ErrorDetail,
    Event,
    Proof,
    Reply,
    signed_acknowledgement,
    signed_acknowledgements,
)
from hub.outbound.claims import EnvelopeFetcher, is_claim
from hub.outbound.states import NOTICES, PROVIDER_EVENTS
from hub.safexml import DEFAULT_LIMITS, ParseLimits, parse
from hub.signing.keys import KeyPair
from hub.signing.signer import Signer

log = logging.getLogger("hub.outbound")

ACK_CONTENT_TYPE = "application/xml"
ACK_EXCHANGE = ACKS.name
ACK_ROUTING_KEY = ACKS_KEY

TOKEN64 = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,63}")
"""``t:Token64`` of ``schemas/types-1.xsd`` (acknowledgement, delivery and provider ids)."""
HUB_MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""``t:HubMessageId``."""
PRIORITIES = ("low", "normal", "high")

REPORTABLE = PROVIDER_EVENTS | NOTICES
"""The events a provider may report (not the hub's own: accepted, routed, rejected, undeliverable)."""
PROOF_EVENTS = frozenset({Event.DELIVERED, Event.OPENED})
"""The events of a registered delivery that carry a ``Proof``."""


def ack_id(delivery_id: str, event: Event | str) -> str:
    """The deterministic ``AcknowledgementId`` of ``event`` on ``delivery_id``.

    ``<delivery id>:<event>`` when it fits ``t:Token64``; else the 64 hex digits of that
    string's SHA-256 (hex never contains ``:``, so the two forms cannot meet).
    """
    readable = f"{delivery_id}:{Event(event).value}"
    if TOKEN64.fullmatch(readable):
        return readable
    return hashlib.sha256(readable.encode("utf-8")).hexdigest()


def _bad_header(name: str, problem: str) -> Rejected:
    return Rejected(
        ErrorCode.SCHEMA_INVALID,
        f"the delivery's header {name!r} {problem}; the hub's relay writes hub-message-id, delivery-id, "
        "priority, registered and sender on every delivery.",
        path=f"headers/{name}",
    )


def _text_header(headers: Mapping[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        raise _bad_header(name, "is missing")
    if not isinstance(value, str) or not value.strip():
        raise _bad_header(name, f"is not a text ({value!r})")
    return value.strip()


def _flag_header(headers: Mapping[str, Any], name: str) -> bool:
    value = headers.get(name)
    if value is None:
        raise _bad_header(name, "is missing")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    raise _bad_header(name, f"is not true or false ({value!r})")


def _moment_header(headers: Mapping[str, Any], name: str) -> datetime | None:
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = _text_header(headers, name)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _bad_header(name, f"is not an ISO 8601 date-time ({text!r})") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _bad_header(name, "has no time zone")
    return moment.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One delivery as a provider receives it: the headers read, and the envelope as received."""

    delivery_id: str
    hub_message_id: str
    priority: str
    """``low``, ``normal`` or ``high``."""
    expires_at: datetime | None
    """When the message expires (aware, UTC); ``None``: kept indefinitely."""
    registered: bool
    """Registered mail: ``delivered`` and ``opened`` carry a ``Proof``."""
    sender: str
    """The institution's CBE number."""
    envelope: bytes = field(repr=False)
    """The signed envelope exactly as the sender sent it (its SHA-256 is ``envelope_digest``)."""

    @classmethod
    def from_message(cls, body: bytes, headers: Mapping[str, Any]) -> Delivery:
        """Read a delivery from a message of ``provider.<id>``; ``Rejected`` when it is malformed."""
        delivery_id = _text_header(headers, "delivery-id")
        if not TOKEN64.fullmatch(delivery_id):
            raise _bad_header("delivery-id", "is not a token of 1-64 letters, digits and . _ : / -")
        hub_message_id = _text_header(headers, "hub-message-id")
        if not HUB_MESSAGE_ID.fullmatch(hub_message_id):
            raise _bad_header("hub-message-id", "is not a hub message id (a lower-case UUID)")
        priority = _text_header(headers, "priority")
        if priority not in PRIORITIES:
            raise _bad_header("priority", f"is {priority!r}, not one of {', '.join(PRIORITIES)}")
        if not body:
            raise Rejected(ErrorCode.XML_MALFORMED, "the delivery has no body; it carries the signed envelope.")
        return cls(
            delivery_id=delivery_id,
            hub_message_id=hub_message_id,
            priority=priority,
            expires_at=_moment_header(headers, "expires-at"),
            registered=_flag_header(headers, "registered"),
            sender=_text_header(headers, "sender"),
            envelope=bytes(body),
        )

    @functools.cached_property
    def envelope_digest(self) -> bytes:
        """SHA-256 of the envelope as received (32 bytes): what acknowledgements and proofs name."""
        return hashlib.sha256(self.envelope).digest()

    @functools.cached_property
    def _model(self) -> Envelope:
        limits = ParseLimits(max_bytes=max(DEFAULT_LIMITS.max_bytes, len(self.envelope)))
        root = parse(self.envelope, limits=limits)
        check_root(root, expect=ENVELOPE_NS, name="PublishMessage")
        validate(root, expect=ENVELOPE_NS)
        return read_envelope(root)

    def envelope_model(self) -> Envelope:
        """The envelope read with the hub's reader (hardened parse, schema, model), once.

        Raises ``Rejected`` when it cannot be read. The sender's signature is not checked
        here: the hub checked it on acceptance.
        """
        return self._model


NOTICE_EVENTS = frozenset({Event.DOCUMENT_EXPIRATION_ALERT, Event.NEW_DOCUMENT_REMINDER, Event.EXPIRED})
"""What a notice from the hub may say."""


@dataclass(frozen=True, kw_only=True)
class Notice:
    """A notice from the hub about a delivery: expires soon, still unread, or expired (remove it)."""

    event: Event
    """``documentExpirationAlert``, ``newDocumentReminder`` or ``expired``."""
    hub_message_id: str
    delivery_id: str
    expires_at: datetime | None = None
    """When the message expires (expired: when it did); ``None`` when the header is absent."""
    document: bytes = field(default=b"", repr=False)
    """The ``Acknowledgement`` signed by the hub, as received (verify it with the hub's certificate)."""

    @classmethod
    def from_message(cls, body: bytes, headers: Mapping[str, Any]) -> Notice:
        """Read a notice from a message of ``provider.<id>`` (header ``notice``); ``Rejected`` when malformed."""
        said = _text_header(headers, "notice")
        if said not in NOTICE_EVENTS:
            raise _bad_header("notice", f"is {said!r}, not one of {', '.join(sorted(NOTICE_EVENTS))}")
        delivery_id = _text_header(headers, "delivery-id")
        if not TOKEN64.fullmatch(delivery_id):
            raise _bad_header("delivery-id", "is not a token of 1-64 letters, digits and . _ : / -")
        hub_message_id = _text_header(headers, "hub-message-id")
        if not HUB_MESSAGE_ID.fullmatch(hub_message_id):
            raise _bad_header("hub-message-id", "is not a hub message id (a lower-case UUID)")
        return cls(
            event=Event(said),
            hub_message_id=hub_message_id,
            delivery_id=delivery_id,
            expires_at=_moment_header(headers, "expires-at"),
            document=bytes(body),
        )


DeliveryHandler = Callable[[Delivery], None]
BatchDeliveryHandler = Callable[[Sequence[Delivery]], Sequence[BaseException | None] | None]
"""Handles several deliveries at once: ``None`` (all done), or one outcome per delivery, in order
(``None``: done; ``Rejected``: dead-lettered; another exception: retried). Raising retries them all."""
NoticeHandler = Callable[[Notice], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ProviderClient:
    """A provider's connection to the hub: consume its deliveries, publish signed acknowledgements.

    ``run`` blocks in the calling thread until ``stop`` is set; ``acknowledge`` may be called
    from any thread (publishing takes a lock). ``close`` (or leaving the ``with`` block)
    closes the publishing connection.
    """

    def __init__(
        self,
        provider_id: str,
        broker_url: str,
        key_pair: KeyPair,
        *,
        options: ConnectionOptions = DEFAULT_OPTIONS,
        backoff: RetryPolicy = HANDLER_BACKOFF,
        prefetch: int = 100,
        poll: float = 0.25,
        confirm_timeout: float = 10.0,
        hub_url: str | None = None,
        api_token: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.fetcher = EnvelopeFetcher(hub_url, api_token) if hub_url and api_token else None
        """Fetches claim-checked envelopes (``hub.outbound.claims``); ``None`` without ``hub_url`` and ``api_token``."""
        self.queue = provider_queue(provider_id).name  # checks the id (it names a queue)
        self.provider_id = provider_id
        self.broker_url = broker_url
        self.options, self.backoff, self.prefetch, self.poll = options, backoff, prefetch, poll
        self.clock = clock
        self.signer = Signer(key_pair)
        self._publisher = Republisher(broker_url, options=options, confirm_timeout=confirm_timeout)
        self._lock = threading.Lock()

    # -- deliveries ---------------------------------------------------------------------------

    def run(self, handler: DeliveryHandler, stop: threading.Event, on_notice: NoticeHandler | None = None) -> None:
        """Consume ``provider.<id>`` until ``stop`` is set, handing each delivery to ``handler``
        and each notice from the hub (header ``notice``) to ``on_notice`` (None: logged and acked).

        The queue, its retry queue and ``hub.dead`` must exist (``hub broker declare``).
        """

        def on_message(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
            if headers.get("notice") is not None:
                self._notice(Notice.from_message(body, headers), on_notice)
                return
            handler(Delivery.from_message(self._envelope(body, headers), headers))

        consume(
            self.broker_url,
            self.queue,
            on_message,
            stop=stop,
            prefetch=self.prefetch,
            backoff=self.backoff,
            options=self.options,
            poll=self.poll,
        )

    def run_batches(
        self,
        handler: BatchDeliveryHandler,
        stop: threading.Event,
        on_notice: NoticeHandler | None = None,
        *,
        batch_size: int = 100,
    ) -> None:
        """``run``, handing ``handler`` the deliveries already arrived, up to ``batch_size`` at a time.

        For a provider that stores and acknowledges in bulk (one transaction, one signed
        ``Acknowledgements`` document: ``acknowledge_all``): under load the per-delivery cost
        falls, and with one delivery waiting the batch is that one, so nothing waits for a
        batch to fill. A malformed delivery is dead-lettered without reaching ``handler``;
        notices go to ``on_notice`` one by one. When ``handler`` raises, every delivery of the
        batch is retried (notices of the batch may come again too).
        """

        def on_batch(batch: Sequence[Incoming]) -> list[BaseException | None]:
            outcomes: list[BaseException | None] = [None] * len(batch)
            deliveries: list[Delivery] = []
            positions: list[int] = []
            for index, incoming in enumerate(batch):
                try:
                    if incoming.headers.get("notice") is not None:
                        self._notice(Notice.from_message(incoming.body, incoming.headers), on_notice)
                    else:
                        body = self._envelope(incoming.body, incoming.headers)
                        deliveries.append(Delivery.from_message(body, incoming.headers))
                        positions.append(index)
                except Rejected as refused:
                    outcomes[index] = refused
            if deliveries:
                results = handler(deliveries)
                if results is not None:
                    if len(results) != len(deliveries):
                        raise ValueError(f"the handler gave {len(results)} outcomes for {len(deliveries)} deliveries")
                    for index, result in zip(positions, results, strict=True):
                        outcomes[index] = result
            return outcomes

        consume_batches(
            self.broker_url,
            self.queue,
            on_batch,
            batch_size=batch_size,
            prefetch=max(self.prefetch, batch_size),
            stop=stop,
            backoff=self.backoff,
            options=self.options,
            poll=self.poll,
        )

    def _envelope(self, body: bytes, headers: Mapping[str, Any]) -> bytes:
        """The delivery's envelope: its body, or fetched from the hub when it travelled by reference."""
        if not is_claim(body, headers):
            return body
        if self.fetcher is None:
            raise Unavailable(
                f"a delivery of {headers.get('envelope-bytes')} bytes travels by reference; "
                "give the ProviderClient hub_url and api_token to fetch it"
            )
        return self.fetcher.resolve(body, headers)

    def _notice(self, notice: Notice, on_notice: NoticeHandler | None) -> None:
        if on_notice is None:
            log.info("%s: notice %s for %s", self.provider_id, notice.event.value, notice.delivery_id)
        else:
            on_notice(notice)

    # -- acknowledgements ---------------------------------------------------------------------

    def acknowledgement(
        self,
        delivery: Delivery,
        event: Event | str,
        *,
        reply: Reply | None = None,
        error: ErrorDetail | None = None,
        occurred_at: datetime | None = None,
        delivered_at: datetime | None = None,
        assurance_level: AssuranceLevel | None = None,
    ) -> Acknowledgement:
        """The acknowledgement ``acknowledge`` would send (built, not signed nor sent).

        ``occurred_at`` defaults to now. For a registered delivery, ``delivered`` and
        ``opened`` carry a ``Proof``: ``delivered_at`` (default: ``occurred_at`` of a
        ``delivered``) and, for ``opened``, ``opened_at`` = ``occurred_at`` and
        ``assurance_level`` when given. ``ValueError`` for an event a provider cannot report,
        a ``replied`` without ``reply`` or a ``reply`` on another event.
        """
        kind = Event(event)
        if kind not in REPORTABLE:
            allowed = ", ".join(sorted(REPORTABLE))
            raise ValueError(f"a provider cannot report {kind.value!r}; it reports one of: {allowed}")
        if (kind is Event.REPLIED) != (reply is not None):
            raise ValueError("a reply goes with the event 'replied', and 'replied' needs the reply")
        when = occurred_at or self.clock()
        proof = None
        if delivery.registered and kind in PROOF_EVENTS:
            proof = Proof(
                envelope_digest=delivery.envelope_digest,
                provider=self.provider_id,
                delivered_at=delivered_at or (when if kind is Event.DELIVERED else None),
                opened_at=when if kind is Event.OPENED else None,
                assurance_level=assurance_level if kind is Event.OPENED else None,
            )
        return Acknowledgement(
            ack_id=ack_id(delivery.delivery_id, kind),
            event=kind,
            occurred_at=when,
            issuer=self.provider_id,
            hub_message_id=delivery.hub_message_id,
            provider=self.provider_id,
            delivery_id=delivery.delivery_id,
            envelope_digest=delivery.envelope_digest,
            reply=reply,
            proof=proof,
            error=error,
        )

    def acknowledge(
        self,
        delivery: Delivery,
        event: Event | str,
        *,
        reply: Reply | None = None,
        error: ErrorDetail | None = None,
        occurred_at: datetime | None = None,
        delivered_at: datetime | None = None,
        assurance_level: AssuranceLevel | None = None,
    ) -> Acknowledgement:
        """Build, sign and publish (with a confirm) the acknowledgement of ``event``; return it.

        See ``acknowledgement`` for the arguments. Raises ``Unavailable`` when the broker does
        not confirm it (nothing was sent, or a duplicate may have been: acknowledge again,
        the id is the same), ``ConfigError`` when ``hub.acks`` does not exist.
        """
        ack = self.acknowledgement(
            delivery,
            event,
            reply=reply,
            error=error,
            occurred_at=occurred_at,
            delivered_at=delivered_at,
            assurance_level=assurance_level,
        )
        self.publish(ack)
        return ack

    def publish(self, ack: Acknowledgement) -> bytes:
        """Sign ``ack`` with the provider's key and publish it to ``hub.acks``; the signed bytes."""
        if ack.issuer != self.provider_id:
            raise ValueError(f"this client signs for {self.provider_id!r}, not for {ack.issuer!r}")
        document = signed_acknowledgement(self.signer, ack)
        copy = Copy(
            body=document,
            headers={
                "provider": self.provider_id,
                "event": ack.event.value,
                "ack-id": ack.ack_id,
                **({"delivery-id": ack.delivery_id} if ack.delivery_id else {}),
                **({"hub-message-id": ack.hub_message_id} if ack.hub_message_id else {}),
            },
            properties={"message_id": ack.ack_id},
            content_type=ACK_CONTENT_TYPE,
        )
        self._send(copy, f"acknowledgement {ack.ack_id} was")
        return document

    def _send(self, copy: Copy, what: str) -> None:
        """Publish to ``hub.acks`` with a confirm (one thread at a time); ``Unavailable`` when none came."""
        with self._lock:
            try:
                self._publisher.publish(copy, exchange=ACK_EXCHANGE, routing_key=ACK_ROUTING_KEY)
            except Unavailable as exc:
                raise Unavailable(f"{what} not confirmed by the broker: {exc}") from exc

    def acknowledge_all(
        self, deliveries: Sequence[Delivery], event: Event | str, *, occurred_at: datetime | None = None
    ) -> list[Acknowledgement]:
        """``acknowledge`` ``event`` for several deliveries under one signature; the acknowledgements.

        One ``Acknowledgements`` document (``publish_all``) instead of one signed document
        each: a signature is the dearest step of an acknowledgement, so a provider that
        receives in bulk (``run_batches``) should acknowledge in bulk. Same ids as one by one,
        so the hub takes a repeat (in whichever form) as a repeat. For ``delivered``,
        ``opened``, ``printed``, ``failed`` and notices: a ``replied`` goes one at a time.
        """
        when = occurred_at or self.clock()
        acks = [self.acknowledgement(delivery, event, occurred_at=when) for delivery in deliveries]
        self.publish_all(acks)
        return acks

    def publish_all(self, acks: Sequence[Acknowledgement]) -> list[bytes]:
        """Sign ``acks`` as ``Acknowledgements`` documents (at most ``MAX_ITEMS`` each) and publish
        them to ``hub.acks`` with confirms; the signed documents. ``Unavailable``: see ``acknowledge``."""
        for ack in acks:
            if ack.issuer != self.provider_id:
                raise ValueError(f"this client signs for {self.provider_id!r}, not for {ack.issuer!r}")
        documents = []
        for start in range(0, len(acks), MAX_ITEMS):
            chunk = acks[start : start + MAX_ITEMS]
            document = signed_acknowledgements(self.signer, chunk)
            batch_id = "batch:" + hashlib.sha256("\n".join(a.ack_id for a in chunk).encode()).hexdigest()[:48]
            copy = Copy(
                body=document,
                headers={"provider": self.provider_id, "items": len(chunk)},
                properties={"message_id": batch_id},
                content_type=ACK_CONTENT_TYPE,
            )
            self._send(copy, f"{len(chunk)} acknowledgements were")
            documents.append(document)
        return documents

    def close(self) -> None:
        with self._lock:
            self._publisher.close()
        if self.fetcher is not None:
            self.fetcher.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "ACK_CONTENT_TYPE",
    "ACK_EXCHANGE",
    "ACK_ROUTING_KEY",
    "BatchDeliveryHandler",
    "Delivery",
    "DeliveryHandler",
    "Notice",
    "NoticeHandler",
    "ProviderClient",
    "ack_id",
]
