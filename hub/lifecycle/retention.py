"""Retention and expiry: warn providers before a message expires unread, remind them while it
stays unread, and at expiry remove the content while keeping the metadata and the proofs.

The rules (``due``, a pure function of one message's facts, its timing and the time):

- a message whose ``expires_at`` is NULL (RetainIndefinitely, for senders allowed it) is kept:
  nothing ever happens to it;
- at ``expires_at``: **expire** (once: ``expired_at`` is set). Every provider that may hold the
  document gets an ``expired`` notice (remove it); the envelope (body and attachments) is
  removed from the store (``messages.envelope`` = NULL); deliveries still ``pending`` or
  ``failed`` become ``expired`` and the message state follows ``hub.outbound.states.message_state``
  (a message that reached nobody becomes ``expired``; one that was delivered, opened or replied
  keeps that outcome, ``expired_at`` says the content is gone); an ``expired`` event goes to the
  sender (the forwarder signs and forwards it, or the polling feed shows it), unless the
  message was already ``expired`` (routing found it expired); an audit entry ``expired``. The
  message row, its digest, receipt, events, deliveries, acknowledgements and audit entries stay;
- ``warn_days`` before ``expires_at``, if the message is still unread (``routed`` or
  ``delivered``: nobody opened it): **warn** (once: ``warned_at``), a ``documentExpirationAlert``
  notice to each provider that holds it, so it can tell the recipient;
- every ``reminder_days`` after acceptance (at 15, 30, 45, ... days), while it is unread and not
  yet warned: **remind** (once per period: ``reminded_at``), a ``newDocumentReminder`` notice.
  A scheduler that was stopped over several periods sends one reminder, not one per period;
  after the warning, the warning speaks for itself and reminders stop.

``warn_days`` and ``reminder_days`` come from ``hub.toml`` ``[lifecycle]``, and a message type in
``senders.yaml`` may set its own (``expiry_warning_days``, ``reminder_days``); 0 means never.

Notices go to the providers only (the sender sees warnings and reminders in the audit trail,
not in its feed). A notice is an outbox row to ``hub.deliver`` with the provider as routing
key, so it reaches ``provider.<id>`` behind the deliveries published before it: the body an
``Acknowledgement`` signed by the hub (``Issuer`` hub, ``Event`` the notice, ``HubMessageId``,
``Provider``, ``DeliveryId``, ``EnvelopeDigest``), the headers ``notice`` (the event),
``hub-message-id``, ``delivery-id``, ``expires-at`` and ``content_type`` application/xml (the
provider SDK tells a notice from a delivery by the ``notice`` header). A provider "may hold" a
document when its delivery is not ``expired`` and not held by the relay until later than now
(a delivery not yet acknowledged may well have been published: it is told too).

``RetentionScheduler.run_once`` finds what is due with index range scans, in batches of
``batch`` messages, one transaction per batch (schedulers on PostgreSQL take turns on an
advisory lock; deliveries are locked before messages, as the acknowledgement intake does):

- expiries: ``expires_at`` up to now (``ix_messages_expires_at``), only since the previous
  complete round (the ``retention`` cursor, less a margin), so the ever-growing history of
  expired messages is not read again each round;
- warnings: ``expires_at`` within the longest warning period ahead, unread, not warned;
- reminders: unread messages whose acceptance (``ix_messages_accepted_at``) lies a whole number
  of reminder periods before a moment since the previous round: a few narrow ranges, not every
  unread message. The first round of a new database reads every unread message once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from hub import metrics
from hub.broker.topology import DELIVER, deliver_key
from hub.envelope.rules import MessageTypePolicy, expiry_for
from hub.errors import Unavailable
from hub.inbound.senders import SenderDirectory
from hub.outbound.acks import HUB, Acknowledgement, Event, signed_acknowledgement
from hub.outbound.states import DeliveryState, advance_delivery, message_state
from hub.signing.signer import Signer
from hub.store.db import one_at_a_time, unavailable_on_outage
from hub.store.models import AuditEntry, Cursor, Delivery, Message, OutboxEntry
from hub.store.models import Event as EventRow
from hub.store.wakeup import EVENTS, OUTBOX, notify

if TYPE_CHECKING:
    from hub.runtime import Runtime

log = logging.getLogger("hub.lifecycle")

ACTOR = "hub.lifecycle"
CURSOR = "retention"
"""The ``cursors`` row holding the time (Unix seconds) of the last complete round."""
MARGIN = timedelta(minutes=10)
"""How far back a round looks again before the previous one (clock skew, late commits, a message
skipped because it changed under the round). The cursor never moves back."""
RETENTION_LOCK = 0x6875_6272_6574  # "hubret": schedulers take turns (PostgreSQL advisory lock)
UNREAD = ("routed", "delivered")
"""Message states of a message nobody opened yet (with at least one delivery on its way or delivered)."""
NOTICE_CONTENT_TYPE = "application/xml"
WITHDRAW_ATTEMPTS = 3
"""Readings of a message to withdraw that changed under ``withdraw`` before it gives up (``Unavailable``)."""
LONGEST_RETENTION_MONTHS = 36
"""The hub's longest retention unless a message type allows longer (reminder ranges reach back this far)."""


