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

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from hub.broker.consumer import Properties
from hub.envelope.reader import read_envelope
from hub.errors import ErrorCode, Rejected
from hub.outbound.acks import Acknowledgement, Event, open_acknowledgement, open_acknowledgements
from hub.outbound.states import DeliveryStep, Outcome, advance_delivery, may_reply, message_state, reply_fits
from hub.routing.providers import Capability, ProviderCatalog
from hub.safexml import DEFAULT_LIMITS, ParseLimits, parse
from hub.signing.truststore import TrustStore
from hub.signing.verifier import Verifier
from hub.store.db import unavailable_on_outage
from hub.store.models import AuditEntry, Delivery, Message, ProviderAcknowledgement
from hub.store.models import Event as EventRow

log = logging.getLogger("hub.acks")

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

    def receive(self, data: bytes, *, issuers: Collection[str] | None = None) -> list[Applied | Rejected]:
        """Open ``data`` and apply what it holds: one outcome per acknowledgement, in order.

        Raises ``Rejected`` when the document itself is refused (unreadable, unsigned, forged,
        another provider's) and ``Unavailable`` when the database cannot be reached.
        """
        return self.apply(self.open(data, issuers=issuers))

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

    # -- applying ----------------------------------------------------------------------------

    def apply(self, acks: Sequence[Acknowledgement]) -> list[Applied | Rejected]:
        """Apply verified acknowledgements in one transaction; per acknowledgement its outcome or refusal."""
        catalog = self._providers()
        now = self.clock()
        results: list[Applied | Rejected] = []
        with unavailable_on_outage(), self.sessions() as session:
            if session.get_bind().dialect.name == "sqlite":
                # Take SQLite's write lock first: a transaction that read, then writes after another
                # writer committed, fails at once (a stale snapshot) instead of waiting its turn.
                session.execute(text("UPDATE provider_acks SET outcome = outcome WHERE 0"))
            for ack in acks:
                try:
                    with session.begin_nested():  # a refusal found half-way leaves nothing of this one
                        results.append(self._apply_one(session, ack, catalog, now))
                except Rejected as refused:
                    results.append(refused)
            session.commit()
        for ack, result in zip(acks, results, strict=True):
            if isinstance(result, Applied):
                log.info(
                    "acknowledgement",
                    extra={
                        "event": "acknowledgement",
                        "provider": ack.issuer,
                        "kind": ack.event.value,
                        "delivery_id": result.delivery_id,
                        "outcome": result.outcome.value,
                    },
                )
            else:
                log.warning("acknowledgement from %s refused: %s", ack.issuer, result.code.value)
        return results

    def _apply_one(self, session: Session, ack: Acknowledgement, catalog: ProviderCatalog, now: datetime) -> Applied:
        delivery_id = delivery_of(ack)
        said = fingerprint(ack, delivery_id)
        delivery = self._delivery(session, delivery_id)
        if delivery is None:
            raise Rejected(ErrorCode.ACK_UNKNOWN_DELIVERY, f"no delivery {delivery_id!r} is known to the hub")
        if delivery.provider != ack.issuer:
            raise Rejected(
                ErrorCode.ACK_NOT_YOURS,
                f"delivery {delivery_id!r} was not routed to {ack.issuer!r}; a provider acknowledges its own",
            )
        message = session.get(Message, delivery.message_id)
        assert message is not None  # a delivery's foreign key
        previous = session.get(ProviderAcknowledgement, (ack.issuer, ack.ack_id))
        if previous is not None:
            if previous.fingerprint != said:
                raise Rejected(
                    ErrorCode.DUPLICATE_MESSAGE_ID,
                    f"acknowledgement id {ack.ack_id!r} was already used for another acknowledgement; "
                    "give each acknowledgement its own id",
                )
            return Applied(ack.ack_id, delivery_id, Outcome.REPEAT, delivery.state, message.state)
        if ack.event is Event.PRINTED:
            provider = catalog.providers.get(ack.issuer)
            if provider is None or Capability.PAPER not in provider.capabilities:
                raise Rejected(ErrorCode.ACK_EVENT_NOT_ALLOWED, "only a paper provider reports 'printed'")
        if ack.event is Event.REPLIED:
            self._check_reply(session, ack, message)
        step = advance_delivery(delivery.state, ack.event)
        new_message_state = message.state
        if step.outcome is Outcome.MOVED:
            others = session.scalars(
                select(Delivery.state).where(Delivery.message_id == message.id, Delivery.id != delivery.id)
            )
            new_message_state = message_state(message.state, [*others, step.state]).value
            self._write_moves(session, ack, delivery, message, step, new_message_state, now)
        session.execute(
            insert(ProviderAcknowledgement).values(
                issuer=ack.issuer,
                ack_id=ack.ack_id,
                fingerprint=said,
                message_id=message.id,
                delivery_id=delivery_id,
                event=ack.event.value,
                outcome=step.outcome.value,
                occurred_at=ack.occurred_at,
                received_at=now,
            )
        )
        session.execute(
            insert(AuditEntry).values(
                at=now,
                actor=f"provider:{ack.issuer}",
                action="acknowledged",
                message_id=message.id,
                detail=json.dumps(
                    {
                        "ack_id": ack.ack_id,
                        "event": ack.event.value,
                        "delivery": delivery_id,
                        "outcome": step.outcome.value,
                        "effects": [e.value for e in step.effects],
                    }
                ),
            )
        )
        return Applied(ack.ack_id, delivery_id, step.outcome, step.state.value, new_message_state)

    @staticmethod
    def _delivery(session: Session, delivery_id: str) -> Delivery | None:
        query = select(Delivery).where(Delivery.id == delivery_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # two acknowledgements of one delivery: one after the other
        return session.scalars(query).first()

    def _check_reply(self, session: Session, ack: Acknowledgement, message: Message) -> None:
        if session.get_bind().dialect.name == "postgresql":  # two providers' replies to one message: in turn
            session.execute(select(Message.id).where(Message.id == message.id).with_for_update())
        replies = session.scalar(
            select(func.count())
            .select_from(ProviderAcknowledgement)
            .where(
                ProviderAcknowledgement.message_id == message.id,
                ProviderAcknowledgement.event == Event.REPLIED.value,
                ProviderAcknowledgement.outcome == Outcome.MOVED.value,
            )
        )
        refused = may_reply(message.state, int(replies or 0))
        if refused is None:
            if ack.reply is None:
                raise Rejected(ErrorCode.REPLY_NOT_ALLOWED, "a 'replied' acknowledgement carries the Reply")
            options = None
            if message.envelope is not None:
                options = read_envelope(parse(bytes(message.envelope), limits=self.parse_limits)).content.reply_options
            refused = reply_fits(options, ack.reply, ack.occurred_at)
        if refused is not None:
            raise Rejected.of([refused])

    @staticmethod
    def _write_moves(
        session: Session,
        ack: Acknowledgement,
        delivery: Delivery,
        message: Message,
        step: DeliveryStep,
        new_message_state: str,
        now: datetime,
    ) -> None:
        session.execute(
            update(Delivery).where(Delivery.id == delivery.id).values(state=step.state.value, updated_at=now)
        )
        if new_message_state != message.state:
            session.execute(update(Message).where(Message.id == message.id).values(state=new_message_state))
        rows: list[dict[str, Any]] = []
        for effect in step.effects:
            detail: dict[str, Any] = {"ack_id": ack.ack_id}
            if effect is not ack.event:
                detail["implied_by"] = ack.event.value
            if effect is Event.REPLIED and ack.reply is not None:
                detail["reply"] = {"choice_id": ack.reply.choice_id, "text": ack.reply.text}
            if effect is Event.FAILED and ack.error is not None:
                detail["error"] = {"code": ack.error.code, "message": ack.error.message[:1000]}
            rows.append(
                {
                    "message_id": message.id,
                    "kind": effect.value,
                    "occurred_at": ack.occurred_at,
                    "source": ack.issuer,
                    "provider": ack.issuer,
                    "detail": json.dumps(detail),
                }
            )
        session.execute(insert(EventRow), rows)
