"""The operator console: what the hub is doing, where each message is, and the operator's tools.

/web/console                     dashboard: events of the last minute and hour (accepted, routed, delivered,
                                 opened), the outbox backlog, deliveries by state, RabbitMQ queue depths;
                                 its figures refresh from /web/console/live.json
/web/console/messages            search by hub message id, sender message id, sender (CBE) and state, newest
                                 first (never by national number; recipients' numbers shown masked)
/web/console/messages/{id}       one message: metadata, deliveries, events (its journey)
/web/console/dead-letters        the dead-letter queue (hub.dead); POST .../replay puts one or all back
/web/console/routing             the routing rules (config/routing.yaml) and "try an envelope": POST
                                 .../routing/try shows what ``hub routes explain`` shows for it
/web/console/providers           config/providers.yaml: capabilities, maintenance, queue depth, deliveries
/web/console/stats?month=        monthly statistics per institution as charts (inline SVG) and tables;
                                 /web/console/stats.csv is ``hub stats --format csv``

Every page is for the ``operator`` role. Searches, message views, replays, tries and CSV
downloads are written to the audit trail with counts and ids only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hub.broker.deadletters import AUDITED_IDS, Ambiguous, DeadLetter, DeadLetters, NotFound, NotReplayable
from hub.errors import ConfigError, ErrorCode, Rejected
from hub.inbound.http import HUB_MESSAGE_ID
from hub.lifecycle.stats import Figures, InstitutionStats, Month, MonthlyStats, monthly_stats
from hub.lifecycle.stats_cli import CHART_SERIES, duration, to_csv
from hub.metrics import QueueDepths, hub_queues
from hub.outbound.states import DeliveryState, MessageState
from hub.routing.directory import Directory, mask
from hub.routing.providers import Capability, ProviderCatalog, load_providers
from hub.routing.rules import Decision, Match, RuleSet, check, load_rules
from hub.safexml import ParseLimits
from hub.store.db import unavailable_on_outage
from hub.store.models import Delivery, Event, Message, OutboxEntry
from hub.web.app import Ctx, Web, _run, field_text, page

log = logging.getLogger("hub.web")

OPERATOR = "operator"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_PAGE = 10_000
THROUGHPUT_KINDS = ("accepted", "routed", "delivered", "opened")
EVENT_SLACK = timedelta(minutes=10)
"""How far out of time order events may be written (a late acknowledgement): see ``_first_event_id``."""
DEAD_LETTERS_SHOWN = 200
ENVELOPE_LIMIT = 1024 * 1024
"""Largest envelope "try an envelope" reads, in bytes (UTF-8)."""
DEPTHS = "console.depths"
JOURNEY = ("accepted", "routed", "delivered", "opened", "replied")
HIDDEN_DETAIL = frozenset({"reply"})
"""Event detail members never shown: a recipient's reply is theirs, not the operator's."""
_NUMBERS = re.compile(r"\d(?:[./-]?\d){8,}")
"""Long digit runs (a national number, in any spelling) in event details: masked."""


# -- shared helpers ------------------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _percent(lang: str, rate: float | None) -> str:
    if rate is None:
        return "-"
    text = f"{rate * 100:.1f}"
    return f"{text.replace('.', ',')} %" if lang in ("fr", "nl") else f"{text}%"


def _render(ctx: Ctx, template: str, status: int = 200, **context: Any) -> Response:
    return ctx.render(template, status=status, when=_when, **context)


async def _audit(ctx: Ctx, action: str, detail: Mapping[str, Any], *, message_id: str | None = None) -> None:
    await _run(lambda: ctx.audit(action, detail, message_id=message_id))


def _state_labels(ctx: Ctx) -> dict[str, str]:
    """Message and delivery states (and the events of the same names), in the page's language."""
    names = {*(s.value for s in MessageState), *(s.value for s in DeliveryState)}
    return {name: ctx.t(f"console.state.{name}") for name in sorted(names)}


def _config_file(ctx: Ctx, name: str) -> Path:
    return Path(ctx.runtime.settings.config_dir) / name


@dataclass
class Loaded:
    """A configuration file read for a page: what it holds, or why not (``missing`` or a problem)."""

    path: Path
    value: Any = None
    missing: bool = False
    problem: str | None = None


def _providers(ctx: Ctx) -> Loaded:
    path = _config_file(ctx, "providers.yaml")
    if not path.exists():
        return Loaded(path, missing=True)
    try:
        return Loaded(path, load_providers(path))
    except ConfigError as bad:
        return Loaded(path, problem=str(bad))


def _routing(ctx: Ctx, providers: Loaded) -> Loaded:
    path = _config_file(ctx, "routing.yaml")
    if not path.exists():
        return Loaded(path, missing=True)
    try:
        rules = load_rules(path, providers.value)
    except ConfigError as bad:
        return Loaded(path, problem=str(bad))
    if not rules.rules:
        return Loaded(path, problem=str(ConfigError("no rules", file=str(path))))
    return Loaded(path, rules)


# -- queue depths (RabbitMQ) ---------------------------------------------------------------------------------


