"""The tamper-evident audit trail: entries sealed into a hash chain, the chain verified, evidence exported.

Every acceptance, routing decision, acknowledgement, expiry and operator action writes an
``audit`` row (``hub.store.models.AuditEntry``) in the transaction of what it records. Many
transactions write at once and an auto-increment id is handed out at insert, not at commit, so
the chain is made afterwards, like the senders' feed (``hub.outbound.feed``): the sealer
(``seal``) gives the committed entries that have no hash yet, in id order, their place ``seq``
(continuing from the highest), ``prev_hash`` (the hash of entry ``seq - 1``; 64 zeros for the
first) and ``hash`` (``entry_hash``), one sealer at a time (a transaction-scoped advisory lock
on PostgreSQL; on SQLite the sealer takes the write lock first). An entry committed late is
simply sealed later. The database refuses to delete an entry or to change a sealed one
(triggers, migration 0007); ``verify`` walks the chain and names the first entry that does not
hold. What it cannot see: the newest entries removed together with the triggers; keep the head
(``VerifyReport.head_seq`` / ``head_hash``) somewhere else now and then to anchor it.

``entry_hash(prev_hash, fields)`` = SHA-256 (hex) of the ASCII bytes of ``prev_hash`` followed by
the JSON of ``{"action", "actor", "at", "detail", "id", "message_id"}`` with sorted keys, no
spaces (``separators=(",", ":")``) and non-ASCII escaped (``ensure_ascii``); ``at`` is the time
in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, ``detail`` the stored JSON text as it is (a string).

No personal data: details carry ids, counts, codes and digests, never a national number or
content. ``export_bundle`` writes the evidence of one message for a third party: the signed
receipt, the hub's signed acknowledgements (with the proofs of registered mail), its events and
audit entries, the hub's certificate, the envelope's SHA-256 (never the envelope), and how to
check each file; a file that would hold the recipient's number is withheld.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from hub.errors import HubError, Rejected, Unavailable
from hub.outbound.acks import Event, signed_acknowledgement
from hub.outbound.feed import acknowledgement, event_detail, feed_item
from hub.safexml import parse
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.db import one_at_a_time, unavailable_on_outage
from hub.store.models import AuditEntry, Message
from hub.store.models import Event as EventRow

if TYPE_CHECKING:
    from hub.settings import Settings
    from hub.signing.keys import KeyPair

log = logging.getLogger("hub.audit")

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry."""
SEALER_LOCK = 0x6875_6261_7564  # "hubaud": the advisory lock key of the audit sealer (PostgreSQL)
SEAL_BATCH = 10_000
VERIFY_PAGE = 10_000
HASHED_FIELDS = ("id", "at", "actor", "action", "message_id", "detail")
PG_GUARDS = ("audit_no_delete", "audit_no_truncate", "audit_seal_only")
"""The triggers that keep the trail append-only (migration 0007) on PostgreSQL ..."""
SQLITE_GUARDS = ("audit_no_delete", "audit_seal_only")
"""... and on SQLite (no TRUNCATE there)."""

_audit: Table = AuditEntry.__table__  # type: ignore[assignment]
_events: Table = EventRow.__table__  # type: ignore[assignment]


# -- the chain ---------------------------------------------------------------------------------------


def at_text(at: datetime) -> str:
    """How an entry's time is hashed: UTC, microseconds, ``Z``."""
    if at.tzinfo is None:
        raise ValueError("an audit entry's time must be aware (UTC)")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: Mapping[Any, Any]) -> str:
    """The entry's hashed form: JSON of the six fields, sorted keys, no spaces, ASCII only.

    ``fields``: ``id``, ``at`` (a datetime, or already ``at_text``), ``actor``, ``action``,
    ``message_id`` (or None) and ``detail`` (the stored JSON text, hashed as a string).
    """
    at = fields["at"]
    values = {name: fields[name] for name in HASHED_FIELDS}
    values["at"] = at_text(at) if isinstance(at, datetime) else str(at)
    values["id"] = int(values["id"])
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(prev_hash: str, entry_fields: Mapping[Any, Any]) -> str:
    """SHA-256 (hex) over ``prev_hash`` followed by the entry's ``canonical`` form (pure)."""
    return hashlib.sha256((prev_hash + canonical(entry_fields)).encode("ascii")).hexdigest()


