"""Tables: messages, their events and deliveries, the outbox, and the audit trail.

Times are stored in UTC and read back time-zone aware on every back end. The
recipient's identifier is kept (routing needs it) but is never logged; audit details
carry no personal data.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

Id64 = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value if value.tzinfo is UTC else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("institution_id", "sender_message_id", name="uq_messages_sender_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(10), index=True)
    """The sender the recipient sees (OnBehalfOf, else the submitter)."""
    submitter_id: Mapped[str] = mapped_column(String(10))
    application_id: Mapped[str] = mapped_column(String(64))
    sender_message_id: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[str] = mapped_column(String(64))
    recipient_kind: Mapped[str] = mapped_column(String(10))
    recipient_id: Mapped[str] = mapped_column(String(11))
    registered: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[str] = mapped_column(String(6))
    environment: Mapped[str] = mapped_column(String(4))
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The envelope exactly as received (removed at expiry; the digest stays)."""
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    """The signed submission receipt, returned again on an idempotent repeat."""
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When providers were warned that the message, still unread, expires soon (lifecycle)."""
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When providers were last reminded that the message is still unread (lifecycle)."""
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When retention removed the content (the metadata, the digest and the proofs stay)."""
    routing_facts: Mapped[str | None] = mapped_column(Text)
    """What routing needs of the envelope (``MessageFacts.to_json``), written at acceptance so that
    routing never parses the envelope again; cleared once the message is routed."""


_UNSEQUENCED = "seq IS NULL"


class Event(Base):
    """One event in a message's life (``accepted``, ``routed``, ``delivered``, ...).

    ``seq`` is the event's place in the senders' feed, given after it was committed by the
    sequencer (``hub.outbound.feed``) in commit order, so that a reader following ``seq``
    never skips an event committed late nor sees one twice. NULL until sequenced.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_seq", "seq", unique=True),
        Index("ix_events_unsequenced", "id", postgresql_where=text(_UNSEQUENCED), sqlite_where=text(_UNSEQUENCED)),
    )

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    seq: Mapped[int | None] = mapped_column(Id64)


class ProviderAcknowledgement(Base):
    """Every acknowledgement a provider sent, once (``hub.outbound.intake``): the key of idempotency.

    ``fingerprint`` is the SHA-256 of what the acknowledgement says (event, message, delivery,
    reply), not of its bytes: a provider may sign the same acknowledgement again. ``outcome``:
    ``moved`` (it advanced the delivery), ``repeat``, ``late`` or ``notice`` (recorded, moved nothing).
    """

    __tablename__ = "provider_acks"

    issuer: Mapped[str] = mapped_column(String(64), primary_key=True)
    ack_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(36), index=True)
    delivery_id: Mapped[str] = mapped_column(String(101))
    event: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(8))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Cursor(Base):
    """How far a reader of the event feed has got (e.g. the forwarder to senders' queues)."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Id64, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


_READY = "sent_at IS NULL AND not_before IS NULL"
_HELD = "sent_at IS NULL AND not_before IS NOT NULL"


class OutboxEntry(Base):
    """A message to publish, committed with the effect that produced it; the relay publishes and marks it sent.

    ``not_before``: the relay leaves the row alone until then (a delivery held for a provider's
    maintenance window or the message's effective date). Two partial indexes serve the relay's
    claim: rows ready now in id order, and held rows by the time they become due; neither
    holds what was sent, so both stay as small as the backlog.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_ready", "id", postgresql_where=text(_READY), sqlite_where=text(_READY)),
        Index("ix_outbox_held", "not_before", "id", postgresql_where=text(_HELD), sqlite_where=text(_HELD)),
    )

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=True)
    message_id: Mapped[str | None] = mapped_column(String(36))
    exchange: Mapped[str] = mapped_column(String(64))
    routing_key: Mapped[str] = mapped_column(String(128))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    """What to publish; NULL: the stored envelope of ``message_id`` (a delivery refers to it, no copy)."""
    headers: Mapped[str] = mapped_column(Text, default="{}")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One accepted message on its way to one provider (``hub.routing.worker``).

    The id is ``<message id>:<provider id>``, and (message, provider) is unique: routing a
    message twice (the broker delivers at least once) cannot create a second delivery.
    ``state`` starts ``pending`` (its outbox row waits for the relay, maybe until
    ``not_before``); the acknowledgement stage moves it on (``delivered``, ``failed``, ...).
    ``priority`` is the broker priority it was published with (0-9).
    """

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("message_id", "provider", name="uq_deliveries_message_provider"),)

    id: Mapped[str] = mapped_column(String(101), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"))
    provider: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))
    """Chained by the audit sealer (lifecycle); NULL until sealed."""
    seq: Mapped[int | None] = mapped_column(Id64, unique=True)
    """The entry's place in the chain, given by the sealer in commit order; NULL until sealed."""