def _queue_depths(ctx: Ctx) -> QueueDepths | None:
    """The console's queue-depth reader (cached a few seconds by ``QueueDepths``); None on ``memory://``."""
    url = ctx.runtime.settings.broker_url
    if url.startswith("memory:"):
        return None
    depths: QueueDepths | None = ctx.web.extras.get(DEPTHS)
    if depths is None:
        app, runtime, config_dir = ctx.request.app, ctx.runtime, Path(ctx.runtime.settings.config_dir)

        def names() -> list[str]:
            catalog = getattr(app.state, "providers", None)  # the running hub's catalog, unless the file reads
            with contextlib.suppress(ConfigError):
                catalog = load_providers(config_dir / "providers.yaml")
            directory = runtime.directory
            channels = [(i.id, i.acknowledgements) for i in directory.institutions.values()]
            channels += [(i.id, i.acknowledgements) for i in directory.integrators.values()]
            pushed = [party for party, channel in channels if channel.kind in ("amqp", "webhook")]
            return hub_queues(catalog.ids() if catalog is not None else [], pushed)

        depths = ctx.web.extras[DEPTHS] = QueueDepths(url, names)
    return depths


@dataclass
class Queues:
    """Queue depths as a page shows them: ``kind`` is ``memory`` (not available), ``down`` or ``ok``."""

    kind: str
    depths: dict[str, tuple[int, int]] = field(default_factory=dict)


async def _queues(ctx: Ctx) -> Queues:
    reader = _queue_depths(ctx)
    if reader is None:
        return Queues("memory")
    depths = await _run(reader.depths)
    return Queues("down") if depths is None else Queues("ok", dict(sorted(depths.items())))


# -- the dashboard -------------------------------------------------------------------------------------------


def _first_event_id(session: Session, moment: datetime) -> int | None:
    """About the first event written at or after ``moment``: a binary search on the primary key.

    ``events`` has no index on ``occurred_at``; event ids grow with the time they were written, and
    an event's ``occurred_at`` is about the time it was written (the callers search ``EVENT_SLACK``
    earlier than they need), so a few primary-key lookups find where the last hour starts instead
    of reading the whole table every two seconds. The count then still checks ``occurred_at``.
    """
    low, high = session.execute(select(func.min(Event.id), func.max(Event.id))).one()
    if low is None:
        return None
    while low < high:
        middle = (low + high) // 2
        row = session.execute(
            select(Event.id, Event.occurred_at).where(Event.id >= middle).order_by(Event.id).limit(1)
        ).first()
        if row is None or row.occurred_at >= moment:
            high = middle
        else:
            low = row.id + 1
    return int(low)


def read_figures(ctx: Ctx, now: datetime) -> dict[str, Any]:
    """The dashboard's figures from the database (blocking)."""
    minute, hour = now - timedelta(minutes=1), now - timedelta(hours=1)
    with unavailable_on_outage(), ctx.runtime.sessions() as session:
        throughput = {kind: [0, 0] for kind in THROUGHPUT_KINDS}
        floor = _first_event_id(session, hour - EVENT_SLACK)
        if floor is not None:
            rows = session.execute(
                select(Event.kind, func.sum(case((Event.occurred_at >= minute, 1), else_=0)), func.count())
                .where(Event.id >= floor, Event.occurred_at >= hour, Event.occurred_at <= now)
                .where(Event.kind.in_(THROUGHPUT_KINDS))
                .group_by(Event.kind)
            )
            for kind, last_minute, last_hour in rows:
                throughput[kind] = [int(last_minute or 0), int(last_hour or 0)]
        unsent = OutboxEntry.sent_at.is_(None)
        ready = session.scalar(select(func.count()).where(unsent, OutboxEntry.not_before.is_(None))) or 0
        held = session.scalar(select(func.count()).where(unsent, OutboxEntry.not_before.is_not(None))) or 0
        oldest_id = session.scalar(select(func.min(OutboxEntry.id)).where(unsent, OutboxEntry.not_before.is_(None)))
        oldest = None
        if oldest_id is not None:  # the oldest row waiting, found by its partial index, not by reading them all
            oldest = session.scalar(select(OutboxEntry.created_at).where(OutboxEntry.id == oldest_id))
        deliveries = {
            state: n
            for state, n in session.execute(
                select(Delivery.state, func.count()).group_by(Delivery.state).order_by(Delivery.state)
            )
        }
    return {
        "throughput": {kind: tuple(values) for kind, values in throughput.items()},
        "outbox_ready": int(ready),
        "outbox_held": int(held),
        "outbox_oldest": None if oldest is None else max(0, int((now - oldest).total_seconds())),
        "deliveries": {state: int(n) for state, n in deliveries.items()},
    }