def _columns() -> list[Any]:
    return [_audit.c[name] for name in HASHED_FIELDS]


def _lock(session: Session) -> None:
    """One sealer at a time, and the chain's head read after the previous sealer committed."""
    # SQLite: the write lock before reading the head (a deferred transaction reading first
    # could seal from a head another sealer has just moved).
    one_at_a_time(session.connection(), SEALER_LOCK)


def seal(session: Session, *, limit: int = SEAL_BATCH) -> int:
    """Seal up to ``limit`` committed entries that have no hash yet, in id order; how many. The caller commits."""
    connection = session.connection()
    if connection.execute(select(_audit.c.id).where(_audit.c.hash.is_(None)).limit(1)).first() is None:
        return 0  # nothing to do: no lock taken
    _lock(session)
    head = connection.execute(
        select(_audit.c.seq, _audit.c.hash).where(_audit.c.seq.is_not(None)).order_by(_audit.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (int(head.seq), str(head.hash)) if head is not None else (0, GENESIS)
    rows = connection.execute(
        select(*_columns()).where(_audit.c.hash.is_(None)).order_by(_audit.c.id).limit(limit)
    ).all()
    sealed: list[dict[str, Any]] = []
    for row in rows:
        seq += 1
        digest = entry_hash(prev, row._mapping)
        sealed.append({"ident": row.id, "seq": seq, "prev": prev, "digest": digest})
        prev = digest
    if not sealed:
        return 0
    if connection.dialect.name == "postgresql":
        connection.execute(
            text(
                "UPDATE audit SET seq = v.seq, prev_hash = v.prev, hash = v.digest "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), CAST(:prevs AS text[]), "
                "CAST(:digests AS text[])) AS v(ident, seq, prev, digest) "
                "WHERE audit.id = v.ident AND audit.hash IS NULL"
            ),
            {
                "ids": [s["ident"] for s in sealed],
                "seqs": [s["seq"] for s in sealed],
                "prevs": [s["prev"] for s in sealed],
                "digests": [s["digest"] for s in sealed],
            },
        )
    else:
        connection.execute(
            text("UPDATE audit SET seq = :seq, prev_hash = :prev, hash = :digest WHERE id = :ident AND hash IS NULL"),
            sealed,
        )
    return len(sealed)


def seal_all(sessions: sessionmaker[Session], *, limit: int = SEAL_BATCH) -> int:
    """Seal every committed entry, ``limit`` a transaction; how many."""
    total = 0
    while True:
        with sessions.begin() as session:
            count = seal(session, limit=limit)
        total += count
        if count < limit:
            return total


def seal_forever(
    sessions: sessionmaker[Session], stop: threading.Event, *, every: float = 1.0, limit: int = SEAL_BATCH
) -> None:
    """Seal every ``every`` seconds until ``stop`` (``hub run``); an outage is waited out, not raised."""
    while not stop.is_set():
        try:
            with unavailable_on_outage():
                seal_all(sessions, limit=limit)
        except Unavailable as down:
            log.warning("audit sealer: %s", down)
        stop.wait(every)


@dataclass(frozen=True)
class Break:
    """The first entry where the chain does not hold."""

    seq: int
    id: int
    problem: str
    """``gap``, ``prev_hash mismatch`` or ``hash mismatch``."""
    explanation: str

    def __str__(self) -> str:
        return f"entry seq {self.seq} (id {self.id}): {self.problem}: {self.explanation}"


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    """Sealed entries walked."""
    head_seq: int
    head_hash: str
    """The last entry that holds (``GENESIS`` for an empty chain): record it elsewhere to anchor the chain."""
    unsealed: int
    broken: Break | None = None
    missing_guards: tuple[str, ...] = ()
    """Append-only triggers missing or disabled (the chain may still hold; nothing stops a change)."""

    @property
    def intact(self) -> bool:
        return self.broken is None


def _sealed_pages(session: Session, page: int) -> Iterator[Sequence[Any]]:
    columns = [*_columns(), _audit.c.seq, _audit.c.prev_hash, _audit.c.hash]
    after = 0
    while True:
        rows = (
            session.connection()
            .execute(select(*columns).where(_audit.c.seq > after).order_by(_audit.c.seq).limit(page))
            .all()
        )
        if not rows:
            return
        yield rows
        after = rows[-1].seq


def verify(session: Session, *, page: int = VERIFY_PAGE) -> VerifyReport:
    """Walk the chain by ``seq``, ``page`` entries a query; the first broken entry, if any."""
    expected_seq, prev, checked = 1, GENESIS, 0
    broken: Break | None = None
    for rows in _sealed_pages(session, page):
        for row in rows:
            if row.seq != expected_seq:
                missing = f"seq {expected_seq}" + (f" to {row.seq - 1}" if row.seq - 1 > expected_seq else "")
                broken = Break(row.seq, row.id, "gap", f"{missing} missing: entries were removed before this one")
            elif row.prev_hash != prev:
                broken = Break(
                    row.seq,
                    row.id,
                    "prev_hash mismatch",
                    f"prev_hash {row.prev_hash} is not the hash of entry seq {expected_seq - 1} ({prev}): "
                    "this entry or the one before it was altered",
                )
            elif entry_hash(row.prev_hash, row._mapping) != row.hash:
                broken = Break(row.seq, row.id, "hash mismatch", "the entry's content is not what was sealed")
            if broken is not None:
                break
            expected_seq, prev, checked = row.seq + 1, row.hash, checked + 1
        if broken is not None:
            break
    unsealed = (
        session.connection()
        .execute(select(func.count()).select_from(_audit).where(_audit.c.hash.is_(None)))
        .scalar_one()
    )
    return VerifyReport(
        checked=checked,
        head_seq=expected_seq - 1,
        head_hash=prev,
        unsealed=int(unsealed),
        broken=broken,
        missing_guards=missing_guards(session),
    )


def missing_guards(session: Session) -> tuple[str, ...]:
    """The append-only triggers of migration 0007 that are missing or disabled."""
    connection = session.connection()
    expected: tuple[str, ...]
    if connection.dialect.name == "postgresql":
        expected = PG_GUARDS
        found = connection.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST('audit' AS regclass) "
                "AND NOT tgisinternal AND tgenabled <> 'D'"
            )
        ).scalars()
    else:
        expected = SQLITE_GUARDS
        found = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")
        ).scalars()
    present = set(found)
    return tuple(name for name in expected if name not in present)


