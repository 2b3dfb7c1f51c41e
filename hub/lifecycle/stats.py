"""Monthly statistics per institution: what the e-Box tells each organisation about its use.

For one calendar month (UTC boundaries) and each institution (``messages.institution_id``, the
sender the recipient sees), counted by SQL aggregation, one query per figure family:

- **messages** (by institution and message type; the institution's totals in the same query on
  PostgreSQL, by ``GROUPING SETS``): the messages *accepted* in the month (``sent``), and of those
  ``delivered`` (a ``delivered`` event from a digital provider), ``opened`` (an ``opened`` event),
  the median time to open (first ``opened`` minus ``accepted_at``), ``replied`` (a ``replied``
  event), ``paper`` (routed with the paper fallback, ``printed``, or delivered by a provider with
  the paper capability), ``undeliverable`` (state ``undeliverable``) and ``expired_unread``
  (expired, by state or retention's ``expired_at``, without ever being opened; neither paper nor
  undeliverable, which retention expires too). A message routed to
  two providers counts once. Later events count with the month of acceptance: figures of a month
  grow as its messages are read.
- **providers** (by institution and provider): the deliveries of those messages, by the state
  each reached, and the median time to open per provider.
- **refusals** (by institution, message type and code): the envelopes refused at intake in the
  month from identified senders (``refusals``, written by ``hub.inbound.acceptance``).

``open rate`` is opened / delivered. The queries run alike on PostgreSQL and SQLite; the median
is ``percentile_cont(0.5)`` on PostgreSQL and computed in Python on SQLite from a second query
(an embedded hub holds few messages). Nothing here writes. On PostgreSQL the three queries share
one read-only snapshot, with ``work_mem`` raised and JIT off for their transaction only
(``bench/stats.py``: about 1.4 s for a month of a million messages' year).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Subquery,
    Table,
    and_,
    case,
    extract,
    false,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)

from hub.store.models import Base, Delivery, Event, Message, Refusal

PAPER_ROUTE = '%"fallback": "paper"%'
"""How a ``routed`` event's detail (``json.dumps`` of ``hub.routing.deliveries.detail``) tells the paper fallback."""
UNKNOWN_TYPE = "(unknown)"
"""The message type of refusals whose type was not read (e.g. a schema-invalid envelope)."""
DELIVERED_STATES = ("delivered", "opened", "replied")
OPENED_STATES = ("opened", "replied")
WORK_MEM = "256MB"
"""PostgreSQL ``work_mem`` for the statistics' transaction: the per-message aggregation stays in memory."""


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# --- the month --------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not (1 <= self.month <= 12 and 1970 <= self.year <= 9999):
            raise ValueError(f"no month {self.year:04d}-{self.month:02d}")

    @classmethod
    def parse(cls, value: str) -> Month:
        """``YYYY-MM`` (e.g. ``2026-10``); ``ValueError`` otherwise."""
        year, dash, month = value.strip().partition("-")
        if not (dash and len(year) == 4 and len(month) == 2 and year.isdigit() and month.isdigit()):
            raise ValueError(f"{value!r} is not a month: write YYYY-MM, e.g. 2026-10")
        return cls(int(year), int(month))

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    def previous(self) -> Month:
        return Month(self.year, self.month - 1) if self.month > 1 else Month(self.year - 1, 12)

    def next(self) -> Month:
        return Month(self.year, self.month + 1) if self.month < 12 else Month(self.year + 1, 1)

    @property
    def start(self) -> datetime:
        """The first instant of the month, UTC (included)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month, UTC (excluded)."""
        return self.next().start

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


# --- the figures ------------------------------------------------------------------------------


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Figures:
    """The figures of a set of messages (an institution's, or one message type's)."""

    sent: int = 0
    refused: int = 0
    delivered: int = 0
    opened: int = 0
    replied: int = 0
    paper: int = 0
    undeliverable: int = 0
    expired_unread: int = 0
    median_open_seconds: float | None = None
    """Median of (first opened - accepted) over the opened messages; None when none was opened."""

    @property
    def open_rate(self) -> float | None:
        """opened / delivered; None when nothing was delivered."""
        return _rate(self.opened, self.delivered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "refused": self.refused,
            "delivered": self.delivered,
            "opened": self.opened,
            "open_rate": self.open_rate,
            "median_open_seconds": self.median_open_seconds,
            "replied": self.replied,
            "paper": self.paper,
            "undeliverable": self.undeliverable,
            "expired_unread": self.expired_unread,
        }