class Action(StrEnum):
    WARN = "warn"
    REMIND = "remind"
    EXPIRE = "expire"


NOTICE_OF: dict[Action, Event] = {
    Action.WARN: Event.DOCUMENT_EXPIRATION_ALERT,
    Action.REMIND: Event.NEW_DOCUMENT_REMINDER,
    Action.EXPIRE: Event.EXPIRED,
}
AUDIT_ACTION: dict[Action, str] = {Action.WARN: "warned", Action.REMIND: "reminded", Action.EXPIRE: "expired"}


@dataclass(frozen=True)
class Timing:
    """When notices go out for one message type: days before expiry, days between reminders (0: never)."""

    warn_days: int = 7
    reminder_days: int = 15

    def of(self, policy: MessageTypePolicy | None) -> Timing:
        """The timing of a message type: its own where ``senders.yaml`` gives it, else these defaults."""
        if policy is None:
            return self
        return Timing(
            warn_days=self.warn_days if policy.expiry_warning_days is None else policy.expiry_warning_days,
            reminder_days=self.reminder_days if policy.reminder_days is None else policy.reminder_days,
        )


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What the planner reads of a stored message."""

    id: str
    state: str
    accepted_at: datetime
    expires_at: datetime | None
    warned_at: datetime | None = None
    reminded_at: datetime | None = None
    expired_at: datetime | None = None


def reminder_period(facts: Facts, reminder_days: int, now: datetime) -> tuple[int, datetime] | None:
    """The reminder period ``now`` lies in (1 from ``reminder_days`` after acceptance) and when it began."""
    if reminder_days <= 0:
        return None
    every = timedelta(days=reminder_days)
    number = (now - facts.accepted_at) // every
    if number < 1:
        return None
    return number, facts.accepted_at + number * every


def due(facts: Facts, timing: Timing, now: datetime) -> list[Action]:
    """What is due for one message at ``now`` (at most one action; see the module's doc)."""
    if facts.expired_at is not None or facts.expires_at is None:
        return []
    if now >= facts.expires_at:
        return [Action.EXPIRE]
    if facts.state not in UNREAD or facts.warned_at is not None:
        return []
    if timing.warn_days > 0 and now >= facts.expires_at - timedelta(days=timing.warn_days):
        return [Action.WARN]
    period = reminder_period(facts, timing.reminder_days, now)
    if period is not None and (facts.reminded_at is None or facts.reminded_at < period[1]):
        return [Action.REMIND]
    return []


def notice_id(delivery_id: str, action: Action, number: int | None = None) -> str:
    """The ``AcknowledgementId`` of a notice: ``<delivery id>:<warning|reminder-N|expiry>``, or
    its SHA-256 (64 hex digits) when that does not fit ``t:Token64``. Stable: a repeat is the same notice."""
    from hub.outbound.sdk import TOKEN64

    tag = {Action.WARN: "warning", Action.REMIND: f"reminder-{number}", Action.EXPIRE: "expiry"}[action]
    readable = f"{delivery_id}:{tag}"
    return readable if TOKEN64.fullmatch(readable) else hashlib.sha256(readable.encode()).hexdigest()


Range = tuple[datetime | None, datetime]
"""``(low, high]`` on a timestamp column; ``low`` None: from the beginning."""


def reminder_ranges(since: datetime | None, now: datetime, periods: Iterable[int], longest: timedelta) -> list[Range]:
    """The acceptance times whose reminder came due in ``(since - MARGIN, now]``, merged and sorted.

    A message accepted at ``a`` is due a reminder at ``a + k × days``; it came due since the
    previous round when that moment lies in the window, i.e. ``a`` in ``(since - MARGIN - k × days,
    now - k × days]``, for k from 1 until the periods reach back further than ``longest``.
    Without a previous round: everything accepted at least the shortest period ago.
    """
    days = sorted({d for d in periods if d > 0})
    if not days:
        return []
    if since is None:
        return [(None, now - timedelta(days=days[0]))]
    found: list[tuple[datetime, datetime]] = []
    for every in (timedelta(days=d) for d in days):
        k = 1
        while k * every <= longest + every:
            low, high = since - MARGIN - k * every, now - k * every
            if low < high:
                found.append((low, high))
            k += 1
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(found):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return list(merged)


@dataclass
class Report:
    """What one round did: messages warned, reminded and expired; notices written for providers."""

    warned: int = 0
    reminded: int = 0
    expired: int = 0
    notices: int = 0

    def __bool__(self) -> bool:
        return bool(self.warned or self.reminded or self.expired)

    def add(self, other: Report) -> None:
        self.warned += other.warned
        self.reminded += other.reminded
        self.expired += other.expired
        self.notices += other.notices

    def describe(self) -> str:
        return (
            f"retention: {self.warned} warned, {self.reminded} reminded, {self.expired} expired; "
            f"{self.notices} notices to providers"
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


_messages = _table(Message)
_deliveries = _table(Delivery)

_FACT_COLUMNS = (
    _messages.c.id,
    _messages.c.state,
    _messages.c.institution_id,
    _messages.c.message_type,
    _messages.c.accepted_at,
    _messages.c.expires_at,
    _messages.c.warned_at,
    _messages.c.reminded_at,
    _messages.c.expired_at,
    _messages.c.envelope_sha256,
)


@dataclass(frozen=True)
class _Scan:
    """One kind of candidate: a filter, and the column its pages follow (with the id)."""

    name: str
    where: ColumnElement[bool]
    key: Any


@dataclass
class _Target:
    id: str
    provider: str
    state: str
    priority: int
    not_before: datetime | None


@dataclass
class _Writes:
    outbox: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)


class RetentionScheduler:
    """Warnings, reminders and expiry (see the module's doc). ``run_once`` a round; ``run_forever`` rounds.

    ``senders``: the sender directory (each message type's timing); ``signer``: the hub's key
    (notices are signed by the hub); ``warn_days`` / ``reminder_days``: the hub's defaults;
    ``clock``: the hub's time (tests move it).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        senders: SenderDirectory,
        *,
        signer: Signer,
        clock: Callable[[], datetime] = utcnow,
        warn_days: int = 7,
        reminder_days: int = 15,
        batch: int = 200,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.sessions, self.senders, self.signer, self.clock, self.batch = sessions, senders, signer, clock, batch
        self.defaults = Timing(warn_days=warn_days, reminder_days=reminder_days)

    @classmethod
    def for_runtime(cls, runtime: Runtime, *, clock: Callable[[], datetime] | None = None) -> RetentionScheduler:
        """The scheduler of a hub process: its store, senders, key and ``[lifecycle]`` settings."""
        settings = runtime.settings
        return cls(
            runtime.sessions,
            runtime.directory,
            signer=Signer(runtime.hub_keys),
            clock=clock or runtime.intake.clock,
            warn_days=settings.lifecycle_warn_days,
            reminder_days=settings.lifecycle_reminder_days,
        )

    # -- timing -------------------------------------------------------------------------------

    def timing(self, institution_id: str, message_type: str) -> Timing:
        institution = self.senders.institutions.get(institution_id)
        return self.defaults.of(None if institution is None else institution.message_types.get(message_type))

    def _policies(self) -> list[MessageTypePolicy]:
        return [p for i in self.senders.institutions.values() for p in i.message_types.values()]

    def _timings(self) -> set[Timing]:
        return {self.defaults} | {self.defaults.of(p) for p in self._policies()}

    def _longest(self) -> timedelta:
        months = max([LONGEST_RETENTION_MONTHS, *(p.max_retention_months for p in self._policies())])
        return timedelta(days=31 * months + 1)

    # -- rounds -------------------------------------------------------------------------------

    def run_once(self) -> Report:
        """Warn, remind and expire what is due now; raises ``Unavailable`` when the database is down."""
        now = self.clock()
        report = Report()
        started = time.perf_counter()
        with unavailable_on_outage():
            since = self._since()
            for scan in self._scans(since, now):
                report.add(self._run_scan(scan, now))
            self._advance(now)
        if report:
            log.info(report.describe())
            for outcome in ("warned", "reminded", "expired"):
                metrics.count("expire", outcome, getattr(report, outcome))
            metrics.observe("expire", started)
        return report

    def run_forever(self, stop: threading.Event, every: float = 60.0) -> None:
        """A round every ``every`` seconds until ``stop`` is set; an outage is logged and tried again."""
        while not stop.is_set():
            try:
                self.run_once()
            except Unavailable as exc:
                log.warning("lifecycle: %s; trying again in %.0f s", exc, every)
            stop.wait(every)

    def _scans(self, since: datetime | None, now: datetime) -> Iterator[_Scan]:
        m = _messages.c
        expiring = and_(m.expires_at <= now, m.expired_at.is_(None))
        if since is not None:
            expiring = and_(expiring, m.expires_at > since - MARGIN)
        yield _Scan("expire", expiring, m.expires_at)
        timings = self._timings()
        unread = and_(m.state.in_(UNREAD), m.expired_at.is_(None), m.warned_at.is_(None), m.expires_at > now)
        longest_warning = max(t.warn_days for t in timings)
        if longest_warning > 0:
            yield _Scan("warn", and_(unread, m.expires_at <= now + timedelta(days=longest_warning)), m.expires_at)
        ranges = reminder_ranges(since, now, (t.reminder_days for t in timings), self._longest())
        if ranges:
            accepted = or_(
                *[
                    m.accepted_at <= high if low is None else and_(m.accepted_at > low, m.accepted_at <= high)
                    for low, high in ranges
                ]
            )
            yield _Scan("remind", and_(unread, accepted), m.accepted_at)

    def _run_scan(self, scan: _Scan, now: datetime) -> Report:
        report = Report()
        after: tuple[Any, str] | None = None
        while True:
            with self.sessions() as session:
                self._take_turn(session)
                query = select(*_FACT_COLUMNS).where(scan.where).order_by(scan.key, _messages.c.id).limit(self.batch)
                if after is not None:
                    query = query.where(or_(scan.key > after[0], and_(scan.key == after[0], _messages.c.id > after[1])))
                page = list(session.execute(query))
                if not page:
                    session.rollback()
                    return report
                last = page[-1]
                after = (last.expires_at if scan.key is _messages.c.expires_at else last.accepted_at, last.id)
                report.add(self._apply(session, [row.id for row in page], now))
                session.commit()
            if len(page) < self.batch:
                return report

    def _take_turn(self, session: Session) -> None:
        """One scheduler at a time: the advisory lock on PostgreSQL; SQLite's write lock at once
        (a transaction that read, then writes after another writer committed, would fail)."""
        one_at_a_time(session, RETENTION_LOCK)

    # -- one batch ----------------------------------------------------------------------------

    def _apply(self, session: Session, ids: Sequence[str], now: datetime) -> Report:
        """Plan and write what is due for the messages ``ids``, in the session's transaction."""
        targets, rows = self._read(session, ids)
        report = Report()
        writes = _Writes()
        for row in rows:
            facts = Facts(
                id=row.id,
                state=row.state,
                accepted_at=row.accepted_at,
                expires_at=row.expires_at,
                warned_at=row.warned_at,
                reminded_at=row.reminded_at,
                expired_at=row.expired_at,
            )
            timing = self.timing(row.institution_id, row.message_type)
            for action in due(facts, timing, now):
                if action is Action.EXPIRE:
                    done = self._expire(session, row, targets.get(row.id, []), now, writes)
                else:
                    done = self._notify(session, row, action, timing, targets.get(row.id, []), now, writes)
                if done is None:
                    continue
                report.notices += done
                if action is Action.EXPIRE:
                    report.expired += 1
                elif action is Action.WARN:
                    report.warned += 1
                else:
                    report.reminded += 1
        self._write(session, writes)
        return report

    def withdraw(self, session: Session, ids: Sequence[str], now: datetime, *, why: dict[str, Any]) -> Report:
        """Expire the messages ``ids`` now, whatever their ``expires_at``, in the session's transaction.

        The expiry path itself (``_expire``): the content removed, every provider that may hold the
        document told ``expired`` (remove it), deliveries not yet delivered ``expired``, an ``expired``
        event for the sender and an ``expired`` audit entry, both with ``why`` (e.g. ``{"reason":
        "replaced", "replaced_by": ...}``: ids and reasons only). A message already expired is left as it
        is. The caller commits (or rolls back: then nothing of it happened).

        A message that changed between its reading and its update (routed meanwhile) is read again; one
        that keeps changing raises ``Unavailable``: the caller's transaction must not commit half of it."""
        report = Report()
        writes = _Writes()
        pending = list(ids)
        for _ in range(WITHDRAW_ATTEMPTS):
            targets, rows = self._read(session, pending)
            pending = []
            for row in rows:
                if row.expired_at is not None:
                    continue
                done = self._expire(session, row, targets.get(row.id, []), now, writes, why=why)
                if done is None:
                    pending.append(row.id)
                else:
                    report.expired += 1
                    report.notices += done
            if not pending:
                break
        else:
            raise Unavailable("a message to withdraw kept changing meanwhile; try again in a moment")
        self._write(session, writes)
        return report

    def _write(self, session: Session, writes: _Writes) -> None:
        connection = session.connection()
        for model, values in ((OutboxEntry, writes.outbox), (EventRow, writes.events), (AuditEntry, writes.audit)):
            if values:
                connection.execute(insert(_table(model)), values)
        if writes.outbox or writes.events:
            notify(session, OUTBOX, EVENTS)  # notices for the relay, `expired` for the forwarder

    def _read(self, session: Session, ids: Sequence[str]) -> tuple[dict[str, list[_Target]], list[Any]]:
        """The deliveries (locked first on PostgreSQL) and the facts of the messages ``ids``."""
        deliveries_query = (
            select(
                _deliveries.c.id,
                _deliveries.c.message_id,
                _deliveries.c.provider,
                _deliveries.c.state,
                _deliveries.c.priority,
                _deliveries.c.not_before,
            )
            .where(_deliveries.c.message_id.in_(sorted(ids)))
            .order_by(_deliveries.c.id)
        )
        if session.get_bind().dialect.name == "postgresql":  # as the acknowledgement intake: deliveries first
            deliveries_query = deliveries_query.with_for_update()
        targets: dict[str, list[_Target]] = {}
        for found in session.execute(deliveries_query):
            targets.setdefault(found.message_id, []).append(
                _Target(found.id, found.provider, found.state, found.priority, found.not_before)
            )
        # Read again under the deliveries' locks: an acknowledgement may have moved them meanwhile.
        rows = list(
            session.execute(select(*_FACT_COLUMNS).where(_messages.c.id.in_(sorted(ids))).order_by(_messages.c.id))
        )
        return targets, rows

    def _notify(
        self,
        session: Session,
        row: Any,
        action: Action,
        timing: Timing,
        deliveries: list[_Target],
        now: datetime,
        writes: _Writes,
    ) -> int | None:
        """A warning or a reminder: mark the message (guarded: once), a notice per provider, an audit entry."""
        m = _messages.c
        guard = and_(m.id == row.id, m.state.in_(UNREAD), m.warned_at.is_(None), m.expired_at.is_(None))
        number = None
        if action is Action.WARN:
            marks: dict[str, Any] = {"warned_at": now}
        else:
            facts = Facts(id=row.id, state=row.state, accepted_at=row.accepted_at, expires_at=row.expires_at)
            period = reminder_period(facts, timing.reminder_days, now)
            assert period is not None  # ``due`` said a reminder is due
            number, began = period
            guard = and_(guard, or_(m.reminded_at.is_(None), m.reminded_at < began))
            marks = {"reminded_at": now}
        if session.connection().execute(update(_messages).where(guard).values(**marks)).rowcount != 1:
            return None  # done meanwhile (another scheduler), or the message was opened
        told = [
            d for d in deliveries if d.state in (DeliveryState.PENDING, DeliveryState.DELIVERED) and not _held(d, now)
        ]
        for delivery in told:
            writes.outbox.append(self._notice(row, delivery, action, now, number))
        detail: dict[str, Any] = {
            "institution": row.institution_id,
            "message_type": row.message_type,
            "notice": NOTICE_OF[action].value,
            "providers": [d.provider for d in told],
            "expires_at": row.expires_at.isoformat(),
        }
        if number is not None:
            detail["reminder"] = number
        writes.audit.append(self._audit(row.id, action, detail, now))
        return len(told)

    def _expire(
        self,
        session: Session,
        row: Any,
        deliveries: list[_Target],
        now: datetime,
        writes: _Writes,
        *,
        why: dict[str, Any] | None = None,
    ) -> int | None:
        """Expiry: remove the content, expire what never arrived, tell the providers and the sender.

        ``why``: the reason in the event and the audit entry (default: retention, at ``expires_at``)."""
        after = [advance_delivery(d.state, Event.EXPIRED).state.value for d in deliveries]
        new_state = message_state(row.state, after).value if deliveries else None
        if new_state is None:  # never routed (or undeliverable): no delivery to decide by
            new_state = row.state if row.state in ("undeliverable", "rejected") else "expired"
        m = _messages.c
        moved = (
            session.connection()
            .execute(
                update(_messages)
                .where(m.id == row.id, m.expired_at.is_(None), m.state == row.state)
                .values(envelope=None, expired_at=now, state=new_state)
            )
            .rowcount
        )
        if moved != 1:
            return None  # expired by another scheduler, or routed meanwhile: a later round sees it again
        ended = [d.id for d, state in zip(deliveries, after, strict=True) if state != d.state]
        if ended:
            session.execute(
                update(_deliveries)
                .where(_deliveries.c.id.in_(ended), _deliveries.c.state.in_(("pending", "failed")))
                .values(state=DeliveryState.EXPIRED.value, updated_at=now)
            )
        told = [d for d in deliveries if d.state != DeliveryState.EXPIRED and not _held(d, now)]
        for delivery in told:
            writes.outbox.append(self._notice(row, delivery, Action.EXPIRE, now))
        if why is None:
            why = {"reason": "retention", "expires_at": row.expires_at.isoformat()}
        why = {**why, "content_removed": True}
        if row.state != "expired":  # routing found it expired already and told the sender then
            writes.events.append(
                {
                    "message_id": row.id,
                    "kind": Event.EXPIRED.value,
                    "occurred_at": now,
                    "source": "hub",
                    "provider": None,
                    "detail": json.dumps({**why, "deliveries_expired": ended}),
                }
            )
        detail = {
            "institution": row.institution_id,
            "message_type": row.message_type,
            **why,
            "state": new_state,
            "providers": [d.provider for d in told],
            "deliveries_expired": ended,
        }
        writes.audit.append(self._audit(row.id, Action.EXPIRE, detail, now))
        return len(told)

    def _notice(
        self, row: Any, delivery: _Target, action: Action, now: datetime, number: int | None = None
    ) -> dict[str, Any]:
        event = NOTICE_OF[action]
        notice = Acknowledgement(
            ack_id=notice_id(delivery.id, action, number),
            event=event,
            occurred_at=now,
            issuer=HUB,
            hub_message_id=row.id,
            provider=delivery.provider,
            delivery_id=delivery.id,
            envelope_digest=bytes.fromhex(row.envelope_sha256),
        )
        headers = {
            "notice": event.value,
            "hub-message-id": row.id,
            "delivery-id": delivery.id,
            "content_type": NOTICE_CONTENT_TYPE,
        }
        if row.expires_at is not None:
            headers["expires-at"] = row.expires_at.isoformat()
        return {
            "message_id": row.id,
            "exchange": DELIVER.name,
            "routing_key": deliver_key(delivery.provider),
            "body": signed_acknowledgement(self.signer, notice),
            "headers": json.dumps(headers),
            "priority": delivery.priority,  # behind the delivery itself, in the provider's priority queue
            "created_at": now,
            "sent_at": None,
            "not_before": None,
        }

    def _audit(self, message_id: str, action: Action, detail: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "at": now,
            "actor": ACTOR,
            "action": AUDIT_ACTION[action],
            "message_id": message_id,
            "detail": json.dumps(detail),  # no personal data: ids, types, times, providers
        }

    # -- the cursor ---------------------------------------------------------------------------

    def _since(self) -> datetime | None:
        with self.sessions() as session:
            position = session.scalar(select(Cursor.position).where(Cursor.name == CURSOR))
        return None if not position else datetime.fromtimestamp(position, UTC)

    def _advance(self, now: datetime) -> None:
        """Remember that everything due up to ``now`` was done (the cursor never moves back)."""
        position = int(now.timestamp())
        with self.sessions() as session:
            moved = (
                session.connection()
                .execute(
                    update(Cursor)
                    .where(Cursor.name == CURSOR, Cursor.position < position)
                    .values(position=position, updated_at=now)
                )
                .rowcount
            )
            if not moved and session.scalar(select(Cursor.position).where(Cursor.name == CURSOR)) is None:
                try:
                    with session.begin_nested():
                        session.execute(insert(Cursor).values(name=CURSOR, position=position, updated_at=now))
                except IntegrityError:  # another scheduler created it meanwhile
                    pass
            session.commit()


def _held(delivery: _Target, now: datetime) -> bool:
    """A pending delivery the relay holds until later (maintenance, effective date): not published yet."""
    return delivery.state == DeliveryState.PENDING and delivery.not_before is not None and delivery.not_before > now


__all__ = [
    "Action",
    "Facts",
    "Report",
    "RetentionScheduler",
    "Timing",
    "due",
    "expiry_for",
    "notice_id",
    "reminder_period",
    "reminder_ranges",
]