def _live(figures: Mapping[str, Any], queues: Queues, now: datetime) -> dict[str, Any]:
    """The figures by the ``data-key`` each has on the dashboard."""
    flat: dict[str, Any] = {"as_of": _when(now)}
    for kind, (last_minute, last_hour) in figures["throughput"].items():
        flat[f"{kind}.minute"], flat[f"{kind}.hour"] = last_minute, last_hour
    flat["outbox.ready"], flat["outbox.held"] = figures["outbox_ready"], figures["outbox_held"]
    flat["outbox.oldest"] = duration(figures["outbox_oldest"])
    for state, n in figures["deliveries"].items():
        flat[f"deliveries.{state}"] = n
    flat["deliveries.total"] = sum(figures["deliveries"].values())
    for name, (ready, consumers) in queues.depths.items():
        flat[f"queue.{name}.ready"], flat[f"queue.{name}.consumers"] = ready, consumers
    return flat


async def dashboard(ctx: Ctx) -> Response:
    now = ctx.web.clock()
    figures = await _run(read_figures, ctx, now)
    queues = await _queues(ctx)
    return _render(
        ctx,
        "console/dashboard.html",
        figures=figures,
        live=_live(figures, queues, now),
        queues=queues,
        kinds={kind: ctx.t(f"console.dashboard.kind_{kind}") for kind in THROUGHPUT_KINDS},
        states=_state_labels(ctx),
        broker=_broker_shown(ctx.runtime.settings.broker_url),
    )


async def live(ctx: Ctx) -> Response:
    now = ctx.web.clock()
    figures = await _run(read_figures, ctx, now)
    return JSONResponse(_live(figures, await _queues(ctx), now))


def _broker_shown(url: str) -> str:
    """The broker's address without its user and password."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}" if rest else url


# -- messages ------------------------------------------------------------------------------------------------


@dataclass
class Search:
    """The search form: its values (as typed, trimmed) and what is wrong with them, by field."""

    values: dict[str, str]
    errors: dict[str, str]
    page: int = 1
    size: int = PAGE_SIZE

    @property
    def used(self) -> list[str]:
        return [name for name in ("id", "sender_message_id", "sender", "state") if self.values.get(name)]


def _number(text: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(text or default)
    except ValueError:
        return default
    return min(max(value, low), high)


def _search(ctx: Ctx) -> Search:
    params = ctx.request.query_params
    values = {name: (params.get(name) or "").strip()[:80] for name in ("id", "sender_message_id", "sender", "state")}
    errors: dict[str, str] = {}
    if values["id"]:
        values["id"] = values["id"].lower()
        if not HUB_MESSAGE_ID.fullmatch(values["id"]):
            errors["id"] = ctx.t("console.search.bad_id")
    if len(values["sender_message_id"]) > 64:
        errors["sender_message_id"] = ctx.t("console.search.bad_sender_message_id")
    if values["sender"]:
        digits = re.sub(r"[\s./-]", "", values["sender"])
        if len(digits) == 10 and digits.isdigit():
            values["sender"] = digits
        else:
            errors["sender"] = ctx.t("console.search.bad_sender")
    if values["state"] and values["state"] not in {s.value for s in MessageState}:
        errors["state"] = ctx.t("console.search.bad_state")
    return Search(
        values,
        errors,
        page=_number(params.get("page"), 1, 1, MAX_PAGE),
        size=_number(params.get("size"), PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )


LISTED = (
    Message.id,
    Message.institution_id,
    Message.sender_message_id,
    Message.message_type,
    Message.recipient_kind,
    Message.recipient_id,
    Message.state,
    Message.accepted_at,
)


def find_messages(ctx: Ctx, search: Search) -> tuple[list[dict[str, Any]], bool]:
    """One page of the messages that fit, newest first, and whether there are more (blocking)."""
    query = select(*LISTED)
    values = search.values
    if values["id"]:
        query = query.where(Message.id == values["id"])
    if values["sender_message_id"]:
        query = query.where(Message.sender_message_id == values["sender_message_id"])
    if values["sender"]:
        query = query.where(Message.institution_id == values["sender"])
    if values["state"]:
        query = query.where(Message.state == values["state"])
    query = (
        query.order_by(Message.accepted_at.desc(), Message.id.desc())
        .offset((search.page - 1) * search.size)
        .limit(search.size + 1)
    )
    with unavailable_on_outage(), ctx.runtime.sessions() as session:
        rows = session.execute(query).all()
    found = [_listed(ctx, row) for row in rows[: search.size]]
    return found, len(rows) > search.size


def _recipient(kind: str, ident: str) -> str:
    """A recipient as the console shows it: a citizen's national number masked, always."""
    return mask(ident) if kind != "enterprise" else ident


def _listed(ctx: Ctx, row: Any) -> dict[str, Any]:
    institution = ctx.runtime.directory.institutions.get(row.institution_id)
    return {
        "id": row.id,
        "institution": row.institution_id,
        "institution_name": institution.name if institution is not None else None,
        "sender_message_id": row.sender_message_id,
        "message_type": row.message_type,
        "recipient_kind": row.recipient_kind,
        "recipient": _recipient(row.recipient_kind, row.recipient_id),
        "state": row.state,
        "accepted_at": row.accepted_at,
    }


