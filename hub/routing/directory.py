"""The recipient directory: who has activated digital post, exclusively or not, and reads with which providers.

Providers keep it up to date with timestamped changes (``POST /v1/providers/{id}/subscriptions``,
or the same over AMQP on ``hub.subscriptions``: ``hub.routing.subscriptions_amqp``; both parse with
``parse_change`` and call ``Directory.apply``);
operators import it from CSV (``hub recipients import``). The routing stage reads it per message
with ``Directory.get`` / ``get_many`` (one query each), as ``hub.routing.recipients.Recipient`` values.

Ordering: changes may arrive late and out of order. Every field is "last writer wins" by the
change's own ``at`` time, never by arrival, so applying a set of changes in any order gives the
same record, and applying one twice changes nothing:

- consent: ``consent_at`` is the latest activation; ``withdrawn_at`` the latest withdrawal, kept only
  while it is not older than ``consent_at`` (a re-activation clears it; an older withdrawal arriving
  late is ignored). At equal times the withdrawal wins (no digital post without certain consent).
- ``exclusive`` and ``language`` (set by an activation that carries them) each keep the time of the
  change that set them (``exclusive_at``, ``language_at``): an older activation cannot undo them. At
  equal times the smaller value wins (``False`` before ``True``: paper rather than none).
- providers: per (recipient, provider), the latest link or unlink wins (at equal times the unlink):
  ``linked_at`` is set when linked, ``unlinked_at`` when unlinked. An unlink keeps its row (its time),
  so that an older link arriving late does not bring the provider back.

A CSV import is an operator's snapshot: it replaces what the directory knows of each imported
recipient (its provider links too). Its consent, withdrawal and last connection times are the
file's; ``exclusive``, ``language`` and the provider links take the moment of the import
(``as_of``), so a provider change older than the import does not undo it.

National numbers never appear in clear in what this module reports (``mask``).
"""

from __future__ import annotations

import csv
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Table, and_, bindparam, delete, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from hub.envelope.identifiers import is_valid_cbe, is_valid_ssin
from hub.errors import ErrorCode, Rejected
from hub.routing.recipients import Recipient, RecipientKind
from hub.store.db import unavailable_on_outage
from hub.store.models import RecipientProvider, RecipientRecord

Op = Literal["activate", "withdraw", "link", "unlink"]
OPS: tuple[Op, ...] = ("activate", "withdraw", "link", "unlink")
LANGUAGES = ("fr", "nl", "de", "en")
CSV_COLUMNS = ("kind", "id", "consent_at", "withdrawn_at", "exclusive", "language", "last_connection", "providers")
FUTURE_SKEW = timedelta(minutes=5)
"""How far in the future a change's time may be (clocks differ); beyond, it is refused: a record
stamped in the future would ignore every true change until then."""
PROVIDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A provider id as ``providers.yaml`` allows it (it names a queue)."""
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")
_NUMBERS = re.compile(r"\d(?:[./-]?\d){8,}")
"""Nine digits or more, maybe written with separators: could be a national number; never echoed."""

Key = tuple[RecipientKind, str]
Clock = Callable[[], datetime]
_recipients: Table = RecipientRecord.__table__  # type: ignore[assignment]
_links: Table = RecipientProvider.__table__  # type: ignore[assignment]


def utcnow() -> datetime:
    return datetime.now(UTC)


def mask(value: str) -> str:
    """``85073003328`` -> ``85*******28``: the first two and last two characters, no more."""
    return "*" * len(value) if len(value) <= 4 else value[:2] + "*" * (len(value) - 4) + value[-2:]


def shown(value: str, limit: int = 40) -> str:
    """A field's value for an error message: long digit runs masked, cut to ``limit`` characters."""
    safe = _NUMBERS.sub(lambda found: mask(found.group()), value)
    return repr(safe if len(safe) <= limit else safe[:limit] + "...")


# --- values --------------------------------------------------------------------------------