class SingleUse(Base):
    """A value a request may carry once (a WS-Security signature, a JWT ``jti``), by its SHA-256, until
    ``until``: ``hub.store.single_use``. Rows past ``until`` are pruned; they no longer matter."""

    __tablename__ = "single_use"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    until: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Refusal(Base):
    """An envelope refused at intake from a sender the hub could identify: counted, never its content.

    ``sender_id`` is the institution the envelope claimed to be from once its signature was
    verified (else the authenticated party); refusals of unauthenticated garbage leave nothing.
    """

    __tablename__ = "refusals"
    __table_args__ = (Index("ix_refusals_sender_at", "sender_id", "at"),)

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    sender_id: Mapped[str] = mapped_column(String(10))
    submitter_id: Mapped[str | None] = mapped_column(String(10))
    message_type: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(32))
    door: Mapped[str] = mapped_column(String(16))


class RecipientRecord(Base):
    """What the directory knows of one citizen (SSIN) or enterprise (CBE); see ``hub.routing.directory``.

    ``exclusive_at`` and ``language_at`` are the times of the change that last set those fields, so
    that a late, older change cannot undo a newer one (``consent_at``/``withdrawn_at`` are their own).
    ``updated_at`` is the hub's clock when the row was last written.
    """

    __tablename__ = "recipients"

    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(11), primary_key=True)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exclusive: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusive_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    language: Mapped[str | None] = mapped_column(String(2))
    language_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_connection: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RecipientProvider(Base):
    """A provider a recipient reads with (``linked_at`` set) or no longer does (``unlinked_at`` set).

    One of the two holds the time of the latest link or unlink. An unlink keeps the row (its time)
    so that an older link arriving late does not bring the provider back.
    """

    __tablename__ = "recipient_providers"
    __table_args__ = (
        ForeignKeyConstraint(
            ["kind", "recipient_id"],
            ["recipients.kind", "recipients.recipient_id"],
            name="fk_recipient_providers_recipient",
        ),
    )

    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(11), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unlinked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebAccount(Base):
    """A person who signs in to the web console (``hub.web``) with a password and a TOTP code.

    ``role``: ``institution`` (self-service sending for ``institution_id``) or ``operator``. The
    password is kept as an Argon2id hash; ``totp_last_step`` is the time step of the last code
    accepted, so a code is good once. After repeated failures the account is locked a while.
    """

    __tablename__ = "web_accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    institution_id: Mapped[str | None] = mapped_column(String(10))
    password_hash: Mapped[str] = mapped_column(Text)
    totp_secret: Mapped[str] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(Id64)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebSession(Base):
    """A signed-in browser: the SHA-256 of its cookie (the cookie itself is never stored), who, and its CSRF token.

    ``username`` is an account's, or ``cert:<party>`` for a sign-in with a TLS client certificate.
    """

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(16))
    institution_id: Mapped[str | None] = mapped_column(String(10))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class WebDraft(Base):
    """A message a web user has written and previewed, signed, waiting for "Send" (or abandoned: pruned)."""

    __tablename__ = "web_drafts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64))
    institution_id: Mapped[str] = mapped_column(String(10))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