async def messages(ctx: Ctx) -> Response:
    search = _search(ctx)
    found: list[dict[str, Any]] = []
    more = False
    if not search.errors:
        found, more = await _run(find_messages, ctx, search)
        detail: dict[str, Any] = {"by": search.used, "results": len(found), "page": search.page}
        if search.values["sender"]:
            detail["sender"] = search.values["sender"]
        if search.values["state"]:
            detail["state"] = search.values["state"]
        await _audit(ctx, "web-console-search", detail, message_id=search.values["id"] or None)
    query = {name: value for name, value in search.values.items() if value}
    if search.size != PAGE_SIZE:
        query["size"] = str(search.size)
    return _render(
        ctx,
        "console/messages.html",
        status=400 if search.errors else 200,
        search=search,
        found=found,
        more=more,
        query=query,
        message_states=[s.value for s in MessageState],
        states=_state_labels(ctx),
    )


MESSAGE_COLUMNS = (
    *LISTED,
    Message.submitter_id,
    Message.application_id,
    Message.registered,
    Message.priority,
    Message.environment,
    Message.created_at,
    Message.expires_at,
    Message.expired_at,
    Message.warned_at,
    Message.reminded_at,
    Message.envelope_sha256,
    func.length(Message.envelope).label("envelope_bytes"),
)


def _masked_detail(text: str) -> list[tuple[str, str]]:
    """An event's detail as (name, value) lines: replies left out, long digit runs masked."""
    try:
        detail = json.loads(text or "{}")
    except ValueError:
        return [("detail", _NUMBERS.sub(lambda m: mask(m.group()), text[:500]))]
    if not isinstance(detail, dict):
        detail = {"detail": detail}
    lines = []
    for name, value in detail.items():
        if name in HIDDEN_DETAIL:
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        lines.append((str(name), _NUMBERS.sub(lambda m: mask(m.group()), shown)[:2000]))
    return lines


def load_message(ctx: Ctx, message_id: str) -> dict[str, Any] | None:
    """A message's metadata, deliveries and events, or None (blocking)."""
    with unavailable_on_outage(), ctx.runtime.sessions() as session:
        row = session.execute(select(*MESSAGE_COLUMNS).where(Message.id == message_id)).first()
        if row is None:
            return None
        deliveries = [
            {
                "id": d.id,
                "provider": d.provider,
                "state": d.state,
                "priority": d.priority,
                "not_before": d.not_before,
                "created_at": d.created_at,
                "updated_at": d.updated_at,
            }
            for d in session.scalars(
                select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.provider)
            )
        ]
        events = [
            {
                "kind": e.kind,
                "occurred_at": e.occurred_at,
                "source": e.source,
                "provider": e.provider,
                "detail": _masked_detail(e.detail),
            }
            for e in session.scalars(select(Event).where(Event.message_id == message_id).order_by(Event.id))
        ]
    message = _listed(ctx, row)
    for name in row._fields:
        if name not in message and name != "recipient_id":  # the number itself never leaves this function
            message[name] = getattr(row, name)
    return {"message": message, "deliveries": deliveries, "events": events}


async def message_page(ctx: Ctx) -> Response:
    message_id = ctx.request.path_params["message_id"]
    if not HUB_MESSAGE_ID.fullmatch(message_id):  # not a hub id: never sent to the database
        raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, ctx.t("console.message.unknown"))
    loaded = await _run(load_message, ctx, message_id)
    if loaded is None:
        raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, ctx.t("console.message.unknown"))
    await _audit(ctx, "web-console-message", {"events": len(loaded["events"])}, message_id=message_id)
    kinds = {event["kind"] for event in loaded["events"]}
    return _render(
        ctx,
        "console/message.html",
        **loaded,
        journey=[(step, step in kinds) for step in JOURNEY],
        states=_state_labels(ctx),
    )


# -- dead letters --------------------------------------------------------------------------------------------


def _dead_letters(ctx: Ctx) -> DeadLetters:
    return DeadLetters(ctx.runtime.settings.broker_url)


def death_count(letter: DeadLetter) -> int | None:
    """How many times it died: the hub's attempts, else the broker's ``x-death`` counts."""
    if letter.attempts is not None:
        return letter.attempts
    deaths = letter.headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    counted = [d.get("count") for d in deaths if isinstance(d, Mapping)]
    return sum(int(c) for c in counted if isinstance(c, int)) or None


def read_dead_letters(ctx: Ctx) -> tuple[list[dict[str, Any]], int, str | None]:
    """The first dead letters, how many are ready in all, or why they cannot be read (blocking)."""
    reader = _dead_letters(ctx)
    try:
        letters = reader.list(limit=DEAD_LETTERS_SHOWN)
        total = reader.count()
    except ConfigError as bad:
        return [], 0, str(bad)
    shown = [
        {
            "id": letter.id,
            "queue": letter.queue,
            "reason": _NUMBERS.sub(lambda m: mask(m.group()), letter.reason),
            "deaths": death_count(letter),
            "dead_at": letter.dead_at,
            "message_id": letter.message_id,
            "hub_message_id": letter.hub_message_id,
            "size": letter.body_size,
        }
        for letter in letters
    ]
    return shown, max(total, len(shown)), None