# -- operator actions --------------------------------------------------------------------------------


def operator_actor() -> str:
    """``operator:`` + the operating-system user running the command."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment nor the password database
        user = f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return ("operator:" + user)[:64]


def audit_operator_action(
    session_or_sessions: Session | sessionmaker[Session],
    actor: str,
    action: str,
    detail: Mapping[str, Any],
    *,
    message_id: str | None = None,
    now: datetime | None = None,
) -> None:
    """Write an operator's action to the trail: in the session's transaction (the caller commits),
    or, given a session factory, in a transaction of its own. ``detail``: counts and ids, no personal data."""
    row = {
        "at": now or datetime.now(UTC),
        "actor": actor[:64],
        "action": action[:32],
        "message_id": message_id,
        "detail": json.dumps(dict(detail), sort_keys=True, default=str),
    }
    if isinstance(session_or_sessions, Session):
        session_or_sessions.connection().execute(insert(_audit), [row])
        return
    with session_or_sessions.begin() as session:
        session.connection().execute(insert(_audit), [row])


def record_operator_action(
    action: str, detail: Mapping[str, Any], *, settings: Settings | None = None, message_id: str | None = None
) -> str | None:
    """Audit an operator command in the hub's database (the settings'); None, or why it was not audited.

    For commands that act elsewhere (the broker) and may run where the database is not: the
    action is done, so not auditing it is reported, not raised.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from hub.errors import ConfigError
    from hub.store.db import make_engine, session_factory

    try:
        if settings is None:
            from hub.settings import load_settings

            settings = load_settings()
    except ConfigError as bad:
        return f"not audited: {bad}"
    if not settings.database_url and not (settings.data_dir / "hub.db").exists():
        return f"not audited: no hub database at {settings.data_dir / 'hub.db'} (hub db upgrade creates it)"
    engine = make_engine(settings.effective_database_url)
    try:
        audit_operator_action(session_factory(engine), operator_actor(), action, detail, message_id=message_id)
    except SQLAlchemyError as failed:
        return f"not audited: the audit trail could not be written ({failed.__class__.__name__})"
    finally:
        engine.dispose()
    return None


# -- the evidence bundle -----------------------------------------------------------------------------


