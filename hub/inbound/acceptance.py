"""Acceptance: the one pipeline behind every door.

open (parse, verify, validate) -> authorise -> idempotency -> one transaction
(message row + ``accepted`` event + audit entry + outbox row) -> the signed receipt.

A receipt is returned only after the transaction committed: nothing the hub said
"accepted" can be lost. A repeat of the same envelope (same sender, same sender message
id, same bytes) returns the original receipt; the same id with other bytes is refused
``DUPLICATE_MESSAGE_ID``.

Doors whose senders authenticate otherwise than by signing the envelope (the e-Box compatibility
doors: a WS-Security signature over a SOAP request, a JWT signed with the sender's certificate)
hand the hub the message they mapped, with the registered certificate that authenticated it:
``Intake.submit_on_behalf`` writes the envelope from that model, signs it with the hub's key
(the hub vouches for the mapping; providers receive that envelope), and runs it through the same
checks (schema, rules, authorisation) and the same transaction as any other. The receipt quotes
the digest the door computed of the request as received. ``Intake.submit_on_behalf_all`` does so for
the several messages one request maps to (one per recipient): all checked, then all stored in one
transaction, or none; a repeat must repeat them all.

A refusal of an envelope whose sender the hub could identify (its signature verified against
a registered sender, or the TLS client certificate named the party) is counted for the
monthly statistics: one ``refusals`` row (sender, submitter, message type, code, door) and
one audit entry (``hub.inbound`` ``refused``: code, door, message type; no content, no
recipient), in a short transaction of their own. Unidentified, forged or garbage input
leaves nothing. A database outage while counting a refusal is logged; the answer stays the
refusal.
"""

from __future__ import annotations

import json
import logging
import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from lxml import etree
from sqlalchemy import Connection, Dialect, Table, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from hub import metrics
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.model import ENVELOPE_NS, TYPES_NS, Envelope, Header
from hub.envelope.rules import expiry_for
from hub.envelope.validation import validate_envelope
from hub.errors import ErrorCode, Rejected
from hub.groupcommit import GroupCommit
from hub.inbound.authorisation import authorise
from hub.inbound.opening import OpenedEnvelope, open_envelope
from hub.inbound.receipts import ReceiptSigner
from hub.inbound.senders import SenderDirectory
from hub.routing.rules import MessageFacts
from hub.safexml import ParseLimits, parse
from hub.signing.signer import Signer
from hub.signing.truststore import TrustedCertificate
from hub.signing.verifier import Verified, Verifier
from hub.store.db import unavailable_on_outage
from hub.store.models import AuditEntry, Base, Event, Message, OutboxEntry, Refusal
from hub.store.wakeup import EVENTS, OUTBOX, notify

log = logging.getLogger("hub.inbound")

ROUTE_EXCHANGE = "hub.route"
ROUTE_KEY = "route"
PRIORITIES = {"low": 0, "normal": 4, "high": 9}


@dataclass(frozen=True)
class Receipt:
    message_id: str
    xml: bytes
    created: bool
    """True when this submission created the message; False for an idempotent repeat."""
    submitter_id: str = ""
    """The organisation that submitted (and signed): where acknowledgements go by default."""


class _Stored(NamedTuple):
    """What an idempotent repeat is answered from: the stored message's key, submitter, digest and receipt."""

    id: str
    institution_id: str
    sender_message_id: str
    submitter_id: str
    envelope_sha256: str
    receipt: bytes


@dataclass(frozen=True)
class _Pending:
    """An envelope that passed every check, waiting to be stored."""

    opened: OpenedEnvelope
    data: bytes
    door: str
    now: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Witness(Verifier):
    """The intake's verifier for one envelope, remembering what it verified (who signed, the tree).

    After a refusal, ``verified`` says whether the sender was identified: set, the signature held.
    """

    def __init__(self, inner: Verifier) -> None:
        super().__init__(inner.trust, backend=inner.backend)
        self.inner = inner
        self.verified: Verified | None = None

    def verify(self, root: etree._Element, *, now: datetime, parties: list[str] | None = None) -> Verified:
        self.verified = self.inner.verify(root, now=now, parties=parties)
        return self.verified


