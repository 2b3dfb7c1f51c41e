"""Messages (/web/console/messages): the search, newest first (never by national number; recipients'
numbers shown masked), and one message (/web/console/messages/{id}): metadata, deliveries, events.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.errors import ErrorCode, Rejected
from hub.inbound.http import HUB_MESSAGE_ID
from hub.outbound.states import MessageState
from hub.routing.directory import mask
from hub.store.db import unavailable_on_outage
from hub.store.models import Delivery, Event, Message
from hub.web.app import Ctx, _run
from hub.web.console.common import _NUMBERS, _number, _operator, _render, _state_labels

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_PAGE = 10_000
JOURNEY = ("accepted", "routed", "delivered", "opened", "replied")
HIDDEN_DETAIL = frozenset({"reply"})
"""Event detail members never shown: a recipient's reply is theirs, not the operator's."""


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
        await ctx.audit("web-console-search", detail, message_id=search.values["id"] or None)
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
    await ctx.audit("web-console-message", {"events": len(loaded["events"])}, message_id=message_id)
    kinds = {event["kind"] for event in loaded["events"]}
    return _render(
        ctx,
        "console/message.html",
        **loaded,
        journey=[(step, step in kinds) for step in JOURNEY],
        states=_state_labels(ctx),
    )


# -- routes --------------------------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    return [
        Route("/console/messages", _operator(messages), methods=["GET"]),
        Route("/console/messages/{message_id}", _operator(message_page), methods=["GET"]),
    ]