class UnknownMessage(HubError):
    """No message has that id."""


_DIGIT_RUNS = re.compile(r"\d(?:[\d.\- /]*\d)?")


def _leaks(data: bytes, number: str) -> bool:
    """Whether ``data`` holds ``number`` (a national or enterprise number), with or without separators."""
    if not number:
        return False
    body = data.decode("utf-8", "replace")
    return any(number in re.sub(r"\D", "", run.group()) for run in _DIGIT_RUNS.finditer(body))


@dataclass
class Bundle:
    """What ``export_bundle`` wrote (file names in ``out_dir``) and what it left out, with why."""

    out_dir: Path
    files: list[str] = field(default_factory=list)
    acknowledgements: list[str] = field(default_factory=list)
    withheld: dict[str, str] = field(default_factory=dict)


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def _redacted(detail: dict[str, Any]) -> dict[str, Any]:
    """An event's detail for the bundle: a free-text reply is replaced by its SHA-256."""
    reply = detail.get("reply")
    if isinstance(reply, dict) and reply.get("text") is not None:
        text_sha256 = hashlib.sha256(str(reply["text"]).encode()).hexdigest()
        detail = {**detail, "reply": {**{k: v for k, v in reply.items() if k != "text"}, "text_sha256": text_sha256}}
    return detail


