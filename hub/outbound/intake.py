"""Acknowledgement intake: what providers report about their deliveries, verified and applied once.

``AckIntake.receive`` takes a provider's signed ``Acknowledgement`` (or an ``Acknowledgements``
batch), from ``POST /v1/acks`` or the ``hub.acks`` queue, and:

1. opens it (``hub.outbound.acks.open_acknowledgement``): safe parse, schema, the signature
   checked against the certificates ``config/providers.yaml`` registers for the issuer; over
   HTTP the issuer must also be the provider the bearer token belongs to;
2. correlates it: the delivery ``DeliveryId`` (else ``<HubMessageId>:<issuer>``) must exist
   (``ACK_UNKNOWN_DELIVERY``) and have been routed to the issuer (``ACK_NOT_YOURS``); only a
   provider with the ``paper`` capability may report ``printed`` (``ACK_EVENT_NOT_ALLOWED``);
3. de-duplicates it by (issuer, ``AcknowledgementId``): the same id saying the same thing is
   a repeat (absorbed, answered as before); the same id saying something else is refused
   (``DUPLICATE_MESSAGE_ID``);
4. advances the delivery by the pure state machine (``hub.outbound.states``): forward only,
   an ``opened`` before ``delivered`` records both, a late event is recorded and moves nothing;
   the message's state follows its deliveries (``message_state``);
5. a reply: one per message (a second is refused, ``REPLY_ALREADY_GIVEN``), only where the
   envelope offered replies and within its terms (``REPLY_NOT_ALLOWED``);
6. writes, in one transaction per call: the acknowledgement's row (``provider_acks``), the
   events that took effect (each goes to the sender through the feed), the delivery's and
   the message's new states, and an audit entry (no content: the reply stays in the event).

Each acknowledgement of a batch is judged on its own (one refused does not sink the others);
a database outage is ``Unavailable`` for the whole call (nothing written; retry).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub import metrics
from hub.broker.consumer import Incoming, Properties
from hub.envelope.reader import read_envelope
from hub.errors import ErrorCode, Rejected
from hub.outbound.acks import Acknowledgement, Event, open_acknowledgement, open_acknowledgements
from hub.outbound.states import DeliveryStep, Outcome, advance_delivery, may_reply, message_state, reply_fits
from hub.routing.providers import Capability, ProviderCatalog
from hub.safexml import DEFAULT_LIMITS, ParseLimits, parse
from hub.signing.truststore import TrustStore
from hub.signing.verifier import Verifier
from hub.store.db import take_write_lock, unavailable_on_outage
from hub.store.models import AuditEntry, Base, Delivery, Message, ProviderAcknowledgement
from hub.store.models import Event as EventRow
from hub.store.wakeup import EVENTS, notify

log = logging.getLogger("hub.acks")

CLOCK_SKEW = timedelta(minutes=5)
"""How far a provider's clock may be off the hub's (``OccurredAt`` against routing and now)."""

ACK_ROOTS = (b"<Acknowledgements", b":Acknowledgements")
"""How ``receive`` tells a batch from a single acknowledgement before parsing (then the schema decides)."""
MAX_ACK_BYTES = 4 * 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Applied:
    """What became of one acknowledgement."""

    ack_id: str
    delivery_id: str
    outcome: Outcome
    """``moved``, ``repeat``, ``late`` or ``notice``."""
    delivery_state: str
    message_state: str

    def as_json(self) -> dict[str, str]:
        return {
            "ack_id": self.ack_id,
            "delivery_id": self.delivery_id,
            "outcome": self.outcome.value,
            "delivery_state": self.delivery_state,
            "message_state": self.message_state,
        }


def fingerprint(ack: Acknowledgement, delivery_id: str) -> str:
    """What an acknowledgement says (not its bytes: a provider may sign the same one again)."""
    said = {
        "event": ack.event.value,
        "delivery": delivery_id,
        "reply": [ack.reply.choice_id, ack.reply.text] if ack.reply else None,
        "error": ack.error.code if ack.error else None,
    }
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()


def delivery_of(ack: Acknowledgement) -> str:
    """The delivery an acknowledgement speaks of (``Rejected`` when it names none, or two that disagree)."""
    if ack.delivery_id:
        if ack.hub_message_id and not ack.delivery_id.startswith(ack.hub_message_id + ":"):
            raise Rejected(
                ErrorCode.ACK_UNKNOWN_DELIVERY,
                f"DeliveryId {ack.delivery_id!r} is not a delivery of HubMessageId {ack.hub_message_id!r}",
            )
        return ack.delivery_id
    if ack.hub_message_id:
        return f"{ack.hub_message_id}:{ack.issuer}"
    raise Rejected(ErrorCode.ACK_UNKNOWN_DELIVERY, "an acknowledgement names its DeliveryId or its HubMessageId")


class AckIntake:
    """Verifies and applies providers' acknowledgements (see the module's doc). Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        providers: ProviderCatalog | Callable[[], ProviderCatalog],
        *,
        clock: Callable[[], datetime] = utcnow,
        parse_limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self.sessions = sessions
        self._providers = providers if callable(providers) else (lambda: providers)
        self.clock = clock
        self.parse_limits = parse_limits
        self._verifier: tuple[ProviderCatalog, Verifier] | None = None

    def verifier(self) -> tuple[ProviderCatalog, Verifier]:
        catalog = self._providers()
        if self._verifier is None or self._verifier[0] is not catalog:
            trust = TrustStore([c for p in catalog.providers.values() for c in p.certificates])
            self._verifier = (catalog, Verifier(trust))
        return self._verifier

    # -- the doors ---------------------------------------------------------------------------

    def open(self, data: bytes, *, issuers: Collection[str] | None = None) -> list[Acknowledgement]:
        """The verified acknowledgements in ``data`` (one, or a batch), or ``Rejected``."""
        catalog, verifier = self.verifier()
        allowed = set(catalog.ids()) if issuers is None else set(issuers) & set(catalog.ids())
        head = data[:512]
        if any(root in head for root in ACK_ROOTS):
            acks, _ = open_acknowledgements(data, verifier, self.clock(), self.parse_limits, issuers=allowed)
            return acks
        ack, _ = open_acknowledgement(data, verifier, self.clock(), self.parse_limits, issuers=allowed)
        return [ack]

    @metrics.timed("acknowledge")
    def receive(self, data: bytes, *, issuers: Collection[str] | None = None) -> list[Applied | Rejected]:
        """Open ``data`` and apply what it holds: one outcome per acknowledgement, in order.

        Raises ``Rejected`` when the document itself is refused (unreadable, unsigned, forged,
        another provider's) and ``Unavailable`` when the database cannot be reached.
        """
        try:
            acks = self.open(data, issuers=issuers)
        except Rejected as refused:
            metrics.refused("acknowledge", refused.code.value)
            raise
        return self.apply(acks)

    def handle(self, body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        """The ``consume`` handler of ``hub.acks``.

        A document refused whole (unreadable, forged, unsigned) and a single acknowledgement
        refused are ``Rejected``: dead-lettered with their code for the operators (and the
        provider) to see. In a batch, the refused ones are logged and the others applied.
        """
        results = self.receive(body)
        if len(results) == 1 and isinstance(results[0], Rejected):
            raise results[0]

    def delivered_by_push(self, provider: str) -> Callable[[dict[str, Any], object], None]:
        """The ``on_success`` of an HTTP push to ``provider``: its 2xx is the delivery's ``delivered``.

        Recorded as the provider's own acknowledgement would be (same id as the SDK's, so a
        signed ``delivered`` the provider sends as well is a repeat); the hub saw the 2xx
        itself, so there is no signature to check. A refusal (the delivery is unknown or not
        the provider's) raises, and the push is retried, then dead-lettered.
        """
        from hub.outbound.sdk import ack_id

        def record(headers: dict[str, Any], response: object) -> None:
            delivery_id = str(headers.get("delivery-id") or "")
            ack = Acknowledgement(
                ack_id=ack_id(delivery_id, Event.DELIVERED),
                event=Event.DELIVERED,
                occurred_at=self.clock(),
                issuer=provider,
                hub_message_id=str(headers.get("hub-message-id") or "") or None,
                provider=provider,
                delivery_id=delivery_id or None,
            )
            [result] = self.apply([ack])
            if isinstance(result, Rejected):
                raise result

        return record

    @metrics.timed("acknowledge")
    def handle_batch(self, batch: Sequence[Incoming]) -> list[BaseException | None]:
        """The ``consume_batches`` handler of ``hub.acks``: verify each document, apply them all at once.

        Per message, as ``handle``: a document refused whole, or a single acknowledgement
        refused, is its ``Rejected`` (dead-lettered); an outage raises for the whole batch.
        """
        outcomes: list[BaseException | None] = [None] * len(batch)
        opened: list[tuple[int, list[Acknowledgement]]] = []
        for index, incoming in enumerate(batch):
            try:
                opened.append((index, self.open(incoming.body)))
            except Rejected as refused:
                metrics.refused("acknowledge", refused.code.value)
                outcomes[index] = refused
        results = iter(self.apply([ack for _, acks in opened for ack in acks]))
        for index, acks in opened:
            mine = [next(results) for _ in acks]
            if len(mine) == 1 and isinstance(mine[0], Rejected):
                outcomes[index] = mine[0]
        return outcomes

    # -- applying ----------------------------------------------------------------------------

    def apply(self, acks: Sequence[Acknowledgement]) -> list[Applied | Rejected]:
        """Apply verified acknowledgements in one transaction; per acknowledgement its outcome or refusal.

        The whole batch is read in a few queries (the acknowledgement ids seen before, the
        deliveries of the messages concerned with their message's state, locked on PostgreSQL),
        judged in order in memory (so two acknowledgements of one delivery in one batch see
        each other), then written with one statement per table. When a concurrent consumer
        applied one of them meanwhile (a unique key), the batch is applied again one by one.
        """
        catalog = self._providers()
        now = self.clock()
        try:
            results = self._apply_batch(acks, catalog, now)
        except IntegrityError:
            if len(acks) == 1:
                results = self._apply_batch(acks, catalog, now)  # the other one's is there now: a repeat
            else:
                results = [r for ack in acks for r in self._apply_batch([ack], catalog, now)]
        for ack, result in zip(acks, results, strict=True):
            if isinstance(result, Applied):
                metrics.count("acknowledge", result.outcome.value)
                log.info(
                    "acknowledgement",
                    extra={
                        "event": "acknowledgement",
                        "message_id": result.delivery_id.rpartition(":")[0],
                        "provider": ack.issuer,
                        "kind": ack.event.value,
                        "delivery_id": result.delivery_id,
                        "outcome": result.outcome.value,
                    },
                )
            else:
                metrics.refused("acknowledge", result.code.value)
                log.warning(
                    "acknowledgement from %s refused: %s",
                    ack.issuer,
                    result.code.value,
                    extra={"event": "acknowledgement_refused", "provider": ack.issuer, "code": result.code.value},
                )
        return results

    def _apply_batch(
        self, acks: Sequence[Acknowledgement], catalog: ProviderCatalog, now: datetime
    ) -> list[Applied | Rejected]:
        with unavailable_on_outage(), self.sessions() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            take_write_lock(session)
            batch = _Batch(session, acks, postgres=postgres)
            results: list[Applied | Rejected] = []
            for ack in acks:
                try:
                    results.append(self._judge(session, batch, ack, catalog, now))
                except Rejected as refused:
                    results.append(refused)
            batch.write(session)
            if batch.events:
                notify(session, EVENTS)
            session.commit()
        return results

    def _judge(
        self, session: Session, batch: _Batch, ack: Acknowledgement, catalog: ProviderCatalog, now: datetime
    ) -> Applied:
        """One acknowledgement against what the batch knows; its writes go to ``batch`` (nothing on refusal)."""
        delivery_id = delivery_of(ack)
        said = fingerprint(ack, delivery_id)
        delivery = batch.deliveries.get(delivery_id)
        if delivery is None:
            raise Rejected(ErrorCode.ACK_UNKNOWN_DELIVERY, f"no delivery {delivery_id!r} is known to the hub")
        if delivery.provider != ack.issuer:
            raise Rejected(
                ErrorCode.ACK_NOT_YOURS,
                f"delivery {delivery_id!r} was not routed to {ack.issuer!r}; a provider acknowledges its own",
            )
        message_id = delivery.message_id
        _check_time(ack, delivery.created_at, now)
        previous = batch.seen.get((ack.issuer, ack.ack_id))
        if previous is not None:
            if previous != said:
                raise Rejected(
                    ErrorCode.DUPLICATE_MESSAGE_ID,
                    f"acknowledgement id {ack.ack_id!r} was already used for another acknowledgement; "
                    "give each acknowledgement its own id",
                )
            return Applied(ack.ack_id, delivery_id, Outcome.REPEAT, delivery.state, batch.message_states[message_id])
        if ack.event is Event.PRINTED:
            provider = catalog.providers.get(ack.issuer)
            if provider is None or Capability.PAPER not in provider.capabilities:
                raise Rejected(ErrorCode.ACK_EVENT_NOT_ALLOWED, "only a paper provider reports 'printed'")
        step = advance_delivery(delivery.state, ack.event)
        if ack.event is Event.REPLIED:
            self._check_reply(session, batch, ack, message_id)
        current = batch.message_states[message_id]
        new_message_state = current
        if step.outcome is Outcome.MOVED:
            delivery.state = step.state.value
            others = [d.state for d in batch.by_message[message_id]]
            new_message_state = message_state(current, others).value
            batch.moved(ack, delivery, step, new_message_state, now)
            if Event.REPLIED in step.effects:
                batch.replies[message_id] = batch.replies.get(message_id, 0) + 1
        batch.seen[(ack.issuer, ack.ack_id)] = said
        batch.recorded(ack, delivery, said, step, now)
        return Applied(ack.ack_id, delivery_id, step.outcome, step.state.value, new_message_state)

    def _check_reply(self, session: Session, batch: _Batch, ack: Acknowledgement, message_id: str) -> None:
        refused = may_reply(batch.message_states[message_id], batch.replies_so_far(session, message_id))
        if refused is None:
            if ack.reply is None:
                raise Rejected(ErrorCode.REPLY_NOT_ALLOWED, "a 'replied' acknowledgement carries the Reply")
            envelope = session.scalar(select(Message.envelope).where(Message.id == message_id))
            options = None
            if envelope is not None:
                options = read_envelope(parse(bytes(envelope), limits=self.parse_limits)).content.reply_options
            refused = reply_fits(options, ack.reply, ack.occurred_at)
        if refused is not None:
            raise Rejected.of([refused])


def _check_time(ack: Acknowledgement, routed_at: datetime, now: datetime) -> None:
    """A provider's ``OccurredAt`` (signed into registered-mail proofs, and the time a reply's deadline is
    judged at) lies between the delivery's routing and now, give or take ``CLOCK_SKEW``: DATE_INCONSISTENT."""
    if ack.occurred_at > now + CLOCK_SKEW:
        raise Rejected(
            ErrorCode.DATE_INCONSISTENT,
            f"OccurredAt {ack.occurred_at.isoformat()} is in the future (the hub's time is {now.isoformat()}); "
            "report an event when it has happened, and check the clock",
        )
    if ack.occurred_at < routed_at - CLOCK_SKEW:
        raise Rejected(
            ErrorCode.DATE_INCONSISTENT,
            f"OccurredAt {ack.occurred_at.isoformat()} is before the delivery was routed to you "
            f"({routed_at.isoformat()}); report when the event happened",
        )


class _Batch:
    """What a batch of acknowledgements reads once, changes in memory, and writes at the end."""

    def __init__(self, session: Session, acks: Sequence[Acknowledgement], *, postgres: bool) -> None:
        message_ids: set[str] = set()
        for ack in acks:
            with contextlib.suppress(Rejected):  # refused later, one by one
                message_ids.add(delivery_of(ack).rpartition(":")[0])
        query = (
            select(Delivery, Message.state)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.message_id.in_(sorted(message_ids)))
            .order_by(Delivery.id)
        )
        if postgres:  # two batches acknowledging one message: one after the other
            query = query.with_for_update(of=Delivery)
        self.deliveries: dict[str, Delivery] = {}
        self.message_states: dict[str, str] = {}
        for delivery, state in session.execute(query) if message_ids else ():
            self.deliveries[delivery.id] = delivery
            self.message_states[delivery.message_id] = state
        self.by_message: dict[str, list[Delivery]] = {}
        for delivery in self.deliveries.values():
            session.expunge(delivery)  # changed in memory, written by ``write``
            self.by_message.setdefault(delivery.message_id, []).append(delivery)
        self.initial = {ident: d.state for ident, d in self.deliveries.items()}
        self.initial_messages = dict(self.message_states)
        keys = {(ack.issuer, ack.ack_id) for ack in acks}
        self.seen: dict[tuple[str, str], str] = {}
        if keys:
            known = session.execute(
                select(
                    ProviderAcknowledgement.issuer, ProviderAcknowledgement.ack_id, ProviderAcknowledgement.fingerprint
                ).where(ProviderAcknowledgement.ack_id.in_(sorted({k[1] for k in keys})))
            )
            self.seen = {(issuer, ack_id): said for issuer, ack_id, said in known if (issuer, ack_id) in keys}
        self.replies: dict[str, int] = {}
        self._replies_read: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.updated_at: dict[str, datetime] = {}

    def replies_so_far(self, session: Session, message_id: str) -> int:
        if message_id not in self._replies_read:
            stored = session.scalar(
                select(func.count())
                .select_from(ProviderAcknowledgement)
                .where(
                    ProviderAcknowledgement.message_id == message_id,
                    ProviderAcknowledgement.event == Event.REPLIED.value,
                    ProviderAcknowledgement.outcome == Outcome.MOVED.value,
                )
            )
            self.replies[message_id] = self.replies.get(message_id, 0) + int(stored or 0)
            self._replies_read.add(message_id)
        return self.replies[message_id]

    def moved(
        self, ack: Acknowledgement, delivery: Delivery, step: DeliveryStep, new_message_state: str, now: datetime
    ) -> None:
        self.message_states[delivery.message_id] = new_message_state
        self.updated_at[delivery.id] = now
        for effect in step.effects:
            detail: dict[str, Any] = {"ack_id": ack.ack_id}
            if effect is not ack.event:
                detail["implied_by"] = ack.event.value
            if effect is Event.REPLIED and ack.reply is not None:
                detail["reply"] = {"choice_id": ack.reply.choice_id, "text": ack.reply.text}
            if effect is Event.FAILED and ack.error is not None:
                detail["error"] = {"code": ack.error.code, "message": ack.error.message[:1000]}
            self.events.append(
                {
                    "message_id": delivery.message_id,
                    "kind": effect.value,
                    "occurred_at": ack.occurred_at,
                    "source": ack.issuer,
                    "provider": ack.issuer,
                    "detail": json.dumps(detail),
                }
            )

    def recorded(self, ack: Acknowledgement, delivery: Delivery, said: str, step: DeliveryStep, now: datetime) -> None:
        self.acks.append(
            {
                "issuer": ack.issuer,
                "ack_id": ack.ack_id,
                "fingerprint": said,
                "message_id": delivery.message_id,
                "delivery_id": delivery.id,
                "event": ack.event.value,
                "outcome": step.outcome.value,
                "occurred_at": ack.occurred_at,
                "received_at": now,
            }
        )
        self.audit.append(
            {
                "at": now,
                "actor": f"provider:{ack.issuer}",
                "action": "acknowledged",
                "message_id": delivery.message_id,
                "detail": json.dumps(
                    {
                        "ack_id": ack.ack_id,
                        "event": ack.event.value,
                        "delivery": delivery.id,
                        "outcome": step.outcome.value,
                        "effects": [e.value for e in step.effects],
                    }
                ),
            }
        )

    def write(self, session: Session) -> None:
        """One statement per table (psycopg pipelines the executemany)."""
        connection = session.connection()
        deliveries = _table(Delivery)
        messages = _table(Message)
        changed = [
            {"ident": ident, "new_state": d.state, "at": self.updated_at[ident]}
            for ident, d in self.deliveries.items()
            if d.state != self.initial[ident]
        ]
        if changed:
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == bindparam("ident"))
                .values(state=bindparam("new_state"), updated_at=bindparam("at")),
                changed,
            )
        states = [
            {"ident": ident, "new_state": state}
            for ident, state in self.message_states.items()
            if state != self.initial_messages[ident]
        ]
        if states:
            connection.execute(
                update(messages).where(messages.c.id == bindparam("ident")).values(state=bindparam("new_state")),
                states,
            )
        for model, rows in ((EventRow, self.events), (ProviderAcknowledgement, self.acks), (AuditEntry, self.audit)):
            if rows:
                connection.execute(insert(_table(model)), rows)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)