async def dead_letters_page(ctx: Ctx, *, status: int = 200, outcome: dict[str, Any] | None = None) -> Response:
    letters, total, problem = await _run(read_dead_letters, ctx)
    params = ctx.request.query_params
    if outcome is None and "replayed" in params:
        outcome = {
            "replayed": _number(params.get("replayed"), 0, 0, 10**9),
            "kept": _number(params.get("kept"), 0, 0, 10**9),
        }
    return _render(
        ctx,
        "console/dead_letters.html",
        status=status,
        letters=letters,
        total=total,
        problem=problem,
        outcome=None if outcome is None else {"error": None, "why": None, "replayed": 0, "kept": 0, **outcome},
        memory=ctx.runtime.settings.broker_url.startswith("memory:"),
        limit=DEAD_LETTERS_SHOWN,
    )


async def dead_letters(ctx: Ctx) -> Response:
    return await dead_letters_page(ctx)


def _replay(ctx: Ctx, ident: str | None) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]]]:
    reader = _dead_letters(ctx)
    if ident is not None:
        return [reader.replay(ident)], []
    report = reader.replay_all()
    return report.replayed, report.skipped


async def replay(ctx: Ctx) -> Response:
    ident = field_text(ctx.form, "id", limit=64) or None
    everything = field_text(ctx.form, "all", limit=8) == "1"
    if (ident is None) == (not everything):
        return await dead_letters_page(ctx, status=400, outcome={"error": ctx.t("console.dlq.choose")})
    try:
        replayed, kept = await _run(_replay, ctx, ident)
    except (NotFound, Ambiguous) as missing:
        await _audit(ctx, "web-dlq-replay", {"replayed": [], "replayed_count": 0, "asked": ident, "found": False})
        log.info("web dlq replay: not found", extra={"event": "web-dlq-replay-missing"})
        return await dead_letters_page(
            ctx, status=404, outcome={"error": ctx.t("console.dlq.not_found"), "why": str(missing)}
        )
    except (NotReplayable, ConfigError) as refused:  # no queue named, or the queue is gone (Unroutable)
        await _audit(ctx, "web-dlq-replay", {"replayed": [], "replayed_count": 0, "kept": [ident], "kept_count": 1})
        return await dead_letters_page(
            ctx, status=409, outcome={"error": ctx.t("console.dlq.not_replayable"), "why": str(refused)}
        )
    await _audit(
        ctx,
        "web-dlq-replay",
        {
            "replayed": [letter.id for letter in replayed][:AUDITED_IDS],
            "replayed_count": len(replayed),
            "kept": [letter.id for letter, _ in kept][:AUDITED_IDS],
            "kept_count": len(kept),
            "queues": sorted({str(letter.queue) for letter in replayed}),
            "all": everything,
        },
    )
    return RedirectResponse(f"/web/console/dead-letters?replayed={len(replayed)}&kept={len(kept)}", status_code=303)


# -- routing -------------------------------------------------------------------------------------------------


def _match_text(ctx: Ctx, match: Match) -> list[str]:
    """A rule's ``match`` in words, one condition a line (none: every message)."""
    if match.catch_all:
        return [ctx.t("console.routing.every_message")]
    yes, no = ctx.t("console.yes"), ctx.t("console.no")
    lines = []
    if match.message_type:
        lines.append(f"{ctx.t('console.routing.message_type')}: {', '.join(match.message_type)}")
    if match.sender:
        names = ctx.runtime.directory.institutions
        senders = [f"{s} ({names[s].name})" if s in names else s for s in match.sender]
        lines.append(f"{ctx.t('console.routing.sender')}: {', '.join(senders)}")
    if match.recipient_kind is not None:
        lines.append(
            f"{ctx.t('console.routing.recipient_kind')}: {ctx.t(f'console.kind.{match.recipient_kind.value}')}"
        )
    if match.registered is not None:
        lines.append(f"{ctx.t('console.routing.registered')}: {yes if match.registered else no}")
    if match.priority:
        lines.append(f"{ctx.t('console.routing.priority')}: {', '.join(match.priority)}")
    if match.language:
        lines.append(f"{ctx.t('console.routing.language')}: {', '.join(match.language)}")
    return lines


def _rules_shown(ctx: Ctx, rules: RuleSet) -> list[dict[str, Any]]:
    return [
        {
            "name": rule.name,
            "line": rule.line,
            "match": _match_text(ctx, rule.match),
            "deliver": (ctx.t("console.routing.deliver_all") if rule.deliver is None else ", ".join(rule.deliver)),
            "require": ", ".join(sorted(c.value for c in rule.require)) or "-",
            "fallback": ctx.t(f"console.routing.fallback_{rule.fallback.value}"),
            "priority": rule.priority or ctx.t("console.routing.priority_own"),
            "hold": ctx.t("console.yes") if rule.hold else ctx.t("console.no"),
        }
        for rule in rules.rules
    ]