def export_bundle(
    sessions: sessionmaker[Session], signer_keys: KeyPair, message_id: str, out_dir: Path | str
) -> Bundle:
    """Write the evidence of ``message_id`` into ``out_dir`` (created); see the module's doc and README.txt."""
    out = Path(out_dir)
    with sessions() as session:
        message = session.get(Message, message_id)
        if message is None:
            raise UnknownMessage(f"no message {message_id!r}")
        events = session.execute(
            select(_events)
            .where(_events.c.message_id == message_id)
            .order_by(_events.c.seq.is_(None), _events.c.seq, _events.c.id)
        ).all()
        entries = session.execute(
            select(_audit)
            .where(_audit.c.message_id == message_id)
            .order_by(_audit.c.seq.is_(None), _audit.c.seq, _audit.c.id)
        ).all()
        head = session.execute(
            select(_audit.c.seq, _audit.c.hash).where(_audit.c.seq.is_not(None)).order_by(_audit.c.seq.desc()).limit(1)
        ).first()
    number = message.recipient_id  # only to make sure it is written nowhere
    bundle = Bundle(out)
    files: dict[str, bytes] = {}
    now = datetime.now(UTC)
    verifier = Verifier(TrustStore([trusted("hub", signer_keys.certificate)]))
    notes: list[str] = []

    files["receipt.xml"] = message.receipt
    try:
        verifier.verify(parse(message.receipt), now=now, parties=["hub"])
    except Rejected:
        notes.append(
            "receipt.xml was not signed with the key of hub.cert.pem (the hub's key was changed since): "
            "check it with the hub certificate of its AcceptedAt date."
        )

    signer = Signer(signer_keys)
    described_events = []
    for n, row in enumerate(events, start=1):
        detail = event_detail(row.detail)
        ack_file = None
        if row.kind not in {e.value for e in Event}:
            why = f"event {row.kind!r} has no acknowledgement"
        elif row.kind == Event.REPLIED.value and isinstance(detail.get("reply"), dict) and detail["reply"].get("text"):
            why = "a free-text reply (it may hold personal data); its SHA-256 is in events.json"
        else:
            why = ""
            item = feed_item(row, message, message_id=message.id, detail=detail)
            ack_file = f"ack-{n:02d}-{row.kind}" + (f"-{row.provider}" if row.provider else "") + ".xml"
            files[ack_file] = signed_acknowledgement(signer, acknowledgement(item))
            bundle.acknowledgements.append(ack_file)
        if why:
            bundle.withheld[f"acknowledgement of event {row.id}"] = why
        described_events.append(
            {
                "event_id": row.id,
                "seq": row.seq,
                "kind": row.kind,
                "occurred_at": row.occurred_at.isoformat(),
                "source": row.source,
                "provider": row.provider,
                "detail": _redacted(detail),
                "acknowledgement": ack_file,
            }
        )
    files["events.json"] = _json(described_events)
    files["audit.json"] = _json(
        {
            "hash": "sha256(prev_hash + canonical JSON of id, at, actor, action, message_id, detail); see README.txt",
            "genesis_prev_hash": GENESIS,
            "chain_head_at_export": {"seq": head.seq, "hash": head.hash} if head is not None else None,
            "entries": [
                {
                    "id": e.id,
                    "at": at_text(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "message_id": e.message_id,
                    "detail": e.detail,
                    "seq": e.seq,
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e in entries
            ],
        }
    )
    files["message.json"] = _json(
        {
            "hub_message_id": message.id,
            "institution_id": message.institution_id,
            "submitter_id": message.submitter_id,
            "application_id": message.application_id,
            "sender_message_id": message.sender_message_id,
            "message_type": message.message_type,
            "recipient_kind": message.recipient_kind,
            "registered": bool(message.registered),
            "priority": message.priority,
            "environment": message.environment,
            "state": message.state,
            "accepted_at": message.accepted_at.isoformat(),
            "expires_at": message.expires_at.isoformat() if message.expires_at else None,
            "expired_at": message.expired_at.isoformat() if message.expired_at else None,
            "envelope_sha256": message.envelope_sha256,
        }
    )
    files["hub.cert.pem"] = signer_keys.certificate.public_bytes(Encoding.PEM)

    for name in list(files):
        if name != "hub.cert.pem" and _leaks(files[name], number):
            del files[name]
            bundle.withheld[name] = "it would hold the recipient's national or enterprise number"
            if name in bundle.acknowledgements:
                bundle.acknowledgements.remove(name)
    files["README.txt"] = _readme(message.id, message.envelope_sha256, bundle, sorted(files), notes).encode()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    (out / "SHA256SUMS").write_text(sums)
    bundle.files = [*sorted(files), "SHA256SUMS"]
    return bundle


def _readme(message_id: str, digest: str, bundle: Bundle, names: list[str], notes: list[str]) -> str:
    lines = [
        f"Evidence of hub message {message_id}",
        "",
        f"Envelope SHA-256 (of the envelope exactly as the hub received it): {digest}",
        "The envelope itself is not included (it holds the recipient and the content); whoever has it",
        "can compare:  sha256sum ENVELOPE.xml",
        "",
        "Files",
        "  receipt.xml     the signed submission receipt the hub returned (EnvelopeDigest = the digest above)",
        "  ack-*.xml       the hub's signed acknowledgements of the message's events, one per event;",
        "                  for registered mail, delivered and opened carry a Proof (digest, provider, time)",
        "  events.json     the message's events (a free-text reply is replaced by its SHA-256)",
        "  audit.json      the message's entries of the hub's audit trail, with seq, prev_hash and hash",
        "  message.json    what the hub keeps of the message (no recipient, no content)",
        "  hub.cert.pem    the certificate of the hub's signing key",
        "  SHA256SUMS      the SHA-256 of every other file:  sha256sum -c SHA256SUMS",
        "",
        "Check the signed documents (each must say OK: signed by ... the hub):",
    ]
    signed = sorted((name for name in names if name.endswith(".xml")), key=lambda name: name != "receipt.xml")
    lines += [f"  hub envelope verify {name} --cert hub.cert.pem" for name in signed]
    lines += [
        "  (it also checks that the certificate is valid now: once it has expired, add --at with a",
        "  moment of its validity, e.g. the receipt's AcceptedAt)",
        "",
        "Check an audit entry: its hash is SHA-256 over the ASCII text prev_hash followed by the JSON of",
        "the entry's id, at, actor, action, message_id and detail (detail as the stored text, a string),",
        'keys sorted, no spaces, non-ASCII escaped. In Python, for an entry e of audit.json["entries"]:',
        "",
        "  import hashlib, json",
        '  fields = {k: e[k] for k in ("id", "at", "actor", "action", "message_id", "detail")}',
        '  body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)',
        '  assert hashlib.sha256((e["prev_hash"] + body).encode("ascii")).hexdigest() == e["hash"]',
        "",
        "Entries of other messages lie between these in the chain; the hub's operator proves the whole",
        "chain with `hub audit verify` (chain_head_at_export in audit.json: the head when exported).",
    ]
    if bundle.withheld or notes:
        lines += ["", "Left out or to note"]
        lines += [f"  {what}: {why}" for what, why in bundle.withheld.items()]
        lines += [f"  {note}" for note in notes]
    return "\n".join(lines) + "\n"
