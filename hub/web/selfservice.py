"""Self-service sending for institutions' users: write, preview, send; follow each message; download proofs.

/web/compose               the form (recipient with live check digits and "has digital post?", type,
                           subject and body per language, a PDF, registered mail, reply options,
                           payment, expiry); POST: the hub signs it with the institution's self-service
                           key and checks it as the intake would, then shows the preview
/web/drafts/{id}           the preview, as the recipient will see it; POST .../send submits it through
                           the intake (the same pipeline as every door); POST .../discard drops it
/web/messages              the institution's messages, newest first
/web/messages/{id}         one message's journey (accepted, routed, delivered, opened, replied), its
                           replies and, for registered mail, the hub-signed proofs to download
/web/api/recipient         POST {kind, id}: are the check digits right, does the person read digital post
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hub.envelope import model as m
from hub.envelope.identifiers import is_valid_cbe, is_valid_ssin
from hub.envelope.reader import read_envelope
from hub.errors import ErrorCode, Rejected
from hub.inbound.http import HUB_MESSAGE_ID
from hub.outbound.acks import signed_acknowledgement
from hub.outbound.feed import PROOF_EVENTS, acknowledgement, event_detail, feed_item
from hub.routing.directory import Directory, mask
from hub.routing.recipients import RecipientKind
from hub.safexml import ParseLimits, parse
from hub.signing.signer import Signer
from hub.store.models import Delivery, Event, Message, WebDraft
from hub.web.app import Ctx, _run, page
from hub.web.compose import LANGS, FormErrors, Upload, compose, default_expiry
from hub.web.sending import new_sender_message_id, self_service_of, sign_for

PAGE_SIZE = 50
JOURNEY = ("accepted", "routed", "delivered", "opened", "replied")
FINAL_STATES = frozenset({"opened", "replied", "failed", "undeliverable", "expired", "rejected", "printed"})
FORM_FIELDS = (
    *("recipient_kind", "recipient_id", "message_type", "registered", "expires_on", "your_reference"),
    *("reply", "reply_choices", "reply_deadline"),
    *("payment_iban", "payment_amount", "payment_due_date", "payment_reference"),
    *(f"{part}_{lang}" for lang in LANGS for part in ("subject", "body")),
)


def _form_bytes(web: Any) -> int:
    return int(web.settings.web_max_pdf_bytes) + 256 * 1024


def _institution_id(ctx: Ctx) -> str:
    assert ctx.principal.institution_id is not None
    return ctx.principal.institution_id


# -- compose and preview -----------------------------------------------------------------------------


async def compose_form(ctx: Ctx) -> Response:
    institution, _ = self_service_of(ctx.runtime, ctx.principal)
    return _compose_page(ctx, institution, values={"recipient_kind": "citizen", "reply": "none"}, errors=None)


def _compose_page(
    ctx: Ctx, institution: Any, *, values: dict[str, str], errors: FormErrors | None, refusal: Rejected | None = None
) -> Response:
    now = ctx.web.clock()
    types = [
        {"id": name, "default_expiry": default_expiry(now, policy.default_retention_months).isoformat()}
        for name, policy in sorted(institution.message_types.items())
    ]
    messages = {name: ctx.t(key, **vals) for name, (key, vals) in (errors.errors.items() if errors else [])}
    status = 422 if errors or refusal else 200
    return ctx.render(
        "selfservice/compose.html",
        status=status,
        institution=institution,
        types=types,
        values=values,
        errors=messages,
        refusal=refusal,
        langs=LANGS,
        max_pdf_mb=f"{ctx.web.settings.web_max_pdf_bytes / (1024 * 1024):.3g}",
    )


async def compose_submit(ctx: Ctx) -> Response:
    institution, service = self_service_of(ctx.runtime, ctx.principal)
    assert ctx.form is not None and ctx.session is not None
    values = {
        name: str(ctx.form.get(name) or "")[:25_000] for name in FORM_FIELDS if isinstance(ctx.form.get(name), str)
    }
    upload = ctx.form.get("document")
    document = None
    if isinstance(upload, UploadFile) and upload.filename:
        document = Upload(upload.filename, await upload.read())
    now = ctx.web.clock()
    try:
        envelope = compose(
            values,
            document,
            institution=institution,
            application=service.application,
            sender_message_id=new_sender_message_id(),
            now=now,
            max_pdf_bytes=ctx.web.settings.web_max_pdf_bytes,
        )
    except FormErrors as errors:
        return _compose_page(ctx, institution, values=values, errors=errors)
    data = sign_for(service, envelope)
    try:
        await _run(ctx.runtime.intake.open, data, now)  # what the intake will say, said now
    except Rejected as refused:
        return _compose_page(ctx, institution, values=values, errors=None, refusal=refused)
    draft_id = str(uuid.uuid4())
    session_key = ctx.session.key

    def store() -> None:
        with ctx.runtime.sessions.begin() as session:
            session.add(
                WebDraft(
                    id=draft_id,
                    session_sha256=session_key,
                    institution_id=institution.id,
                    envelope=data,
                    created_at=now,
                )
            )

    await _run(store)
    await ctx.audit("web-previewed", {"draft": draft_id, "message_type": envelope.header.message_type})
    return RedirectResponse(f"/web/drafts/{draft_id}", status_code=303)


def _draft(ctx: Ctx) -> WebDraft:
    draft_id = ctx.request.path_params["draft_id"]
    assert ctx.session is not None
    with ctx.runtime.sessions() as session:
        draft = session.get(WebDraft, draft_id) if _is_uuid(draft_id) else None
        if draft is None or draft.session_sha256 != ctx.session.key:
            raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, ctx.t("preview.gone"))
        session.expunge(draft)
        return draft


def _is_uuid(value: str) -> bool:
    return bool(HUB_MESSAGE_ID.fullmatch(value))


def _read(data: bytes) -> m.Envelope:
    return read_envelope(parse(data, limits=ParseLimits(max_bytes=len(data) + 1)))


@dataclass(frozen=True)
class Reach:
    """What the directory says of the recipient now: digital post with these providers, or paper."""

    digital: bool
    providers: tuple[str, ...]


def _reach(ctx: Ctx, envelope: m.Envelope) -> Reach:
    header = envelope.header
    recipient = Directory(ctx.runtime.sessions).get(
        RecipientKind(header.recipient.ebox_type.value), header.recipient.id
    )
    if recipient is None or not recipient.digital_at(ctx.web.clock()):
        return Reach(False, ())
    return Reach(True, tuple(sorted(recipient.providers)))


async def preview(ctx: Ctx) -> Response:
    draft = await _run(_draft, ctx)
    envelope = _read(draft.envelope)
    reach = await _run(_reach, ctx, envelope)
    return ctx.render(
        "selfservice/preview.html",
        draft=draft,
        envelope=envelope,
        reach=reach,
        recipient=mask(envelope.header.recipient.id),
        size=len(draft.envelope),
    )


def _drop_draft(ctx: Ctx, draft_id: str) -> None:
    """The draft gone (sent or discarded); a second drop of the same draft does nothing."""
    with ctx.runtime.sessions.begin() as session:
        session.execute(delete(WebDraft).where(WebDraft.id == draft_id))


async def send(ctx: Ctx) -> Response:
    draft = await _run(_draft, ctx)
    receipt = await _run(lambda: ctx.runtime.intake.submit(draft.envelope, door="web"))
    await _run(_drop_draft, ctx, draft.id)
    await ctx.audit("web-sent", {"draft": draft.id, "created": receipt.created}, message_id=receipt.message_id)
    return RedirectResponse(f"/web/messages/{receipt.message_id}?sent=1", status_code=303)


async def discard(ctx: Ctx) -> Response:
    draft = await _run(_draft, ctx)
    await _run(_drop_draft, ctx, draft.id)
    await ctx.audit("web-discarded", {"draft": draft.id})
    return RedirectResponse("/web/compose", status_code=303)


# -- the institution's messages -------------------------------------------------------------------


async def messages(ctx: Ctx) -> Response:
    institution = _institution_id(ctx)
    try:
        number = max(1, min(int(ctx.request.query_params.get("page", "1")), 10_000))
    except ValueError:
        number = 1

    def load() -> tuple[list[Message], int]:
        with ctx.runtime.sessions() as session:
            mine = Message.institution_id == institution
            total = int(session.scalar(select(func.count()).select_from(Message).where(mine)) or 0)
            rows = list(
                session.scalars(
                    select(Message)
                    .where(mine)
                    .order_by(Message.accepted_at.desc(), Message.id)
                    .limit(PAGE_SIZE)
                    .offset((number - 1) * PAGE_SIZE)
                )
            )
            for row in rows:
                session.expunge(row)
            return rows, total

    rows, total = await _run(load)
    return ctx.render(
        "selfservice/messages.html",
        rows=[{"message": row, "recipient": mask(row.recipient_id)} for row in rows],
        total=total,
        page=number,
        pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
    )


def _own_message(ctx: Ctx) -> tuple[Message, list[Event], list[Delivery]]:
    message_id = ctx.request.path_params["message_id"]
    if not HUB_MESSAGE_ID.fullmatch(message_id):
        raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, ctx.t("message.unknown"))
    institution = _institution_id(ctx)
    with ctx.runtime.sessions() as session:
        message = session.get(Message, message_id)
        if message is None or message.institution_id != institution:  # another's: as if it did not exist
            raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, ctx.t("message.unknown"))
        events = list(session.scalars(select(Event).where(Event.message_id == message_id).order_by(Event.id)))
        deliveries = list(
            session.scalars(select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.provider))
        )
        for row in (message, *events, *deliveries):
            session.expunge(row)
        return message, events, deliveries


def _reply_of(event: Event) -> dict[str, Any] | None:
    reply = event_detail(event.detail).get("reply")
    return reply if isinstance(reply, dict) else None


async def message_page(ctx: Ctx) -> Response:
    message, events, deliveries = await _run(_own_message, ctx)
    envelope = None
    if message.envelope is not None:
        try:
            envelope = _read(message.envelope)
        except Rejected:
            envelope = None
    kinds = {event.kind for event in events}
    proofs = [event for event in events if message.registered and event.kind in PROOF_EVENTS and event.provider]
    replies = [(event, reply) for event in events if event.kind == "replied" and (reply := _reply_of(event))]
    choices = {}
    if envelope is not None and envelope.content.reply_options is not None:
        choices = {c.id: (c.labels[0].value if c.labels else c.id) for c in envelope.content.reply_options.choices}
    return ctx.render(
        "selfservice/message.html",
        message=message,
        envelope=envelope,
        recipient=mask(message.recipient_id),
        events=events,
        deliveries=deliveries,
        journey=[(step, step in kinds or (step == "accepted")) for step in JOURNEY],
        proofs=proofs,
        replies=replies,
        choices=choices,
        moving=message.state not in FINAL_STATES,
        sent=ctx.request.query_params.get("sent") == "1",
    )


async def proof(ctx: Ctx) -> Response:
    message, events, _ = await _run(_own_message, ctx)
    wanted = ctx.request.path_params["event_id"]
    event = next((e for e in events if str(e.id) == wanted), None)
    if event is None or not message.registered or event.kind not in PROOF_EVENTS or not event.provider:
        raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, ctx.t("message.no_proof"))
    item = feed_item(event, message, message_id=message.id)
    document = signed_acknowledgement(Signer(ctx.runtime.hub_keys), acknowledgement(item))
    await ctx.audit("web-proof", {"event": event.kind, "provider": event.provider}, message_id=message.id)
    name = f"proof-{event.kind}-{message.id}-{event.provider}.xml"
    return Response(
        document,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def recipient_check(ctx: Ctx) -> Response:
    """Check digits, and whether the person reads digital post (the form's live answer)."""
    assert ctx.form is not None
    kind = str(ctx.form.get("kind") or "")
    ident = "".join(ch for ch in str(ctx.form.get("id") or "")[:32] if ch.isdigit())
    valid = is_valid_ssin(ident) if kind == "citizen" else is_valid_cbe(ident) if kind == "enterprise" else False
    if not valid:
        return JSONResponse({"valid": False, "digital": None})
    now: datetime = ctx.web.clock()
    recipient = await _run(Directory(ctx.runtime.sessions).get, RecipientKind(kind), ident)
    digital = recipient is not None and recipient.digital_at(now)
    return JSONResponse({"valid": True, "digital": digital})


def routes() -> list[BaseRoute]:
    role = "institution"
    return [
        Route("/compose", page(compose_form, role=role), methods=["GET"]),
        Route("/compose", page(compose_submit, role=role, form_bytes=_form_bytes, max_files=1), methods=["POST"]),
        Route("/drafts/{draft_id}", page(preview, role=role), methods=["GET"]),
        Route("/drafts/{draft_id}/send", page(send, role=role), methods=["POST"]),
        Route("/drafts/{draft_id}/discard", page(discard, role=role), methods=["POST"]),
        Route("/messages", page(messages, role=role), methods=["GET"]),
        Route("/messages/{message_id}", page(message_page, role=role), methods=["GET"]),
        Route("/messages/{message_id}/proofs/{event_id}", page(proof, role=role), methods=["GET"]),
        Route("/api/recipient", page(recipient_check, role=role), methods=["POST"]),
    ]