@dataclass(frozen=True)
class ProviderFigures:
    """The deliveries of an institution's messages to one provider, by the state each reached."""

    deliveries: int = 0
    delivered: int = 0
    """Reached ``delivered`` (or ``opened``, ``replied``)."""
    opened: int = 0
    replied: int = 0
    printed: int = 0
    failed: int = 0
    median_open_seconds: float | None = None

    @property
    def open_rate(self) -> float | None:
        return _rate(self.opened, self.delivered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "delivered": self.delivered,
            "opened": self.opened,
            "open_rate": self.open_rate,
            "median_open_seconds": self.median_open_seconds,
            "replied": self.replied,
            "printed": self.printed,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class InstitutionStats:
    institution_id: str
    month: Month
    totals: Figures
    by_type: Mapping[str, Figures] = field(default_factory=dict)
    """Per message type, sorted by name; refused types never accepted appear with ``sent`` 0."""
    by_provider: Mapping[str, ProviderFigures] = field(default_factory=dict)
    refusals_by_code: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "institution": self.institution_id,
            "month": str(self.month),
            "totals": self.totals.as_dict(),
            "by_message_type": {name: figures.as_dict() for name, figures in self.by_type.items()},
            "by_provider": {name: figures.as_dict() for name, figures in self.by_provider.items()},
            "refusals_by_code": dict(self.refusals_by_code),
        }