def recipient_key(kind: object, ident: object) -> Key:
    """A valid (kind, id), else ``Rejected`` (SCHEMA_INVALID, SSIN_INVALID or CBE_INVALID), id masked."""
    try:
        recipient_kind = RecipientKind(kind if isinstance(kind, str) else "")
    except ValueError:
        raise Rejected(
            ErrorCode.SCHEMA_INVALID, "kind is 'citizen' (with an SSIN) or 'enterprise' (with a CBE number)"
        ) from None
    if not isinstance(ident, str):
        code = ErrorCode.SSIN_INVALID if recipient_kind is RecipientKind.CITIZEN else ErrorCode.CBE_INVALID
        raise Rejected(code, "id is a string of digits")
    if recipient_kind is RecipientKind.CITIZEN and not is_valid_ssin(ident):
        raise Rejected(
            ErrorCode.SSIN_INVALID,
            f"{mask(ident)} is not a valid SSIN: 11 digits, the last two the check digits of the first nine",
        )
    if recipient_kind is RecipientKind.ENTERPRISE and not is_valid_cbe(ident):
        raise Rejected(
            ErrorCode.CBE_INVALID,
            f"{mask(ident)} is not a valid CBE number: 10 digits starting with 0 or 1, the last two check digits",
        )
    return recipient_kind, ident