async def routing_page(
    ctx: Ctx, *, status: int = 200, tried: dict[str, Any] | None = None, envelope: str = "", at: str = ""
) -> Response:
    providers = await _run(_providers, ctx)
    routing = await _run(_routing, ctx, providers)  # read without the providers' names when those cannot be
    problems = (
        check(routing.value, providers.value) if routing.value is not None and providers.value is not None else []
    )
    return _render(
        ctx,
        "console/routing.html",
        status=status,
        providers=providers,
        routing=routing,
        rules=_rules_shown(ctx, routing.value) if routing.value is not None else [],
        problems=problems,
        tried=None if tried is None else {**TRIED, **tried},
        envelope=envelope,
        at=at,
        limit=ENVELOPE_LIMIT,
    )


async def routing(ctx: Ctx) -> Response:
    return await routing_page(ctx)


def _envelope_text(ctx: Ctx) -> str:
    value = ctx.form.get("envelope") if ctx.form is not None else None
    return value if isinstance(value, str) else ""


def _moment(text: str) -> datetime:
    """``--at`` of ``hub routes explain``: ISO 8601, UTC when no zone is given; ``ValueError`` otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if not 1970 <= moment.year <= 9000:  # the rules add and subtract months and years: no overflow
        raise ValueError(f"{text!r} is too far from now")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


TRIED: dict[str, Any] = {
    "refused": None,
    "violations": [],
    "explained": "",
    "outcome": None,
    "rule": None,
    "deliveries": [],
}
"""What a try shows, when it says nothing of its own."""


def try_envelope(ctx: Ctx, data: bytes, now: datetime, providers: ProviderCatalog, rules: RuleSet) -> dict[str, Any]:
    """What ``hub routes explain`` says of the envelope ``data``, or the refusal (blocking)."""
    from hub.envelope.validation import validate_envelope
    from hub.routing.explain import explain
    from hub.routing.rules import MessageFacts, decide
    from hub.safexml import parse

    try:
        envelope = validate_envelope(parse(data, limits=ParseLimits(max_bytes=ENVELOPE_LIMIT)), now=now)
    except Rejected as refused:
        return {"refused": refused.code.value, "violations": [str(v) for v in refused.violations[:50]]}
    except Exception as failed:  # anything else a hostile document provokes: refused, never a 500
        log.warning(
            "try an envelope: unreadable", extra={"event": "web-try-unreadable", "error": type(failed).__name__}
        )
        return {"refused": ErrorCode.XML_MALFORMED.value, "violations": [ctx.t("console.try.unreadable")]}
    facts = MessageFacts.of(envelope)
    with unavailable_on_outage():
        recipient = Directory(ctx.runtime.sessions).get(facts.recipient_kind, facts.recipient_id)
    decision: Decision = decide(facts, recipient, providers, rules, now)
    return {
        "explained": explain(facts, recipient, decision, now),
        "outcome": decision.outcome.value,
        "rule": decision.rule,
        "deliveries": [{"provider": d.provider, "until": d.not_before, "why": d.why_held} for d in decision.deliveries],
    }


async def routing_try(ctx: Ctx) -> Response:
    text = _envelope_text(ctx)
    at = field_text(ctx.form, "at", limit=40)
    data = text.encode("utf-8", "replace")
    shown = text if len(data) <= ENVELOPE_LIMIT else ""
    now = ctx.web.clock()
    if at:
        try:
            now = _moment(at)
        except ValueError:
            tried = {"refused": "AT_INVALID", "violations": [ctx.t("console.try.bad_at")]}
            return await routing_page(ctx, status=400, tried=tried, envelope=shown, at=at)
    if not data.strip():
        tried = {"refused": ErrorCode.XML_MALFORMED.value, "violations": [ctx.t("console.try.empty")]}
        return await routing_page(ctx, status=400, tried=tried, envelope=shown, at=at)
    providers = await _run(_providers, ctx)
    rules = await _run(_routing, ctx, providers) if providers.value is not None else None
    if rules is None or rules.value is None:
        tried = {"refused": "CONFIG", "violations": [ctx.t("console.try.no_rules")]}
        return await routing_page(ctx, status=409, tried=tried, envelope=shown, at=at)
    tried = await _run(try_envelope, ctx, data, now, providers.value, rules.value)
    detail: dict[str, Any] = {"bytes": len(data)}
    if "refused" in tried:
        detail["refused"] = tried["refused"]
    else:
        detail.update(
            outcome=tried["outcome"], rule=tried["rule"], providers=[d["provider"] for d in tried["deliveries"]]
        )
    await _audit(ctx, "web-routing-try", detail)
    return await routing_page(ctx, status=422 if "refused" in tried else 200, tried=tried, envelope=shown, at=at)


def _try_form_bytes(web: Web) -> int:
    # Each byte of the UTF-8 text may take three in the form (%XX).
    return 3 * ENVELOPE_LIMIT + 16 * 1024


# -- providers -----------------------------------------------------------------------------------------------


def deliveries_by_provider(ctx: Ctx) -> dict[str, dict[str, int]]:
    """Deliveries by provider and state (blocking)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with unavailable_on_outage(), ctx.runtime.sessions() as session:
        for provider, state, n in session.execute(
            select(Delivery.provider, Delivery.state, func.count()).group_by(Delivery.provider, Delivery.state)
        ):
            out[provider][state] = int(n)
    return dict(out)