_SENDER = f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}Sender/{{{TYPES_NS}}}"
_MESSAGE_TYPE = f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}MessageType"


class Intake:
    """Accepts envelopes. Thread-safe: one per process, shared by every door."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        directory: SenderDirectory,
        receipt_signer: Signer,
        environment: str = "PROD",
        parse_limits: ParseLimits | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.directory = directory
        self.verifier = Verifier(directory.trust_store())
        self.receipt_signer = receipt_signer
        self.receipts = ReceiptSigner(receipt_signer)
        self.environment = environment
        self.parse_limits = parse_limits or ParseLimits()
        self.clock = clock
        self._group: GroupCommit[_Pending, Receipt] = GroupCommit(lambda batch: self._store(batch))

    # -- the pipeline -----------------------------------------------------------------

    def open(self, data: bytes, now: datetime, *, witness: _Witness | None = None) -> OpenedEnvelope:
        return open_envelope(
            data,
            verifier=witness or self.verifier,
            now=now,
            policy=lambda envelope: authorise(envelope, self.directory, hub_environment=self.environment),
            parse_limits=self.parse_limits,
        )

    @metrics.timed("accept")
    def submit(self, data: bytes, *, door: str, client_party: str | None = None) -> Receipt:
        """Accept one envelope, or raise ``Rejected`` / ``Unavailable``.

        Checks run in the caller's thread; the storing is a group commit (``hub.groupcommit``):
        concurrent requests share one transaction instead of queueing for one each.
        """
        now = self.clock()
        witness = _Witness(self.verifier)
        try:
            opened = self.open(data, now, witness=witness)
            _check_client(client_party, opened)
            receipt = self._group.submit(_Pending(opened, data, door, now))
        except Rejected as refused:
            self._refused(refused, witness.verified, client_party, door=door, now=now)
            raise
        _counted(receipt)
        return receipt

    @metrics.timed("accept")
    def submit_many(
        self, items: Sequence[bytes], *, door: str, client_party: str | None = None
    ) -> list[Receipt | Rejected]:
        """Accept a batch: each envelope gets its own receipt or refusal; one commit for all.

        With ``client_party`` (the TLS client certificate's), each envelope must be signed by it."""
        now = self.clock()
        results: list[Receipt | Rejected | None] = []
        good: list[tuple[int, OpenedEnvelope, bytes]] = []
        refusals: list[tuple[Rejected, Verified | None, str | None]] = []
        for index, data in enumerate(items):
            witness = _Witness(self.verifier)
            try:
                opened = self.open(data, now, witness=witness)
                _check_client(client_party, opened)
                good.append((index, opened, data))
                results.append(None)
            except Rejected as refused:
                results.append(refused)
                refusals.append((refused, witness.verified, client_party))
        # The same sender message id twice in one batch: the second waits for the first's outcome.
        seen: dict[tuple[str, str], int] = {}
        first_pass: list[tuple[int, OpenedEnvelope, bytes]] = []
        repeats: list[tuple[int, OpenedEnvelope, bytes]] = []
        for index, opened, data in good:
            key = _key(opened.envelope)
            (repeats if key in seen else first_pass).append((index, opened, data))
            seen.setdefault(key, index)
        stored = self._store([_Pending(o, d, door, now) for _, o, d in first_pass])
        for (index, _, _), receipt in zip(first_pass, stored, strict=True):
            results[index] = receipt
        for index, opened, data in repeats:
            results[index] = self._store([_Pending(opened, data, door, now)])[0]
        for index, opened, _ in good:
            outcome = results[index]
            if isinstance(outcome, Rejected):  # a sender message id used for another envelope
                refusals.append((outcome, opened.verified, client_party))
        self._record_refusals(refusals, door=door, now=now)
        outcomes = [r for r in results if r is not None]
        _counted_all(outcomes)
        return outcomes

    @metrics.timed("accept")
    def submit_on_behalf(
        self, envelope: Envelope, *, credential: TrustedCertificate, door: str, request_digest: bytes
    ) -> Receipt:
        """Accept a message a compatibility door mapped from a request ``credential`` authenticated.

        ``credential`` is the registered certificate (``senders.yaml``) that signed the request: it
        must be the submitter's (``Header/Sender/OrganizationId``; an integrator sends for an
        institution with ``OnBehalfOf``, as in an envelope) and valid now. ``request_digest`` (the
        SHA-256 of the request as received, as the door defines it) stands for the envelope's in
        the receipt and in idempotency: the same sender message id with another digest is refused
        ``DUPLICATE_MESSAGE_ID``. Raises ``Rejected`` / ``Unavailable`` as ``submit`` does.
        """
        now = self.clock()
        try:
            opened, data = self._open_on_behalf(envelope, credential=credential, request_digest=request_digest, now=now)
            receipt = self._group.submit(_Pending(opened, data, door, now))
        except Rejected as refused:
            self._refused(refused, None, credential.party, door=door, now=now)
            raise
        _counted(receipt)
        return receipt

    def _open_on_behalf(
        self, envelope: Envelope, *, credential: TrustedCertificate, request_digest: bytes, now: datetime
    ) -> tuple[OpenedEnvelope, bytes]:
        """``submit_on_behalf``'s checks of one mapped message: the envelope the hub writes, signs and opens."""
        submitter = envelope.header.sender.organization_id
        if credential.party != submitter:
            raise Rejected(
                ErrorCode.NOT_AUTHORISED,
                f"the request is signed by {credential.party} but names {submitter} as its sender; "
                "sign with the certificate of the organisation that sends.",
            )
        credential.check_valid(now)
        signed = self.receipt_signer.sign(build_envelope(envelope))
        data = to_bytes(signed)
        root = parse(data, limits=self.parse_limits)  # the stored bytes, read back as any envelope is
        checked = validate_envelope(
            root,
            now=now,
            policy=lambda e: authorise(e, self.directory, hub_environment=self.environment),
        )
        opened = OpenedEnvelope(
            envelope=checked,
            verified=Verified(root=root, signer=credential, method=self.receipt_signer.method),
            digest=request_digest,
        )
        return opened, data

    @metrics.timed("accept")
    def submit_on_behalf_all(
        self,
        envelopes: Sequence[Envelope],
        *,
        credential: TrustedCertificate,
        door: str,
        request_digest: bytes,
        then: Callable[[Session, list[Receipt], datetime], None] | None = None,
    ) -> list[Receipt]:
        """Accept the messages one request maps to (one per recipient), all or nothing.

        Each is checked as ``submit_on_behalf`` checks one; a refusal of any refuses the request (its
        message says which: "message N of M", in the request's order) and nothing is stored. Then one
        transaction stores them all, each receipted with ``request_digest``. A repeat must be a repeat of
        every one of them (each sender message id stored with the same digest): the original receipts;
        any other overlap with what is stored is refused ``DUPLICATE_MESSAGE_ID``. The envelopes' sender
        message ids must differ (``ValueError`` otherwise: the door's mistake, not the sender's).

        ``then`` (``session``, the new receipts, the acceptance time) runs in the same transaction, after
        the inserts, only when the messages are new (a door withdrawing what they replace); an
        exception from it undoes everything. Raises ``Rejected`` / ``Unavailable``.
        """
        now = self.clock()
        if not envelopes:
            raise ValueError("no envelope to accept")
        if len({_key(e) for e in envelopes}) != len(envelopes):
            raise ValueError("the envelopes of one request need distinct sender message ids")
        try:
            pending = []
            for position, envelope in enumerate(envelopes, start=1):
                try:
                    opened, data = self._open_on_behalf(
                        envelope, credential=credential, request_digest=request_digest, now=now
                    )
                except Rejected as refused:
                    if len(envelopes) == 1:
                        raise
                    first = refused.violations[0]
                    raise Rejected(
                        first.code,
                        f"message {position} of {len(envelopes)}: {first.message}",
                        path=first.path,
                        line=first.line,
                        more=refused.violations[1:],
                    ) from None
                pending.append(_Pending(opened, data, door, now))
            receipts = self._store_all(pending, then)
        except Rejected as refused:
            self._refused(refused, None, credential.party, door=door, now=now)
            raise
        _counted_all(receipts)
        return receipts

    # -- refusals -------------------------------------------------------------------------

    def _refused(
        self, refused: Rejected, verified: Verified | None, party: str | None, *, door: str, now: datetime
    ) -> None:
        """What a refused submission leaves: a log line, the refusal counter, and (sender identified) its count."""
        log.info("refused", extra={"event": "refused", "door": door, "code": refused.code.value})
        _counted(refused)
        self._record_refusals([(refused, verified, party)], door=door, now=now)

    def record_refusal(self, refused: Rejected, *, party: str, door: str, now: datetime | None = None) -> None:
        """Count a refusal a door decided itself (before the intake saw a message) for ``party``, whom
        the door authenticated: the same ``refusals`` row and audit entry as the intake's own."""
        self._record_refusals([(refused, None, party)], door=door, now=now or self.clock())

    def _record_refusals(
        self, refusals: Sequence[tuple[Rejected, Verified | None, str | None]], *, door: str, now: datetime
    ) -> None:
        """Count the refusals whose sender is known (see the module's doc); never raises."""
        rows, audits = [], []
        for refused, verified, client_party in refusals:
            identified = self._identified(verified, client_party)
            if identified is None:
                continue  # unidentified, forged or garbage: no row
            sender, submitter, message_type = identified
            code, row_door = refused.code.value, door[:16]
            rows.append(
                {
                    "at": now,
                    "sender_id": sender,
                    "submitter_id": submitter,
                    "message_type": message_type,
                    "code": code,
                    "door": row_door,
                }
            )
            audits.append(
                {
                    "at": now,
                    "actor": "hub.inbound",
                    "action": "refused",
                    "message_id": None,
                    # No personal data: no recipient, no content.
                    "detail": json.dumps({"code": code, "door": row_door, "message_type": message_type}),
                }
            )
        if not rows:
            return
        try:
            with self.sessions() as session:
                connection = session.connection()
                connection.execute(insert(_table(Refusal)), rows)
                connection.execute(insert(_table(AuditEntry)), audits)
                session.commit()
        except SQLAlchemyError as exc:
            # Counting is secondary: the sender still gets its refusal, not a 503.
            log.warning(
                "refusal not recorded",
                extra={"event": "refusal_not_recorded", "door": door, "error": exc.__class__.__name__},
            )

    def _identified(self, verified: Verified | None, client_party: str | None) -> tuple[str, str, str | None] | None:
        """(sender, submitter, message type) of a refused envelope, or None when its sender is unknown.

        The sender is the institution the envelope claims (``OnBehalfOf``) when its signer is that
        institution or an integrator mandated by it, else the signer itself; with a TLS client
        certificate of another party (or no verified signature), the certificate's party.
        """
        if verified is not None and client_party in (None, verified.signer.party):
            submitter = verified.signer.party
            behalf = (verified.root.findtext(_SENDER + "OnBehalfOf") or "").strip()
            integrator = self.directory.integrators.get(submitter)
            mandated = integrator is not None and behalf in integrator.mandates
            sender = behalf if mandated and behalf in self.directory.institutions else submitter
            message_type = (verified.root.findtext(_MESSAGE_TYPE) or "").strip()
            return sender[:10], submitter[:10], (message_type or None) if len(message_type) <= 64 else None
        if client_party is not None:
            return client_party[:10], client_party[:10], None
        return None

    # -- storage ------------------------------------------------------------------------

    def _store(self, batch: Sequence[_Pending]) -> list[Receipt | Rejected]:
        """Insert what is new, answer repeats; one transaction for the new ones.

        A single envelope is inserted optimistically (repeats are rare; the unique key
        catches them); a batch first looks its sender message ids up in one query.
        """
        if not batch:
            return []
        with unavailable_on_outage(), self.sessions() as session:
            existing = self._existing(session, [item.opened for item in batch]) if len(batch) > 1 else {}
            answers: list[Receipt | Rejected] = []
            fresh: list[tuple[_Pending, str, bytes]] = []
            for item in batch:
                previous = existing.get(_key(item.opened.envelope))
                if previous is not None:
                    answers.append(_repeat(previous, item.opened))
                    continue
                message_id = str(uuid.uuid4())
                receipt = self._receipt(item.opened, message_id, item.now)
                fresh.append((item, message_id, receipt))
                submitter = item.opened.envelope.header.sender.organization_id
                answers.append(Receipt(message_id, receipt, True, submitter))
            if fresh:
                try:
                    self._insert(session, fresh)
                    session.commit()
                except IntegrityError:
                    # Already stored (a repeat, or a concurrent submission won the race):
                    # answer each envelope on its own, against what is now stored.
                    session.rollback()
                    if len(batch) > 1:
                        return [self._store([item])[0] for item in batch]
                    opened = batch[0].opened
                    previous = self._existing(session, [opened]).get(_key(opened.envelope))
                    if previous is None:
                        raise
                    return [_repeat(previous, opened)]
        _log_accepted(fresh)
        return answers

    def _store_all(
        self, batch: Sequence[_Pending], then: Callable[[Session, list[Receipt], datetime], None] | None
    ) -> list[Receipt]:
        """``submit_on_behalf_all``'s storing: all new in one transaction, or all repeats, or refused."""
        with unavailable_on_outage(), self.sessions() as session:
            opened = [item.opened for item in batch]
            existing = self._existing(session, opened)
            if existing:
                return _all_repeats(batch, existing)
            fresh: list[tuple[_Pending, str, bytes]] = []
            answers: list[Receipt] = []
            for item in batch:
                message_id = str(uuid.uuid4())
                receipt = self._receipt(item.opened, message_id, item.now)
                fresh.append((item, message_id, receipt))
                answers.append(Receipt(message_id, receipt, True, item.opened.envelope.header.sender.organization_id))
            try:
                self._insert(session, fresh)
                if then is not None:
                    then(session, answers, batch[0].now)
                session.commit()
            except IntegrityError:
                # A concurrent submission of (part of) the same request won the race: answer against it.
                session.rollback()
                existing = self._existing(session, opened)
                if not existing:
                    raise
                return _all_repeats(batch, existing)
        _log_accepted(fresh)
        return answers

    def _existing(self, session: Session, opened: list[OpenedEnvelope]) -> dict[tuple[str, str], _Stored]:
        """What is stored under these envelopes' (institution, sender message id), in one query per institution.

        A Core query of the few columns an answer needs: no ORM objects, and no stored envelope read.
        """
        by_institution: dict[str, list[str]] = {}
        for item in opened:
            institution, sender_message_id = _key(item.envelope)
            by_institution.setdefault(institution, []).append(sender_message_id)
        found: dict[tuple[str, str], _Stored] = {}
        connection = session.connection()
        for institution, ids in by_institution.items():
            rows = connection.execute(
                select(*_STORED_COLUMNS).where(
                    _MESSAGES.c.institution_id == institution, _MESSAGES.c.sender_message_id.in_(ids)
                )
            )
            for row in rows:
                stored = _Stored(*row)
                found[(stored.institution_id, stored.sender_message_id)] = stored
        return found

    def _receipt(self, opened: OpenedEnvelope, message_id: str, now: datetime) -> bytes:
        h = opened.envelope.header
        return self.receipts.sign(
            message_id=message_id,
            sender_message_id=h.sender_message_id,
            sender=h.sender,
            accepted_at=now,
            digest=opened.digest,
            environment=h.environment.value,
        )

    def _insert(self, session: Session, fresh: list[tuple[_Pending, str, bytes]]) -> None:
        """The message rows, then their event, audit and outbox rows: four bulk inserts."""
        messages, events, audits, outbox = [], [], [], []
        for item, message_id, receipt in fresh:
            opened, data, door, now = item.opened, item.data, item.door, item.now
            h = opened.envelope.header
            digest = opened.digest.hex()
            messages.append(
                {
                    "id": message_id,
                    "institution_id": h.sender.institution_id,
                    "submitter_id": h.sender.organization_id,
                    "application_id": h.sender.application_id,
                    "sender_message_id": h.sender_message_id,
                    "message_type": h.message_type,
                    "recipient_kind": h.recipient.ebox_type.value,
                    "recipient_id": h.recipient.id,
                    "registered": h.registered,
                    "priority": h.priority.value,
                    "environment": h.environment.value,
                    "state": "accepted",
                    "created_at": h.created,
                    "accepted_at": now,
                    "expires_at": self._expiry(h),
                    "envelope_sha256": digest,
                    "envelope": data,
                    "receipt": receipt,
                    "routing_facts": MessageFacts.of(opened.envelope).to_json(),
                }
            )
            events.append(
                {
                    "message_id": message_id,
                    "kind": "accepted",
                    "occurred_at": now,
                    "source": "hub",
                    "provider": None,
                    "detail": json.dumps({"door": door, "digest": digest}),
                }
            )
            audits.append(
                {
                    "at": now,
                    "actor": h.sender.organization_id,
                    "action": "accepted",
                    "message_id": message_id,
                    # No personal data: no recipient, no content.
                    "detail": json.dumps(
                        {
                            "door": door,
                            "institution": h.sender.institution_id,
                            "sender_message_id": h.sender_message_id,
                            "message_type": h.message_type,
                            "digest": digest,
                        }
                    ),
                }
            )
            outbox.append(
                {
                    "message_id": message_id,
                    "exchange": ROUTE_EXCHANGE,
                    "routing_key": ROUTE_KEY,
                    "body": json.dumps({"message_id": message_id}).encode(),
                    "headers": json.dumps({"hub_message_id": message_id, "priority": h.priority.value}),
                    "priority": PRIORITIES[h.priority.value],
                    "created_at": now,
                    "sent_at": None,
                }
            )
        # Core inserts on the session's connection: the ORM's bulk machinery costs more than the SQL.
        connection = session.connection()
        _insert_rows(connection, _table(Message), messages)
        _insert_rows(connection, _table(Event), events)
        _insert_rows(connection, _table(AuditEntry), audits)
        _insert_rows(connection, _table(OutboxEntry), outbox)
        notify(session, OUTBOX, EVENTS)  # the routing messages for the relay, `accepted` for the forwarder

    def _expiry(self, header: Header) -> datetime | None:
        """Its ``ExpiresAt``, else (unless kept indefinitely) the message type's default retention."""
        institution = self.directory.institutions.get(header.sender.institution_id)
        policy = institution.message_types.get(header.message_type) if institution is not None else None
        return expiry_for(header, policy) if policy is not None else header.expires_at

    # -- status ---------------------------------------------------------------------------

    def status(self, message_id: str, *, requester: str) -> tuple[Message, list[Event]]:
        """A message and its events; a sender sees only its own (else ``MESSAGE_NOT_FOUND``)."""
        with unavailable_on_outage(), self.sessions() as session:
            message = session.get(Message, message_id)
            allowed = message is not None and self.directory.may_read(
                requester, message.institution_id, message.submitter_id
            )
            if not allowed:
                raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, f"no message {message_id} of yours is known to the hub.")
            assert message is not None
            events = list(session.scalars(select(Event).where(Event.message_id == message_id).order_by(Event.id)))
            return message, events


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