def parse_instant(value: str, what: str, *, now: datetime) -> datetime:
    """An ISO 8601 date-time with its zone, not in the future (beyond ``FUTURE_SKEW``), in UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f"{what} {shown(value)} is not an ISO 8601 date-time with its zone (e.g. 2026-11-26T10:00:00+01:00)",
        )
    if moment > now + FUTURE_SKEW:
        raise Rejected(ErrorCode.DATE_INCONSISTENT, f"{what} {moment.isoformat()} is in the future")
    return moment.astimezone(UTC)


def _audit(session: Session, actor: str, changes: Sequence[Change], changed: Sequence[bool], now: datetime) -> None:
    from hub.lifecycle.audit import audit_operator_action  # the trail's writer; late: lifecycle builds on routing

    ids = "\n".join(sorted(f"{c.kind.value}:{c.id}" for c in changes))
    detail = {
        "changes": len(changes),
        "changed": sum(changed),
        "ops": dict(sorted(Counter(str(c.op) for c in changes).items())),
        "ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
    }
    audit_operator_action(session, actor, "directory-changes", detail, now=now)


@dataclass(frozen=True, kw_only=True)
class Change:
    """One provider change, as providers send it (REST today, AMQP later)."""

    op: Op
    kind: RecipientKind
    id: str
    at: datetime
    provider: str
    """The provider reporting it; for ``link``/``unlink`` the provider (un)linked."""
    exclusive: bool | None = None
    """``activate`` only: the recipient chose e-Box exclusively (``None``: not said)."""
    language: str | None = None
    """``activate`` only: the preferred language (``None``: not said)."""

    @property
    def key(self) -> Key:
        return self.kind, self.id


_CHANGE_KEYS = frozenset({"op", "kind", "id", "at", "exclusive", "language", "provider"})


def parse_change(item: object, *, provider: str, now: datetime) -> Change:
    """A change from its JSON form, sent by ``provider``; ``Rejected`` with its code when it is not one.

    ``{"op": "activate"|"withdraw"|"link"|"unlink", "kind": "citizen"|"enterprise", "id": ..., "at": ISO,
    "exclusive"?: bool, "language"?: "fr"|"nl"|"de"|"en", "provider"?: <the sender itself>}``. A provider
    (un)links only itself: a ``provider`` other than the sender is refused NOT_AUTHORISED.
    """
    if not isinstance(item, dict):
        raise Rejected(ErrorCode.SCHEMA_INVALID, 'a change is an object {"op": ..., "kind": ..., "id": ..., "at": ...}')
    unknown = sorted(str(k) for k in item if k not in _CHANGE_KEYS)
    if unknown:
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f"unknown member(s) {shown(', '.join(unknown), 80)}; a change has {', '.join(sorted(_CHANGE_KEYS))}",
        )
    op = item.get("op")
    if op not in OPS:
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"op must be one of {', '.join(OPS)}")
    kind, ident = recipient_key(item.get("kind"), item.get("id"))
    at = item.get("at")
    if not isinstance(at, str):
        raise Rejected(ErrorCode.SCHEMA_INVALID, "at is required: the ISO 8601 date-time of the change, with its zone")
    moment = parse_instant(at, "at", now=now)
    target = item.get("provider", provider)
    if target != provider:
        if op in ("link", "unlink"):
            raise Rejected(ErrorCode.NOT_AUTHORISED, f"provider {provider} may link and unlink itself only")
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"provider may be given for link and unlink only, as {provider}")
    exclusive, language = item.get("exclusive"), item.get("language")
    if op != "activate" and (exclusive is not None or language is not None):
        raise Rejected(ErrorCode.SCHEMA_INVALID, "exclusive and language come with activate only")
    if exclusive is not None and not isinstance(exclusive, bool):
        raise Rejected(ErrorCode.SCHEMA_INVALID, "exclusive is true or false")
    if language is not None and language not in LANGUAGES:
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"language is one of {', '.join(LANGUAGES)}")
    return Change(op=op, kind=kind, id=ident, at=moment, provider=provider, exclusive=exclusive, language=language)


@dataclass(frozen=True, kw_only=True)
class Link:
    linked_at: datetime | None = None
    unlinked_at: datetime | None = None

    @property
    def linked(self) -> bool:
        return self.linked_at is not None and (self.unlinked_at is None or self.linked_at > self.unlinked_at)


@dataclass(frozen=True, kw_only=True)
class Entry:
    """Everything the directory keeps of a recipient: the ``Recipient`` value and the times that order changes."""

    kind: RecipientKind
    id: str
    consent_at: datetime | None = None
    withdrawn_at: datetime | None = None
    exclusive: bool = False
    exclusive_at: datetime | None = None
    language: str | None = None
    language_at: datetime | None = None
    last_connection: datetime | None = None
    links: Mapping[str, Link] = field(default_factory=dict)
    updated_at: datetime | None = field(default=None, compare=False)
    """When the hub last wrote it (not part of the record's value)."""

    @property
    def key(self) -> Key:
        return self.kind, self.id

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(provider for provider, link in self.links.items() if link.linked)

    def recipient(self) -> Recipient:
        return Recipient(
            kind=self.kind,
            id=self.id,
            consent_at=self.consent_at,
            withdrawn_at=self.withdrawn_at,
            exclusive=self.exclusive,
            providers=self.providers,
            language=self.language,
            last_connection=self.last_connection,
        )


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _wins(at: datetime, value: Any, current_at: datetime | None, current: Any) -> bool:
    """Last writer wins by time; at equal times the smaller value (deterministic whatever the order)."""
    return current_at is None or at > current_at or (at == current_at and value < current)


def merge(entry: Entry | None, change: Change) -> Entry:
    """The record after ``change``: a pure function, commutative and idempotent (see the module's doc)."""
    state = entry if entry is not None else Entry(kind=change.kind, id=change.id)
    at = change.at
    if change.op == "activate":
        consent = _later(state.consent_at, at)
        withdrawn = state.withdrawn_at if state.withdrawn_at is not None and state.withdrawn_at >= consent else None
        state = replace(state, consent_at=consent, withdrawn_at=withdrawn)
        if change.exclusive is not None and _wins(at, change.exclusive, state.exclusive_at, state.exclusive):
            state = replace(state, exclusive=change.exclusive, exclusive_at=at)
        if change.language is not None and _wins(at, change.language, state.language_at, state.language or ""):
            state = replace(state, language=change.language, language_at=at)
    elif change.op == "withdraw":
        if state.consent_at is None or at >= state.consent_at:
            state = replace(state, withdrawn_at=_later(state.withdrawn_at, at))
    else:
        # A link is the latest of its links and unlinks (the unlink at equal times): one time, one state.
        link = state.links.get(change.provider, Link())
        latest = link.linked_at if link.linked else link.unlinked_at
        if change.op == "link" and (latest is None or at > latest):
            link = Link(linked_at=at)
        elif change.op == "unlink" and (latest is None or at >= latest):
            link = Link(unlinked_at=at)
        state = replace(state, links={**state.links, change.provider: link})
    return state


# --- the import's values ---------------------------------------------------------------------


@dataclass(frozen=True)
class RowProblem:
    line: int
    code: ErrorCode
    message: str
    """Never holds a national number in clear."""

    def __str__(self) -> str:
        return f"line {self.line}: {self.code.value}: {self.message}"


@dataclass
class ImportReport:
    rows: int = 0
    """Data rows read (the header excluded)."""
    imported: int = 0
    refused: int = 0
    """Rows refused (each with one or more problems)."""
    problems: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Rows read per second."""
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class _Row:
    line: int
    values: dict[str, Any]
    providers: frozenset[str]


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise Rejected(ErrorCode.SCHEMA_INVALID, f"exclusive {shown(value)} is not true or false (or 1/0, yes/no)")


def _csv_row(
    line: int, record: dict[str, str], *, known: Collection[str] | None, now: datetime, as_of: datetime
) -> tuple[_Row | None, list[RowProblem]]:
    problems: list[RowProblem] = []

    def check(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Rejected as refused:
            problems.append(RowProblem(line, refused.code, refused.message))
            return None

    key = check(lambda: recipient_key(record["kind"].strip(), record["id"].strip()))

    def instant(column: str) -> datetime | None:
        value = record[column].strip()
        return check(lambda: parse_instant(value, column, now=now)) if value else None

    consent, withdrawn, last = instant("consent_at"), instant("withdrawn_at"), instant("last_connection")
    exclusive = check(lambda: _boolean(record["exclusive"]))
    language = record["language"].strip().lower() or None
    if language is not None and language not in LANGUAGES:
        problems.append(
            RowProblem(
                line, ErrorCode.SCHEMA_INVALID, f"language {shown(language)} is not one of {', '.join(LANGUAGES)}"
            )
        )
    providers = [p.strip() for p in record["providers"].split("|") if p.strip()]
    for provider in providers:
        if not PROVIDER_ID.fullmatch(provider):
            problems.append(
                RowProblem(line, ErrorCode.SCHEMA_INVALID, f"provider {shown(provider)} is not a provider id")
            )
        elif known is not None and provider not in known:
            problems.append(RowProblem(line, ErrorCode.SCHEMA_INVALID, f"provider {shown(provider)} is not known"))
    if problems or key is None:
        return None, problems
    if withdrawn is not None and consent is not None and withdrawn < consent:
        withdrawn = None  # consent given again since: the same record (see Recipient.digital_at)
    values = {
        "kind": key[0].value,
        "recipient_id": key[1],
        "consent_at": consent,
        "withdrawn_at": withdrawn,
        "exclusive": bool(exclusive),
        "exclusive_at": as_of,
        "language": language,
        "language_at": as_of if language else None,
        "last_connection": last,
        "updated_at": now,
    }
    return _Row(line, values, frozenset(providers)), []


# --- the directory -----------------------------------------------------------------------------


def _insert(session: Session) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT`` (PostgreSQL and SQLite)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise NotImplementedError(f"the recipient directory runs on PostgreSQL or SQLite, not {dialect}")


_LINKED = and_(
    _links.c.linked_at.is_not(None), or_(_links.c.unlinked_at.is_(None), _links.c.linked_at > _links.c.unlinked_at)
)
_RECIPIENT_COLUMNS = (
    _recipients.c.kind,
    _recipients.c.recipient_id,
    _recipients.c.consent_at,
    _recipients.c.withdrawn_at,
    _recipients.c.exclusive,
    _recipients.c.language,
    _recipients.c.last_connection,
)
_CHUNK = 500
"""Ids per ``IN (...)`` (SQLite's and drivers' parameter limits stay far away)."""


def _by_kind(keys: Iterable[Key]) -> dict[RecipientKind, list[str]]:
    grouped: dict[RecipientKind, set[str]] = {}
    for kind, ident in keys:
        grouped.setdefault(RecipientKind(kind), set()).add(ident)
    return {kind: sorted(ids) for kind, ids in grouped.items()}


def _chunks(ids: list[str], size: int = _CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class Directory:
    """The directory over the hub's database (any ``sessionmaker`` of the store)."""

    def __init__(self, sessions: sessionmaker[Session], *, clock: Clock = utcnow) -> None:
        self.sessions = sessions
        self.clock = clock

    # --- reading (the routing stage, the hasAnEbox answer) ---

    def _lookup(self, session: Session, kind: RecipientKind, ids: list[str]) -> dict[Key, Recipient]:
        # One query: the recipient with its linked providers (one row each; NULL when none).
        statement = (
            select(*_RECIPIENT_COLUMNS, _links.c.provider_id)
            .select_from(
                _recipients.outerjoin(
                    _links,
                    and_(
                        _links.c.kind == _recipients.c.kind,
                        _links.c.recipient_id == _recipients.c.recipient_id,
                        _LINKED,
                    ),
                )
            )
            .where(_recipients.c.kind == kind.value)
        )
        statement = statement.where(
            _recipients.c.recipient_id == ids[0] if len(ids) == 1 else _recipients.c.recipient_id.in_(ids)
        )
        found: dict[Key, tuple[Any, set[str]]] = {}
        for row in session.execute(statement):
            _, providers = found.setdefault((kind, row.recipient_id), (row, set()))
            if row.provider_id is not None:
                providers.add(row.provider_id)
        return {
            key: Recipient(
                kind=kind,
                id=row.recipient_id,
                consent_at=row.consent_at,
                withdrawn_at=row.withdrawn_at,
                exclusive=row.exclusive,
                providers=frozenset(providers),
                language=row.language,
                last_connection=row.last_connection,
            )
            for key, (row, providers) in found.items()
        }

    def get(self, kind: RecipientKind | str, ident: str) -> Recipient | None:
        """The recipient, or ``None`` when the directory does not know it (no digital consent)."""
        recipient_kind = RecipientKind(kind)
        with unavailable_on_outage("the recipient directory"), self.sessions() as session:
            return self._lookup(session, recipient_kind, [ident]).get((recipient_kind, ident))

    def get_many(self, keys: Iterable[tuple[RecipientKind | str, str]]) -> dict[Key, Recipient]:
        """The known ones of ``keys`` (absent: unknown); one query per kind and 500 ids."""
        result: dict[Key, Recipient] = {}
        with unavailable_on_outage("the recipient directory"), self.sessions() as session:
            for kind, ids in _by_kind((RecipientKind(k), i) for k, i in keys).items():
                for chunk in _chunks(ids):
                    result.update(self._lookup(session, kind, chunk))
        return result

    def _entries(self, session: Session, keys: Iterable[Key], *, lock: bool = False) -> dict[Key, Entry]:
        entries: dict[Key, Entry] = {}
        links: dict[Key, dict[str, Link]] = {}
        for kind, ids in _by_kind(keys).items():
            for chunk in _chunks(ids):
                rows = select(_recipients).where(
                    _recipients.c.kind == kind.value, _recipients.c.recipient_id.in_(chunk)
                )
                if lock:  # PostgreSQL: concurrent changes of one recipient wait for each other (SQLite: one writer)
                    rows = rows.order_by(_recipients.c.kind, _recipients.c.recipient_id).with_for_update()
                for row in session.execute(rows):
                    entries[(kind, row.recipient_id)] = Entry(
                        kind=kind,
                        id=row.recipient_id,
                        consent_at=row.consent_at,
                        withdrawn_at=row.withdrawn_at,
                        exclusive=row.exclusive,
                        exclusive_at=row.exclusive_at,
                        language=row.language,
                        language_at=row.language_at,
                        last_connection=row.last_connection,
                        updated_at=row.updated_at,
                    )
                link_rows = select(_links).where(_links.c.kind == kind.value, _links.c.recipient_id.in_(chunk))
                for row in session.execute(link_rows):
                    links.setdefault((kind, row.recipient_id), {})[row.provider_id] = Link(
                        linked_at=row.linked_at, unlinked_at=row.unlinked_at
                    )
        return {key: replace(entry, links=links.get(key, {})) for key, entry in entries.items()}

    def show(self, kind: RecipientKind | str, ident: str) -> Entry | None:
        """Everything kept of one recipient (for operators: ``hub recipients show``)."""
        key = (RecipientKind(kind), ident)
        with unavailable_on_outage("the recipient directory"), self.sessions() as session:
            return self._entries(session, [key]).get(key)

    # --- provider changes ---

    def apply(self, changes: Sequence[Change], *, actor: str | None = None) -> list[bool]:
        """Apply valid changes in one transaction (all or none); per change, whether it changed the record.

        A change older than what the record holds changes nothing (``False``), as does a repeat.
        Callers parse and check (``parse_change``, authorisation) first; REST and AMQP alike.
        With ``actor`` (``provider:<id>``), the same transaction writes one audit entry: how many
        changes of each kind it made, and a SHA-256 over the ids (no national number in clear).
        """
        if not changes:
            return []
        now = self.clock()
        keys = sorted({change.key for change in changes})
        with unavailable_on_outage("the recipient directory"), self.sessions.begin() as session:
            insert = _insert(session)
            # Rows first (a write: SQLite takes its lock now, not after reading), then read them locked.
            session.execute(
                insert(_recipients).on_conflict_do_nothing(index_elements=["kind", "recipient_id"]),
                [{"kind": k.value, "recipient_id": i, "exclusive": False, "updated_at": now} for k, i in keys],
            )
            before = self._entries(session, keys, lock=True)
            after = dict(before)
            changed: list[bool] = []
            for change in changes:
                old = after[change.key]
                after[change.key] = new = merge(old, change)
                changed.append(new != old)
            self._write(session, insert, before, after, now)
            if actor is not None:
                _audit(session, actor, changes, changed, now)
        return changed

    def _write(
        self, session: Session, insert: Any, before: dict[Key, Entry], after: dict[Key, Entry], now: datetime
    ) -> None:
        records, links = [], []
        for key, entry in after.items():
            old = before[key]
            if replace(entry, links={}) != replace(old, links={}):
                records.append(
                    {
                        "k": entry.kind.value,
                        "i": entry.id,
                        "consent_at": entry.consent_at,
                        "withdrawn_at": entry.withdrawn_at,
                        "exclusive": entry.exclusive,
                        "exclusive_at": entry.exclusive_at,
                        "language": entry.language,
                        "language_at": entry.language_at,
                        "updated_at": now,
                    }
                )
            elif entry.links != old.links:
                records.append({"k": entry.kind.value, "i": entry.id, "updated_at": now})
            for provider, link in entry.links.items():
                if old.links.get(provider) != link:
                    links.append(
                        {
                            "kind": entry.kind.value,
                            "recipient_id": entry.id,
                            "provider_id": provider,
                            "linked_at": link.linked_at,
                            "unlinked_at": link.unlinked_at,
                        }
                    )
        # executemany UPDATE: the SET clause is the parameters' column names (each group has the same ones).
        statement = update(_recipients).where(
            _recipients.c.kind == bindparam("k"), _recipients.c.recipient_id == bindparam("i")
        )
        for group in ([r for r in records if "consent_at" in r], [r for r in records if "consent_at" not in r]):
            if group:
                session.execute(statement, group)
        if links:
            statement = insert(_links)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["kind", "recipient_id", "provider_id"],
                    set_={"linked_at": statement.excluded.linked_at, "unlinked_at": statement.excluded.unlinked_at},
                ),
                links,
            )

    # --- the operators' import ---

    def import_csv(
        self,
        path: str | Path,
        *,
        known_providers: Collection[str] | None = None,
        batch_size: int = 1000,
        as_of: datetime | None = None,
    ) -> ImportReport:
        """Check every row of a CSV file and upsert the good ones, ``batch_size`` per transaction.

        Columns (a header line names them, in any order): ``kind,id,consent_at,withdrawn_at,exclusive,
        language,last_connection,providers`` (providers separated by ``|``; empty cells: none/false).
        Bad rows are reported with their line and a masked id, and skipped; a bad header imports nothing.
        """
        started = time.perf_counter()
        now = self.clock()
        as_of = as_of or now
        report = ImportReport()
        known = frozenset(known_providers) if known_providers is not None else None
        seen: dict[Key, int] = {}
        batch: list[_Row] = []
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            try:
                header = [name.strip().lower() for name in next(reader)]
            except StopIteration:
                header = []
            except csv.Error as exc:
                report.problems.append(RowProblem(1, ErrorCode.SCHEMA_INVALID, f"the header is not CSV: {exc}"))
                return self._done(report, started)
            missing = [c for c in CSV_COLUMNS if c not in header]
            extra = [c for c in header if c not in CSV_COLUMNS]
            if missing or extra or len(set(header)) != len(header):
                report.problems.append(
                    RowProblem(
                        1,
                        ErrorCode.SCHEMA_INVALID,
                        f"the header must name the columns {','.join(CSV_COLUMNS)} once each"
                        + (f"; missing: {','.join(missing)}" if missing else "")
                        + (f"; unknown: {shown(','.join(extra), 80)}" if extra else ""),
                    )
                )
                return self._done(report, started)
            line = reader.line_num + 1
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    report.rows += 1
                    report.refused += 1
                    report.problems.append(RowProblem(line, ErrorCode.SCHEMA_INVALID, f"not CSV: {exc}"))
                    line = reader.line_num + 1
                    continue
                start, line = line, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue  # blank line
                report.rows += 1
                if len(cells) != len(header):
                    report.refused += 1
                    report.problems.append(
                        RowProblem(
                            start, ErrorCode.SCHEMA_INVALID, f"{len(cells)} fields; the header has {len(header)}"
                        )
                    )
                    continue
                row, problems = _csv_row(
                    start, dict(zip(header, cells, strict=True)), known=known, now=now, as_of=as_of
                )
                if row is not None:
                    key = (RecipientKind(row.values["kind"]), row.values["recipient_id"])
                    if key in seen:
                        row, problems = (
                            None,
                            [RowProblem(start, ErrorCode.SCHEMA_INVALID, f"the same recipient as line {seen[key]}")],
                        )
                    else:
                        seen[key] = start
                if row is None:
                    report.refused += 1
                    report.problems.extend(problems)
                    continue
                batch.append(row)
                if len(batch) >= batch_size:
                    report.imported += self._upsert(batch, as_of)
                    batch = []
        if batch:
            report.imported += self._upsert(batch, as_of)
        if report.imported:
            self.refresh_statistics()
        return self._done(report, started)

    def refresh_statistics(self) -> None:
        """PostgreSQL: ANALYZE the directory's tables after a bulk change.

        Until autovacuum gets to it, the planner believes the tables as small as they were,
        and routing's lookup (recipients joined with their providers) runs as a nested loop over
        every link: 40 ms instead of 2 ms for 100 recipients among 3,000 (``bench/routing.py``).
        """
        with unavailable_on_outage("the recipient directory"), self.sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("ANALYZE recipients, recipient_providers"))
                session.commit()

    @staticmethod
    def _done(report: ImportReport, started: float) -> ImportReport:
        report.seconds = time.perf_counter() - started
        return report

    def _upsert(self, rows: list[_Row], as_of: datetime) -> int:
        with unavailable_on_outage("the recipient directory"), self.sessions.begin() as session:
            insert = _insert(session)
            statement = insert(_recipients)
            columns = [c for c in rows[0].values if c not in ("kind", "recipient_id")]
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["kind", "recipient_id"], set_={c: statement.excluded[c] for c in columns}
                ),
                [row.values for row in rows],
            )
            # The file says which providers each recipient reads with: its links replace the directory's.
            # One DELETE per recipient (executemany): always the primary key's index, whatever the
            # planner believes of a table just filled (an IN list of 500 ids made it scan them all).
            session.execute(
                delete(_links).where(_links.c.kind == bindparam("k"), _links.c.recipient_id == bindparam("i")),
                [{"k": row.values["kind"], "i": row.values["recipient_id"]} for row in rows],
            )
            links = [
                {
                    "kind": row.values["kind"],
                    "recipient_id": row.values["recipient_id"],
                    "provider_id": provider,
                    "linked_at": as_of,
                    "unlinked_at": None,
                }
                for row in rows
                for provider in sorted(row.providers)
            ]
            if links:
                session.execute(insert(_links), links)
        return len(rows)