async def providers_page(ctx: Ctx) -> Response:
    now = ctx.web.clock()
    loaded = await _run(_providers, ctx)
    counts = await _run(deliveries_by_provider, ctx)
    queues = await _queues(ctx)
    catalog: ProviderCatalog | None = loaded.value
    shown = []
    for provider in catalog.providers.values() if catalog is not None else ():
        resting = provider.resting_until(now)
        shown.append(
            {
                "id": provider.id,
                "name": provider.name,
                "kinds": [ctx.t(f"console.kind.{k.value}") for k in sorted(provider.kinds)],
                "capabilities": sorted(c.value for c in provider.capabilities),
                "universal": provider.universal,
                "channel": provider.channel,
                "url": provider.url,
                "queue": f"provider.{provider.id}",
                "windows": [
                    {"start": w.start, "end": w.end, "now": w.covers(now), "past": w.end <= now}
                    for w in sorted(provider.maintenance, key=lambda w: w.start)
                ],
                "resting_until": resting,
            }
        )
    known = {p["id"] for p in shown}
    used_states = sorted({state for by_state in counts.values() for state in by_state}, key=_state_rank)
    table = [
        {
            "provider": provider,
            "configured": provider in known,
            "counts": counts.get(provider, {}),
            "total": sum(counts.get(provider, {}).values()),
        }
        for provider in [*(p["id"] for p in shown), *sorted(set(counts) - known)]
    ]
    return _render(
        ctx,
        "console/providers.html",
        loaded=loaded,
        providers=shown,
        table=table,
        used_states=used_states,
        queues=queues,
        states=_state_labels(ctx),
    )


def _state_rank(state: str) -> tuple[int, str]:
    order = [s.value for s in DeliveryState]
    return (order.index(state), state) if state in order else (len(order), state)


# -- statistics ----------------------------------------------------------------------------------------------


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str
    colour: str


@dataclass
class Chart:
    """A grouped bar chart, laid out for an inline SVG (the template draws it)."""

    ident: str
    title: str
    desc: str
    width: int
    height: int
    bars: list[Bar]
    groups: list[tuple[str, float]]
    ticks: list[tuple[int, float]]
    legend: list[tuple[str, str, float]]
    left: int
    right: int
    base: float
    slanted: bool