@dataclass(frozen=True)
class MonthlyStats:
    month: Month
    institutions: tuple[InstitutionStats, ...]
    """Every institution with a message accepted or an envelope refused in the month, by id."""

    def institution(self, institution_id: str) -> InstitutionStats | None:
        return next((i for i in self.institutions if i.institution_id == institution_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {"month": str(self.month), "institutions": [i.as_dict() for i in self.institutions]}


# --- the queries ------------------------------------------------------------------------------


def _postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _seconds(connection: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds (NULL when either is NULL)."""
    if _postgres(connection):
        return extract("epoch", later - earlier)
    # SQLite keeps times as ISO text: julianday reads it (to the millisecond).
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _in_month(month: Month, sender: str | None) -> ColumnElement[bool]:
    m = _table(Message)
    condition = and_(m.c.accepted_at >= month.start, m.c.accepted_at < month.end)
    return and_(condition, m.c.institution_id == sender) if sender is not None else condition


def _per_message(month: Month, sender: str | None, paper_providers: Collection[str]) -> Subquery:
    """One row per message of the month that has an event past ``accepted``: what happened to it."""
    e, m = _table(Event), _table(Message)
    paper = sorted(paper_providers)
    by_paper = e.c.provider.in_(paper) if paper else false()
    on_paper = or_(
        e.c.kind == "printed",
        and_(e.c.kind == "routed", e.c.detail.like(PAPER_ROUTE)),
        and_(e.c.kind == "delivered", by_paper),
    )
    digital = (
        and_(e.c.kind == "delivered", or_(e.c.provider.is_(None), ~by_paper)) if paper else e.c.kind == "delivered"
    )
    return (
        select(
            e.c.message_id,
            func.max(case((digital, 1), else_=0)).label("delivered"),
            func.min(case((e.c.kind == "opened", e.c.occurred_at))).label("first_opened"),
            func.max(case((e.c.kind == "replied", 1), else_=0)).label("replied"),
            func.max(case((on_paper, 1), else_=0)).label("paper"),
        )
        .select_from(e.join(m, m.c.id == e.c.message_id))
        .where(_in_month(month, sender), e.c.kind.in_(("routed", "delivered", "opened", "replied", "printed")))
        .group_by(e.c.message_id)
        .subquery("per_message")
    )


def message_figures(
    connection: Connection, month: Month, *, sender: str | None = None, paper_providers: Collection[str] = ()
) -> dict[str, tuple[Figures, dict[str, Figures]]]:
    """``{institution: (totals, {message type: figures})}`` for the messages accepted in ``month``.

    ``refused`` is 0 here (see ``refusal_figures``). One query on PostgreSQL (the totals by
    ``GROUPING SETS``); on SQLite the counts are one query and the medians another, in Python.
    """
    m = _table(Message)
    per = _per_message(month, sender, paper_providers)
    seconds = _seconds(connection, per.c.first_opened, m.c.accepted_at)
    expired = or_(m.c.state == "expired", m.c.expired_at.is_not(None))
    # Expired unread: it went out digitally and nobody opened it before its time ran out (a message
    # that never went out, or went on paper, is counted as such, also once retention expired it).
    unread = and_(
        expired,
        per.c.first_opened.is_(None),
        func.coalesce(per.c.paper, 0) == 0,
        m.c.state.not_in(("undeliverable", "rejected")),
    )
    postgres = _postgres(connection)
    columns: list[Any] = [
        m.c.institution_id,
        m.c.message_type,
        func.count().label("sent"),
        func.coalesce(func.sum(per.c.delivered), 0).label("delivered"),
        func.count(per.c.first_opened).label("opened"),
        func.coalesce(func.sum(per.c.replied), 0).label("replied"),
        func.coalesce(func.sum(per.c.paper), 0).label("paper"),
        func.sum(case((m.c.state == "undeliverable", 1), else_=0)).label("undeliverable"),
        func.sum(case((unread, 1), else_=0)).label("expired_unread"),
    ]
    query: Select[Any]
    if postgres:
        columns += [
            func.percentile_cont(0.5).within_group(seconds).label("median"),
            func.grouping(m.c.message_type).label("total"),
        ]
        query = select(*columns).group_by(
            func.grouping_sets(tuple_(m.c.institution_id, m.c.message_type), tuple_(m.c.institution_id))
        )
    else:
        columns += [literal(None).label("median"), literal(0).label("total")]
        query = select(*columns).group_by(m.c.institution_id, m.c.message_type)
    query = query.select_from(m.outerjoin(per, per.c.message_id == m.c.id)).where(_in_month(month, sender))

    out: dict[str, tuple[Figures, dict[str, Figures]]] = {}
    totals: dict[str, Figures] = {}
    for row in connection.execute(query):
        figures = Figures(
            sent=int(row.sent),
            delivered=int(row.delivered),
            opened=int(row.opened),
            replied=int(row.replied),
            paper=int(row.paper),
            undeliverable=int(row.undeliverable),
            expired_unread=int(row.expired_unread),
            median_open_seconds=_float(row.median),
        )
        if row.total:
            totals[row.institution_id] = figures
        else:
            out.setdefault(row.institution_id, (Figures(), {}))[1][row.message_type] = figures
    if not postgres:
        medians = _python_medians(connection, month, sender, paper_providers)
        for institution, (_, types) in out.items():
            for name in types:
                types[name] = replace(types[name], median_open_seconds=medians.get((institution, name)))
            totals[institution] = replace(_sum(types.values()), median_open_seconds=medians.get((institution, None)))
    return {institution: (totals[institution], types) for institution, (_, types) in out.items()}


def _python_medians(
    connection: Connection, month: Month, sender: str | None, paper_providers: Collection[str]
) -> dict[tuple[str, str | None], float]:
    """SQLite: the medians of time to open per (institution, type) and (institution, None)."""
    m = _table(Message)
    per = _per_message(month, sender, paper_providers)
    seconds = _seconds(connection, per.c.first_opened, m.c.accepted_at).label("seconds")
    query = (
        select(m.c.institution_id, m.c.message_type, seconds)
        .select_from(m.join(per, per.c.message_id == m.c.id))
        .where(_in_month(month, sender), per.c.first_opened.is_not(None))
    )
    samples: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    for institution, message_type, value in connection.execute(query):
        samples[(institution, message_type)].append(float(value))
        samples[(institution, None)].append(float(value))
    return {key: _round(statistics.median(values)) for key, values in samples.items()}


def provider_figures(
    connection: Connection, month: Month, *, sender: str | None = None
) -> dict[str, dict[str, ProviderFigures]]:
    """``{institution: {provider: figures}}`` for the deliveries of the messages accepted in ``month``."""
    d, m, e = _table(Delivery), _table(Message), _table(Event)
    opened = select(e.c.message_id, e.c.provider, e.c.occurred_at).where(e.c.kind == "opened").subquery("opened")
    seconds = _seconds(connection, opened.c.occurred_at, m.c.accepted_at)
    postgres = _postgres(connection)
    median = func.percentile_cont(0.5).within_group(seconds) if postgres else literal(None)
    query = (
        select(
            m.c.institution_id,
            d.c.provider,
            func.count().label("deliveries"),
            func.sum(case((d.c.state.in_(DELIVERED_STATES), 1), else_=0)).label("delivered"),
            func.sum(case((d.c.state.in_(OPENED_STATES), 1), else_=0)).label("opened"),
            func.sum(case((d.c.state == "replied", 1), else_=0)).label("replied"),
            func.sum(case((d.c.state == "printed", 1), else_=0)).label("printed"),
            func.sum(case((d.c.state == "failed", 1), else_=0)).label("failed"),
            median.label("median"),
        )
        .select_from(
            d.join(m, m.c.id == d.c.message_id).outerjoin(
                opened, and_(opened.c.message_id == d.c.message_id, opened.c.provider == d.c.provider)
            )
        )
        .where(_in_month(month, sender))
        .group_by(m.c.institution_id, d.c.provider)
    )
    out: dict[str, dict[str, ProviderFigures]] = defaultdict(dict)
    for row in connection.execute(query):
        out[row.institution_id][row.provider] = ProviderFigures(
            deliveries=int(row.deliveries),
            delivered=int(row.delivered),
            opened=int(row.opened),
            replied=int(row.replied),
            printed=int(row.printed),
            failed=int(row.failed),
            median_open_seconds=_float(row.median),
        )
    if not postgres:
        samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        times = (
            select(m.c.institution_id, d.c.provider, seconds)
            .select_from(
                d.join(m, m.c.id == d.c.message_id).join(
                    opened, and_(opened.c.message_id == d.c.message_id, opened.c.provider == d.c.provider)
                )
            )
            .where(_in_month(month, sender))
        )
        for institution, provider, value in connection.execute(times):
            samples[(institution, provider)].append(float(value))
        for (institution, provider), values in samples.items():
            figures = out[institution][provider]
            out[institution][provider] = replace(figures, median_open_seconds=_round(statistics.median(values)))
    return dict(out)


def refusal_figures(
    connection: Connection, month: Month, *, sender: str | None = None
) -> dict[str, dict[tuple[str, str], int]]:
    """``{institution: {(message type, code): refusals}}`` in ``month`` (``UNKNOWN_TYPE`` when not read)."""
    r = _table(Refusal)
    condition = and_(r.c.at >= month.start, r.c.at < month.end)
    if sender is not None:
        condition = and_(condition, r.c.sender_id == sender)
    query = (
        select(r.c.sender_id, r.c.message_type, r.c.code, func.count().label("refused"))
        .where(condition)
        .group_by(r.c.sender_id, r.c.message_type, r.c.code)
    )
    out: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for row in connection.execute(query):
        out[row.sender_id][(row.message_type or UNKNOWN_TYPE, row.code)] = int(row.refused)
    return dict(out)


# --- together ---------------------------------------------------------------------------------


def monthly_stats(
    bind: Engine | Connection,
    month: Month | str,
    *,
    sender: str | None = None,
    paper_providers: Collection[str] = (),
) -> MonthlyStats:
    """The month's figures per institution (all, or ``sender`` only), in one read-only transaction.

    ``paper_providers``: the ids of the providers with the ``paper`` capability (``providers.yaml``);
    their ``delivered`` counts as paper, not as a digital delivery.
    """
    month = Month.parse(month) if isinstance(month, str) else month
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return monthly_stats(connection, month, sender=sender, paper_providers=paper_providers)
    connection = bind
    fresh = not connection.in_transaction()
    with connection.begin() if fresh else nullcontext():
        if _postgres(connection):
            if fresh:  # the three queries see one snapshot
                connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            connection.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
            connection.execute(text("SET LOCAL jit = off"))  # compiling costs more than it saves on these queries
        messages = message_figures(connection, month, sender=sender, paper_providers=paper_providers)
        providers = provider_figures(connection, month, sender=sender)
        refusals = refusal_figures(connection, month, sender=sender)
    institutions = []
    for institution in sorted(set(messages) | set(refusals)):
        totals, types = messages.get(institution, (Figures(), {}))
        refused = refusals.get(institution, {})
        by_code: dict[str, int] = defaultdict(int)
        by_type_refused: dict[str, int] = defaultdict(int)
        for (message_type, code), count in refused.items():
            by_code[code] += count
            by_type_refused[message_type] += count
        by_type = {
            name: replace(types.get(name, Figures()), refused=by_type_refused.get(name, 0))
            for name in sorted(set(types) | set(by_type_refused))
        }
        institutions.append(
            InstitutionStats(
                institution_id=institution,
                month=month,
                totals=replace(totals, refused=sum(by_code.values())),
                by_type=by_type,
                by_provider=dict(sorted(providers.get(institution, {}).items())),
                refusals_by_code=dict(sorted(by_code.items())),
            )
        )
    return MonthlyStats(month, tuple(institutions))


def _sum(figures: Iterable[Figures]) -> Figures:
    total = Figures()
    for f in figures:
        total = Figures(
            sent=total.sent + f.sent,
            refused=total.refused + f.refused,
            delivered=total.delivered + f.delivered,
            opened=total.opened + f.opened,
            replied=total.replied + f.replied,
            paper=total.paper + f.paper,
            undeliverable=total.undeliverable + f.undeliverable,
            expired_unread=total.expired_unread + f.expired_unread,
        )
    return total


def _round(value: float) -> float:
    return round(value, 3)


def _float(value: object) -> float | None:
    return None if value is None else _round(float(cast(float, value)))