_MESSAGES = _table(Message)
_STORED_COLUMNS = [_MESSAGES.c[name] for name in _Stored._fields]


COPY_FROM = 8
"""Rows from which PostgreSQL gets one ``COPY`` instead of an ``INSERT`` per row (see ``_insert_rows``)."""


def _insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table``, in their order, in the current transaction.

    Many rows on PostgreSQL: one ``COPY ... FROM STDIN`` on the session's own connection, which
    costs a fraction of the rows' ``INSERT``s in the hub and in the server. The same values go
    in (the columns' bind processing applied, the database's defaults for the columns left out),
    the same constraints hold, and an error is raised as SQLAlchemy raises it (``IntegrityError``
    for a unique key, ...). Otherwise (SQLite, a few rows, a column with a Python-side default
    left out) an executemany ``INSERT``.
    """
    if not rows:
        return
    columns = list(rows[0])
    dialect = connection.dialect
    if (
        dialect.name != "postgresql"
        or len(rows) < COPY_FROM
        or len(columns) < 2
        or any(c.default is not None and c.key not in rows[0] for c in table.columns)
    ):
        connection.execute(insert(table), rows)
        return
    processors = [(i, p) for i, p in enumerate(_bind_processors(table, columns, dialect)) if p is not None]
    quote = dialect.identifier_preparer
    names = ", ".join(quote.quote(table.c[column].name) for column in columns)
    statement = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
    values_of = operator.itemgetter(*columns)
    raw: Any = connection.connection.driver_connection  # the psycopg connection, in this transaction
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = list(values_of(row))
                for index, process in processors:
                    values[index] = process(values[index])
                copy.write_row(values)
    except dialect.loaded_dbapi.Error as exc:
        invalidated = dialect.is_disconnect(exc, raw, None)
        if invalidated:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=invalidated, dialect=dialect
        ) from exc


def _bind_processors(table: Table, columns: list[str], dialect: Dialect) -> list[Callable[[object], object] | None]:
    return [table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns]


def _counted(result: Receipt | Rejected) -> None:
    """``hub_messages_total{stage="accept"}``: accepted, repeat or refused (with its code)."""
    if isinstance(result, Rejected):
        metrics.refused("accept", result.code.value)
    else:
        metrics.count("accept", "accepted" if result.created else "repeat")


def _counted_all(results: Sequence[Receipt | Rejected]) -> None:
    """``_counted`` for each of ``results``: one increment per outcome instead of one per envelope."""
    created = repeats = 0
    for result in results:
        if isinstance(result, Rejected):
            _counted(result)
        elif result.created:
            created += 1
        else:
            repeats += 1
    metrics.count("accept", "accepted", created)
    metrics.count("accept", "repeat", repeats)


def _log_accepted(fresh: Sequence[tuple[_Pending, str, bytes]]) -> None:
    for item, message_id, _ in fresh:
        log.info(
            "accepted",
            extra={
                "event": "accepted",
                "door": item.door,
                "message_id": message_id,
                "institution": item.opened.envelope.header.sender.institution_id,
            },
        )


def _check_client(client_party: str | None, opened: OpenedEnvelope) -> None:
    """The TLS client certificate, when one was presented, must be the signer's (NOT_AUTHORISED)."""
    if client_party is not None and client_party != opened.verified.signer.party:
        raise Rejected(
            ErrorCode.NOT_AUTHORISED,
            f"the TLS client certificate belongs to {client_party} but the envelope is signed by "
            f"{opened.verified.signer.party}; connect with the certificate of the signer.",
        )