def _step(peak: int) -> int:
    """A round tick step that makes at most five ticks up to ``peak``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if peak <= 5 * step * factor:
                return step * factor
        step *= 10


def bar_chart(
    ident: str, title: str, desc: str, groups: list[tuple[str, Mapping[str, int]]], series: list[tuple[str, str, str]]
) -> Chart:
    """Bars of each series (key, label, colour) side by side per group; the numbers go in a table beside it."""
    char_w, legend_w = 7.0, 120.0  # about, at 12 px
    count = max(len(groups), 1)
    group_w = max(48.0, min(200.0, 900.0 / count))
    longest = max([0, *(len(name) for name, _ in groups)]) * char_w
    slanted = longest > group_w * 0.95  # names that would overlap their neighbours are written at a slant
    reach = longest * 0.87 if slanted else longest / 2  # how far left of its group's centre a name goes
    left = int(max(56.0, reach - group_w * 0.5 + 8))
    right, top, legend_h, plot_h = 16, 16, 28, 200
    bottom = int(longest * 0.5 + 28) if slanted else 40
    width = int(max(left + right + group_w * count, left + legend_w * len(series) + right))
    height = top + legend_h + plot_h + bottom
    base = float(top + legend_h + plot_h)
    peak = max([0, *(values.get(key, 0) for _, values in groups for key, _, _ in series)])
    step = _step(max(peak, 1))
    ceiling = step * max(1, -(-max(peak, 1) // step))
    scale = plot_h / ceiling
    bar_w = (group_w * 0.8) / len(series)
    bars, centres = [], []
    for index, (name, values) in enumerate(groups):
        start = left + index * group_w + group_w * 0.1
        centres.append((name, start + group_w * 0.4))
        for position, (key, label, colour) in enumerate(series):
            value = int(values.get(key, 0))
            h = value * scale
            bars.append(
                Bar(start + position * bar_w, base - h, bar_w - 1, h, value, f"{name}, {label}: {value}", colour)
            )
    ticks = [(value, base - value * scale) for value in range(0, ceiling + 1, step)]
    legend = [(label, colour, left + i * legend_w) for i, (_, label, colour) in enumerate(series)]
    return Chart(ident, title, desc, width, height, bars, centres, ticks, legend, left, width - right, base, slanted)


def _paper(catalog: ProviderCatalog | None) -> frozenset[str]:
    if catalog is None:
        return frozenset()
    return frozenset(p.id for p in catalog.providers.values() if Capability.PAPER in p.capabilities)


def _month(ctx: Ctx) -> tuple[Month | None, str]:
    given = (ctx.request.query_params.get("month") or "").strip()[:20]
    if not given:
        return Month.of(ctx.web.clock()).previous(), ""
    try:
        return Month.parse(given), given
    except ValueError:
        return None, given


def read_stats(ctx: Ctx, month: Month, paper: Iterable[str]) -> MonthlyStats:
    with unavailable_on_outage():
        return monthly_stats(ctx.runtime.engine, month, paper_providers=frozenset(paper))


def _series(ctx: Ctx) -> list[tuple[str, str, str]]:
    return [(key, ctx.t(f"console.stats.{key}"), colour) for key, colour in CHART_SERIES]


def _institution_view(ctx: Ctx, institution: InstitutionStats, month: Month, index: int) -> dict[str, Any]:
    name = _institution_name(ctx, institution.institution_id)
    types = [(kind, f) for kind, f in institution.by_type.items() if f.sent]
    chart = bar_chart(
        f"chart-{index}",
        ctx.t("console.stats.chart_title", institution=name, month=str(month)),
        ctx.t("console.stats.chart_desc", institution=name, month=str(month), types=len(types)),
        [(kind, f.as_dict()) for kind, f in types],
        _series(ctx),
    )

    def cells(f: Figures) -> dict[str, Any]:
        return {
            **f.as_dict(),
            "open_rate": _percent(ctx.lang, f.open_rate),
            "median": duration(f.median_open_seconds),
        }

    return {
        "id": institution.institution_id,
        "name": name,
        "chart": chart,
        "types": [(kind, cells(f)) for kind, f in institution.by_type.items()],
        "totals": cells(institution.totals),
        "providers": [
            (
                provider,
                {
                    **p.as_dict(),
                    "open_rate": _percent(ctx.lang, p.open_rate),
                    "median": duration(p.median_open_seconds),
                },
            )
            for provider, p in institution.by_provider.items()
        ],
        "refusals": list(institution.refusals_by_code.items()),
    }


def _institution_name(ctx: Ctx, ident: str) -> str:
    institution = ctx.runtime.directory.institutions.get(ident)
    return f"{ident} {institution.name}" if institution is not None else ident


async def stats_page(ctx: Ctx) -> Response:
    month, given = _month(ctx)
    if month is None:
        return _render(
            ctx,
            "console/stats.html",
            status=400,
            month=None,
            given=given,
            stats=None,
            overview=None,
            institutions=[],
            warning=None,
        )
    loaded = await _run(_providers, ctx)
    stats = await _run(read_stats, ctx, month, _paper(loaded.value))
    overview = bar_chart(
        "chart-overview",
        ctx.t("console.stats.overview_title", month=str(month)),
        ctx.t("console.stats.overview_desc", month=str(month), institutions=len(stats.institutions)),
        [(i.institution_id, i.totals.as_dict()) for i in stats.institutions],
        _series(ctx),
    )
    warning = None
    if loaded.problem is not None or loaded.missing:
        warning = ctx.t("console.stats.no_paper")
    return _render(
        ctx,
        "console/stats.html",
        month=month,
        given=str(month),
        previous=str(month.previous()),
        following=str(month.next()),
        stats=stats,
        overview=overview if stats.institutions else None,
        institutions=[_institution_view(ctx, i, month, n) for n, i in enumerate(stats.institutions)],
        warning=warning,
    )


async def stats_csv(ctx: Ctx) -> Response:
    month, given = _month(ctx)
    if month is None:
        raise Rejected(ErrorCode.SCHEMA_INVALID, ctx.t("console.stats.bad_month", month=given))
    loaded = await _run(_providers, ctx)
    if loaded.problem is not None:  # as `hub stats` does: figures without the paper providers would differ
        raise Rejected(ErrorCode.SCHEMA_INVALID, loaded.problem)
    stats = await _run(read_stats, ctx, month, _paper(loaded.value))
    text = to_csv(stats.institutions)
    await _audit(
        ctx,
        "web-stats-csv",
        {"month": str(month), "institutions": len(stats.institutions), "rows": text.count("\n") - 1},
    )
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="hub-stats-{month}.csv"'},
    )


# -- routes --------------------------------------------------------------------------------------------------


def _operator(handler: Callable[[Ctx], Any], **options: Any) -> Any:
    return page(handler, role=OPERATOR, **options)


def routes() -> list[BaseRoute]:
    return [
        Route("/console", _operator(dashboard), methods=["GET"]),
        Route("/console/live.json", _operator(live), methods=["GET"]),
        Route("/console/messages", _operator(messages), methods=["GET"]),
        Route("/console/messages/{message_id}", _operator(message_page), methods=["GET"]),
        Route("/console/dead-letters", _operator(dead_letters), methods=["GET"]),
        Route("/console/dead-letters/replay", _operator(replay), methods=["POST"]),
        Route("/console/routing", _operator(routing), methods=["GET"]),
        Route("/console/routing/try", _operator(routing_try, form_bytes=_try_form_bytes), methods=["POST"]),
        Route("/console/providers", _operator(providers_page), methods=["GET"]),
        Route("/console/stats", _operator(stats_page), methods=["GET"]),
        Route("/console/stats.csv", _operator(stats_csv), methods=["GET"]),
    ]
