"""The dashboard (/web/console): events of the last minute and hour, the outbox backlog, deliveries by
state, RabbitMQ queue depths; its figures refresh from /web/console/live.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub.lifecycle.stats_cli import duration
from hub.store.db import unavailable_on_outage
from hub.store.models import Delivery, Event, OutboxEntry
from hub.web.app import Ctx, _run
from hub.web.console.common import Queues, _operator, _queues, _render, _state_labels, _when

THROUGHPUT_KINDS = ("accepted", "routed", "delivered", "opened")
EVENT_SLACK = timedelta(minutes=10)
"""How far out of time order events may be written (a late acknowledgement): see ``_first_event_id``."""


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


# -- routes --------------------------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    return [
        Route("/console", _operator(dashboard), methods=["GET"]),
        Route("/console/live.json", _operator(live), methods=["GET"]),
    ]