def _key(envelope: Envelope) -> tuple[str, str]:
    return envelope.header.sender.institution_id, envelope.header.sender_message_id


def _repeat(previous: _Stored, opened: OpenedEnvelope) -> Receipt | Rejected:
    if previous.envelope_sha256 != opened.digest.hex():
        return Rejected(
            ErrorCode.DUPLICATE_MESSAGE_ID,
            f"sender message id {previous.sender_message_id!r} was already used for another envelope "
            f"(hub message {previous.id}); give each message its own SenderMessageId.",
            path="/PublishMessage/Header/SenderMessageId",
        )
    return Receipt(previous.id, previous.receipt, False, previous.submitter_id)


def _all_repeats(batch: Sequence[_Pending], existing: Mapping[tuple[str, str], _Stored]) -> list[Receipt]:
    """The original receipts when every envelope of ``batch`` is stored with its digest; else DUPLICATE_MESSAGE_ID."""
    receipts: list[Receipt] = []
    for item in batch:
        previous = existing.get(_key(item.opened.envelope))
        answer = _repeat(previous, item.opened) if previous is not None else None
        if not isinstance(answer, Receipt):
            stored = next(iter(existing.values()))
            raise answer or Rejected(
                ErrorCode.DUPLICATE_MESSAGE_ID,
                f"sender message id {stored.sender_message_id!r} was already used for another request "
                f"(hub message {stored.id}); give each message its own SenderMessageId.",
                path="/PublishMessage/Header/SenderMessageId",
            )
        receipts.append(answer)
    return receipts
